"""s2s: speech and sequence-to-sequence toolkit with compressed-cache decoding."""

__version__ = "0.1.0"
