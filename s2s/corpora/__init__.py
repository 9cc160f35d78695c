"""Corpus preparers: corpus layout (or an embedded generator) -> Kaldi-style data dirs."""
