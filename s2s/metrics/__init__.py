"""s2s.metrics"""
