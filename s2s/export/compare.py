"""The exported decoder against the PyTorch one, step by step through a whole beam search: used
by the tests and by `python -m s2s.bench.onnx_decode` on trained models."""

from __future__ import annotations

import torch
from torch import Tensor


class Lockstep:
    """A decoder for s2s.decode.beam_search that runs `reference` (a Decoder) and `other` (an
    OnnxDecoder) side by side, each over its own caches, and records how far apart each step's
    log-probabilities and just-written cache slots are. The search follows the reference's
    scores, so no rounding difference decides which paths get compared.

    max_dev: the largest |other - reference| / max(|reference|, 1) seen (relative above 1,
    absolute below), over log-probabilities and slot contents; steps: steps compared."""

    def __init__(self, reference, other) -> None:
        self.reference, self.other = reference, other
        self.steps, self.max_dev = 0, 0.0

    def init_state(self, *args, **kw) -> _Pair:
        return _Pair(self.reference.init_state(*args, **kw), self.other.init_state(*args, **kw))

    def _note(self, got: Tensor, want: Tensor) -> None:
        dev = (got.double() - want.double()).abs() / want.double().abs().clamp(min=1.0)
        self.max_dev = max(self.max_dev, float(dev.max()))

    @torch.no_grad()
    def step(self, tokens: Tensor, state: _Pair) -> Tensor:
        want = self.reference.step(tokens, state.a).float().log_softmax(-1)
        self._note(self.other.step(tokens, state.b), want)
        for ca, cb in zip(state.a.caches, state.b.caches):
            if not torch.equal(ca.length, cb.length):
                raise AssertionError("the two caches hold different token counts")
            slot = (ca.length - 1) // ca.stride  # the slot each row just wrote
            for name in ca.slot_shapes:
                self._note(cb.read(name, slot), ca.read(name, slot))
        self.steps += 1
        return want


class _Pair:
    """Two DecoderStates moved together."""

    def __init__(self, a, b) -> None:
        self.a, self.b = a, b

    def reorder(self, index: Tensor) -> None:
        self.a.reorder(index)
        self.b.reorder(index)

    def peak_cache_bytes(self) -> int:
        return self.a.peak_cache_bytes()
