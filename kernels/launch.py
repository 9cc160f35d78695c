"""The one place the launchers start a Triton kernel, so that a launch can be recorded instead
of run: `recording()` collects what the dispatch would launch (kernel, arguments, compile-time
options) without a GPU, and kernels.compile_check compiles exactly those ahead of time; and
counted as it runs: `counting()` tells a test or a benchmark that the kernels did run (a
comparison of kernels on against off proves nothing when neither launched one).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Launch:
    """One kernel launch as the launcher asked for it: fn[grid](*args, **kwargs) (kwargs hold
    the constexprs and num_warps)."""

    fn: Any
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)


_recorder: ContextVar[list[Launch] | None] = ContextVar("kernels_recorder", default=None)
_counters: ContextVar[tuple[Counter[str], ...]] = ContextVar("kernels_counters", default=())


def kernel_name(fn: Any) -> str:
    """The Python name of a Triton kernel (`_attend_partial`), compiled or interpreted."""
    return getattr(fn, "fn", fn).__name__


def launch(fn: Any, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """fn[grid](*args, **kwargs), or, inside `recording()`, only note the launch: outputs are
    then left as allocated (callers allocate them with `empty`)."""
    rec = _recorder.get()
    if rec is not None:
        rec.append(Launch(fn, args, kwargs))
        return
    for counter in _counters.get():
        counter[kernel_name(fn)] += 1
    fn[grid](*args, **kwargs)


@contextlib.contextmanager
def recording() -> Iterator[list[Launch]]:
    """Within the block, launches are collected into the yielded list and nothing runs (any
    device: tensors on the CPU serve, the launch is never made)."""
    rec: list[Launch] = []
    token = _recorder.set(rec)
    try:
        yield rec
    finally:
        _recorder.reset(token)


@contextlib.contextmanager
def counting() -> Iterator[Counter[str]]:
    """Within the block, every launch that runs is counted by kernel name into the yielded
    Counter (blocks nest; a recorded launch does not run and is not counted)."""
    counter: Counter[str] = Counter()
    token = _counters.set((*_counters.get(), counter))
    try:
        yield counter
    finally:
        _counters.reset(token)
