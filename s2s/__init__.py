"""s2s: speech and sequence-to-sequence toolkit with compressed-cache decoding."""

from s2s._stack import check_torch_stack

__version__ = "0.1.0"

check_torch_stack()
