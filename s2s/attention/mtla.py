"""MTLA: multi-head temporal latent attention (arXiv 2505.13544; docs/attention.md).

MLA whose cache merges every `s` temporally adjacent latents into one slot:
    w_j = sigmoid(<A PE(floor(j / s)), B c_j>)          (hyper-network, A, B: Linear(r, r/4))
    slot of chunk m after token i = sum_{j = ms..i} w_j c_j, rope key = token i's (replaced)
so the cache holds ceil(T / s) slots. Training computes every partial slot with a reshape +
cumsum inside chunks and attends with the stride-aware causal mask. With s = 1 there is nothing
to merge: no hyper-network, and MTLA is exactly MLA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.attention.cache import AttentionCache
from s2s.attention.mla import LatentAttention, MLAConfig
from s2s.attention.ops import merged_slot
from s2s.attention.positions import sinusoidal_encoding
from s2s.attention.probe import report
from s2s.attention.registry import register_attention


@dataclass
class MTLAConfig(MLAConfig):
    """mtla: MLA's fields plus stride = s, the tokens merged into one cache slot."""

    type: str = "mtla"
    stride: int = 2  # type: ignore[assignment]  (a field here, a constant 1 elsewhere)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stride < 1:
            raise ValueError(f"mtla stride must be >= 1, got {self.stride}")

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> MTLAConfig:
        done = super().resolved(d_model, n_heads)
        if done.stride > 1 and done.latent_dim % 4:
            raise ValueError(
                f"mtla's hyper-network needs latent_dim % 4 == 0, got {done.latent_dim}"
            )
        return done


@register_attention("mtla", MTLAConfig)
class TemporalLatentAttention(LatentAttention):
    """MTLA with stride `cfg.stride`; cache buffer "kv": (B, ceil(T/s), r + d_r)."""

    def __init__(self, cfg: MTLAConfig) -> None:
        super().__init__(cfg)
        self.stride = cfg.stride
        if self.stride > 1:
            R = cfg.latent_dim
            self.hyper_pe = nn.Linear(R, R // 4)  # A
            self.hyper_latent = nn.Linear(R, R // 4)  # B

    def hyper(self, c: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """The hyper-network's two sides, A PE(pos // s) and B c: c (..., r), pos (...) long
        -> two (..., r/4)."""
        acc = torch.promote_types(c.dtype, torch.float32)
        pe = sinusoidal_encoding(pos // self.stride, self.latent_dim, dtype=acc).to(c.dtype)
        return self.hyper_pe(pe), self.hyper_latent(c)

    def merge_weight(self, c: Tensor, pos: Tensor) -> Tensor:
        """w = sigmoid(<A PE(pos // s), B c>). c: (..., r), pos: (...) long -> (...)."""
        a, b = self.hyper(c, pos)
        return torch.sigmoid((a * b).sum(-1))

    def merge_parallel(self, c: Tensor, pos: Tensor) -> Tensor:
        if self.stride == 1:
            return c
        B, T, R = c.shape
        s = self.stride
        w = self.merge_weight(c, pos)
        report(self, merge_weight=w)  # (B, T), to an inspection's probe only (probe.py)
        wc = w[..., None] * c
        # Prefix sums inside each chunk: (B, n, s, r) cumsum over the chunk axis, n = ceil(T/s).
        # The padded length written as n * s (not T + (-T % s)) lets torch.compile see that the
        # view fits for every T, so one graph serves odd and even lengths (train.compile).
        n = (T + s - 1) // s
        chunks = F.pad(wc, (0, 0, 0, n * s - T)).view(B, n, s, R)
        return chunks.cumsum(dim=2).view(B, n * s, R)[:, :T]

    def step_slot(self, c: Tensor, k_rope: Tensor, cache: AttentionCache) -> Tensor:
        if self.stride == 1:
            return super().step_slot(c, k_rope, cache)
        # A chunk's first token starts a new slot; later ones add to the parent's partial.
        pos = cache.length
        return merged_slot(c, k_rope, *self.hyper(c, pos), cache, pos // self.stride)
