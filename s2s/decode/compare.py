"""Two decoders side by side, step by step through a whole beam search: the exported (ONNX)
decoder against the PyTorch one, in the tests and in `python -m s2s.evaluate.onnx_decode` on
trained models. A decoder scorer, so it lives beside the scorers: export never imports decode."""

from __future__ import annotations

import torch
from torch import Tensor

from s2s.decode.scorers import DecoderScorer, SearchInit


class Lockstep(DecoderScorer):
    """A decoder scorer (s2s.decode.scorers) that runs `reference` (a Decoder) and `other` (an
    OnnxDecoder) side by side, each over its own caches, and records how far apart each step's
    log-probabilities and just-written cache slots are. The search follows the reference's
    scores, so no rounding difference decides which paths get compared.

    max_dev: the largest |other - reference| / max(|reference|, 1) seen (relative above 1,
    absolute below), over log-probabilities and slot contents; steps: steps compared."""

    def __init__(self, reference, other) -> None:
        super().__init__(reference)
        self.other = DecoderScorer(other)
        self.steps, self.max_dev = 0, 0.0

    def init_state(self, search: SearchInit) -> tuple:
        return super().init_state(search), self.other.init_state(search)

    def _note(self, got: Tensor, want: Tensor) -> None:
        dev = (got.double() - want.double()).abs() / want.double().abs().clamp(min=1.0)
        self.max_dev = max(self.max_dev, float(dev.max()))

    @torch.no_grad()
    def score(self, state: tuple, tokens: Tensor, cand: Tensor | None = None) -> Tensor:
        a, b = state
        want = self.model.step(tokens, a).float().log_softmax(-1)
        self._note(self.other.model.step(tokens, b), want)
        for ca, cb in zip(a.caches, b.caches):
            if not torch.equal(ca.length, cb.length):
                raise AssertionError("the two caches hold different token counts")
            slot = (ca.length - 1) // ca.stride  # the slot each row just wrote
            for name in ca.slot_shapes:
                self._note(cb.read(name, slot), ca.read(name, slot))
        self.steps += 1
        return want.double().log_softmax(-1)

    def select(self, state: tuple, rows: Tensor, cols: Tensor, tokens: Tensor) -> None:
        for s in state:
            s.reorder(rows)

    def keep(self, state: tuple, rows: Tensor) -> tuple:
        for s in state:
            s.keep_rows(rows)
        return state

    def peak_cache_bytes(self, state: tuple) -> int:
        return state[0].peak_cache_bytes()
