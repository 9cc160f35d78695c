"""s2s.data"""
