"""s2s.synth"""
