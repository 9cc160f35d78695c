"""s2s.models"""
