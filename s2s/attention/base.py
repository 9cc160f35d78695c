"""The one interface every decoder self-attention variant implements (docs/attention.md).

- forward(x, lengths, cache=None, prefix=None, prefix_lengths=None): parallel over a
  right-padded batch with the variant's causal mask. Given an empty cache it also fills it, so
  decoding can continue with step. Given a `prefix` (the prefix arrangement,
  docs/arrangements.md), keys/values come from [prefix_b ; x_b] and queries from x alone.
- prefill(y, lengths, cache): the keys/values of y straight into an empty cache (no queries):
  the prefix arrangement's decode start.
- step(x, cache): one new token per sequence, attending through the cache (appending to it).
- new_cache(...) / cache_elements_per_token(): what the cache holds and how much per token.

A variant supplies four pieces: `slot_shapes`, `queries`, `slots` (the cache content after each
token, merged for MTLA) and `attend` (parallel attention of queries over those slots), plus its
own `step`. forward and prefill are written once, here, on top of them; the decoder, beam
search, benchmarks and tests are written once against this interface.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from s2s.attention.cache import AttentionCache
from s2s.attention.config import AttentionConfig
from s2s.attention.ops import attention_probs, parallel_attention
from s2s.attention.packing import pack_prefix
from s2s.attention.probe import probing, report


class DecoderSelfAttention(nn.Module, ABC):
    """Base class: subclasses define the projections, slot layout and the two code paths."""

    #: tokens merged into one cache slot (MTLA's s; 1 for every other variant)
    stride: int = 1
    #: softmax scale, set by each variant
    scale: float

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg

    @abstractmethod
    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one cache slot per buffer name, e.g. {"k": (G, D), "v": (G, D)}."""

    @abstractmethod
    def queries(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, L, d) at positions pos (B, L) -> queries (B, L, H, Dk), RoPE applied."""

    @abstractmethod
    def slots(self, y: Tensor, pos: Tensor) -> dict[str, Tensor]:
        """y: (B, T, d) at positions pos (B, T) -> {name: (B, T, *slot_shape)}: what the cache
        slot of token t's chunk holds right after token t (for MTLA the partial merged slot)."""

    @abstractmethod
    def attend(
        self, q: Tensor, slots: dict[str, Tensor], q_pos: Tensor, lengths: Tensor | None
    ) -> Tensor:
        """Parallel attention of q (B, L, H, Dk) at positions q_pos (B, L) over `slots` at
        positions 0..T-1 (lengths (B,) valid), stride-aware causal. Returns (B, L, d)."""

    @abstractmethod
    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        """x: (B, 1, d), the token at position cache.length[b] of each row. Returns (B, 1, d)."""

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        cache: AttentionCache | None = None,
        *,
        prefix: Tensor | None = None,
        prefix_lengths: Tensor | None = None,
    ) -> Tensor:
        """x: (B, L, d) right-padded, lengths: (B,) or None (all L). Returns (B, L, d) with
        padded positions zero. prefix: (B, P, d) key/value-only positions in front of x, with
        prefix_lengths (B,); x's tokens then sit at positions prefix_lengths[b] + j. With an
        empty `cache`, also prefills it with every key/value position."""
        if prefix is None:
            y, y_lens, q_pos = x, lengths, positions_like(x)
        else:
            if prefix_lengths is None:
                prefix_lengths = torch.full(
                    (x.shape[0],), prefix.shape[1], dtype=torch.long, device=x.device
                )
            y, y_lens, q_pos = pack_prefix(prefix, prefix_lengths, x, lengths)
        slots = self.slots(y, positions_like(y))
        out = self.attend(self.queries(x, q_pos), slots, q_pos, y_lens)
        if cache is not None:
            self._fill(cache, slots, y_lens)
        return zero_padding(out, lengths)

    def parallel(
        self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, lengths: Tensor | None
    ) -> Tensor:
        """ops.parallel_attention with this variant's stride, dropout and backend: q (B, L, H,
        Dk) at q_pos over k (B, T, G, Dk) / v (B, T, G, Dv). Returns (B, L, H * Dv). Under a
        probe (probe.py) it also reports "attention": the probabilities (B, H, L, T)."""
        if probing():  # an inspection asks (probe.py): the probabilities used below
            kw = dict(scale=self.scale, stride=self.stride, lengths=lengths, q_pos=q_pos)
            report(self, attention=attention_probs(q, k, **kw))
        out = parallel_attention(
            q,
            k,
            v,
            scale=self.scale,
            stride=self.stride,
            lengths=lengths,
            q_pos=q_pos,
            dropout=self.cfg.dropout if self.training else 0.0,
            backend=self.cfg.backend,
        )
        return out.flatten(2)

    def prefill(self, y: Tensor, lengths: Tensor | None, cache: AttentionCache) -> None:
        """Fill an empty cache with the keys/values of y (B, T, d) at positions 0..T-1, without
        computing a query or an output (lengths: (B,) or None for all T)."""
        self._fill(cache, self.slots(y, positions_like(y)), lengths)

    def _fill(
        self, cache: AttentionCache, slots: dict[str, Tensor], lengths: Tensor | None
    ) -> None:
        """Slot m holds the content after its chunk's last valid token, min(ms+s-1, len-1)."""
        first = next(iter(slots.values()))
        B, T = first.shape[:2]
        s = self.stride
        lens = lengths if lengths is not None else torch.full((B,), T, device=first.device)
        # (T + s - 1) // s, not -(-T // s): traced for export, ONNX's integer Div truncates
        # towards zero, so a negative floor division would round the wrong way.
        m = torch.arange((T + s - 1) // s, device=first.device)
        last = torch.minimum(m[None, :] * s + s - 1, (lens[:, None] - 1).clamp(min=0))
        cache.fill_prefix(
            {
                name: val.gather(
                    1, last.view(B, -1, *[1] * (val.dim() - 2)).expand(-1, -1, *val.shape[2:])
                )
                for name, val in slots.items()
            },
            lens,
        )

    def new_cache(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        capacity: int = 16,
        fill: float | None = None,
        ancestry: bool = False,
        share_prefix: bool = True,
        growable: bool = True,
    ) -> AttentionCache:
        """An empty cache for `batch_size` sequences (fill: poison value for tests; ancestry:
        append-only with owner indices, for beam search; share_prefix: a prefilled prefix is
        stored once per utterance; growable=False: `capacity` tokens is all it will ever hold,
        so steps skip the checks that read the device; see cache.py)."""
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
            share_prefix=share_prefix,
            growable=growable,
        )

    def cache_elements_per_token(self) -> float:
        """Cached elements per token per layer (docs/attention.md)."""
        return sum(math.prod(s) for s in self.slot_shapes().values()) / self.stride


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
