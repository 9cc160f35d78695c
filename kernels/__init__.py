"""Triton kernels for compressed-cache decoding (s2s's own package, not PyPI's `kernels`).

Each op lives in `kernels/<op>.py` with its launcher and public function; the PyTorch reference
that doubles as the CPU path lives in `s2s.attention.ops`.
"""
