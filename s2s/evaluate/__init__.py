"""s2s.evaluate"""
