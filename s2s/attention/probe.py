"""Asking attention modules what they computed: a probe that the modules report into.

Inside ``with probe() as found:`` every attention module that runs a parallel forward reports
what an inspection draws, keyed by the module itself:

- a decoder self-attention (base.DecoderSelfAttention): ``"attention"``, its probabilities
  (B, H, L, T) over the key positions (0 where the mask hides a key);
- MTLA with stride > 1 (mtla.py): also ``"merge_weight"``, the hyper-network's weights (B, T);
- cross-attention (s2s.models.cross_attention): ``"attention"`` (B, H, L, S) over the frames.

``found.of(module)`` then returns that module's reports. Outside a probe the modules compute
nothing extra; inside, they compute the extra tensors beside their output, which stays the same
(tests/test_inspect.py). Who owns the modules turns the reports into something a person reads
(s2s.models.inspection: `Seq2SeqModel.inspect`).

The probe is a context variable (each thread or task sees its own), never an attribute set on a
module. torch.compile does not trace a context variable, so a graph being compiled sees no
probe: training's compiled layers never break their graph on it, and `Seq2SeqModel.inspect`
runs its forward eagerly (torch.compiler.set_stance("force_eager")), where the probe is seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import Tensor, nn


class AttentionProbe:
    """The reports of one probed forward: per module, name -> tensor (detached). A module that
    runs twice under one probe keeps its last report."""

    def __init__(self) -> None:
        self._reports: dict[nn.Module, dict[str, Tensor]] = {}

    def put(self, module: nn.Module, **values: Tensor) -> None:
        self._reports.setdefault(module, {}).update({k: v.detach() for k, v in values.items()})

    def of(self, module: nn.Module) -> dict[str, Tensor]:
        """What `module` reported ({} when it reported nothing)."""
        return dict(self._reports.get(module, {}))

    def __len__(self) -> int:
        return len(self._reports)


_ACTIVE: ContextVar[AttentionProbe | None] = ContextVar("s2s_attention_probe", default=None)


@contextlib.contextmanager
def probe() -> Iterator[AttentionProbe]:
    """Collect the reports of every attention module that runs inside the block."""
    found = AttentionProbe()
    token = _ACTIVE.set(found)
    try:
        yield found
    finally:
        _ACTIVE.reset(token)


def probing() -> bool:
    """Whether a probe listens (never inside a graph torch.compile traces). A module computes
    its extra tensors only when this is True."""
    if torch.compiler.is_compiling():
        return False
    return _ACTIVE.get() is not None


def report(module: nn.Module, **values: Tensor) -> None:
    """`module` reports named tensors to the listening probe (nothing when none listens)."""
    found = None if torch.compiler.is_compiling() else _ACTIVE.get()
    if found is not None:
        found.put(module, **values)
