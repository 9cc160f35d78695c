"""s2s.train"""
