"""s2s.decode"""
