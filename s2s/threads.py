"""torch's intra-op thread count for one block of work, restored afterwards.

Whatever sets it may run inside another program (the tests, a recipe stage, a notebook), which
must find the count as it left it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch.set_num_threads(n) inside the block; the previous count again after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
