"""s2s.bench"""
