"""CPU threads: torch's intra-op thread count for one block of work, restored afterwards
(whatever sets it may run inside another program, the tests, a recipe stage, a notebook, which
must find the count as it left it), and the cores shared out among processes side by side."""

from __future__ import annotations

import os
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


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cores: int) -> int:
    """CPU threads for each of `jobs` processes side by side on `cores` cores: the cores shared
    out, at least one each (3 jobs on 2 cores: one thread each, the OS time-slicing them)."""
    return max(1, cores // jobs)
