"""The one interface every decoder self-attention variant implements.

- forward(x, lengths, cache=None): parallel over a right-padded batch with the variant's causal
  mask; given an empty cache it also fills it (prefill), so decoding can continue with step.
- step(x, cache): one new token per sequence, attending through the cache (appending to it).
- new_cache(...) / cache_elements_per_token(): what the cache holds and how much per token.

The decoder, beam search, benchmarks and tests are written once against this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from s2s.attention.cache import AttentionCache
from s2s.attention.config import AttentionConfig


class DecoderSelfAttention(nn.Module, ABC):
    """Base class: subclasses define the projections, slot layout and the two code paths."""

    #: tokens merged into one cache slot (MTLA's s; 1 for every other variant)
    stride: int = 1

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg

    @abstractmethod
    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one cache slot per buffer name, e.g. {"k": (G, D), "v": (G, D)}."""

    @abstractmethod
    def forward(
        self, x: Tensor, lengths: Tensor | None = None, cache: AttentionCache | None = None
    ) -> Tensor:
        """x: (B, T, d) right-padded, lengths: (B,) or None (all T). Returns (B, T, d) with
        padded positions zero. With an empty `cache`, also prefills it with the T positions."""

    @abstractmethod
    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        """x: (B, 1, d), the token at position cache.length[b] of each row. Returns (B, 1, d)."""

    def new_cache(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        capacity: int = 16,
        fill: float | None = None,
        ancestry: bool = False,
    ) -> AttentionCache:
        """An empty cache for `batch_size` sequences (fill: poison value for tests; ancestry:
        append-only with owner indices, for beam search)."""
        param = next(self.parameters())
        return AttentionCache(
            batch_size,
            self.slot_shapes(),
            stride=self.stride,
            device=device or param.device,
            dtype=dtype or param.dtype,
            capacity=max(1, -(-capacity // self.stride)),
            fill=fill,
            ancestry=ancestry,
        )

    def cache_elements_per_token(self) -> float:
        """Cached elements per token per layer (DESIGN §3)."""
        return sum(int(torch.tensor(s).prod()) for s in self.slot_shapes().values()) / self.stride


def positions_like(x: Tensor) -> Tensor:
    """(B, T) positions 0..T-1 for a (B, T, ...) right-padded batch."""
    B, T = x.shape[:2]
    return torch.arange(T, device=x.device).expand(B, T)


def zero_padding(y: Tensor, lengths: Tensor | None) -> Tensor:
    """Zero the padded positions of a (B, T, ...) output; no-op when lengths is None."""
    if lengths is None:
        return y
    keep = torch.arange(y.shape[1], device=y.device)[None, :] < lengths[:, None]
    return y * keep.view(*keep.shape, *([1] * (y.dim() - 2))).to(y.dtype)
