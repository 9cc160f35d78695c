"""Embedded spoken-phrases corpus: an English/German phrase grammar spoken by espeak-ng."""
