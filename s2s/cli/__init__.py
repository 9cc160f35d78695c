"""s2s.cli"""
