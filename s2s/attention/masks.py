"""Attention masks: causal, MTLA's stride-aware causal mask, right padding, and queries that sit
at chosen positions of a longer key sequence (the prefix arrangement; docs/arrangements.md)."""

from __future__ import annotations

import torch
from torch import Tensor


def stride_aware_visible(i: Tensor, j: Tensor, s: int) -> Tensor:
    """Query at position i sees the key (partial slot) after token j: its own slot, or the final
    state of a chunk that ended before it. Broadcasts i and j (the boolean masks and flex's
    mask_mod both use it)."""
    return (j == i) | ((j < i) & ((j + 1) % s == 0))


def stride_aware_causal_mask(T: int, s: int, device: torch.device | str | None = None) -> Tensor:
    """(T, T) bool, True where query i may attend key j (docs/attention.md, MTLA).

    Key j holds the partial MTLA slot after token j. Query i sees its own partial slot (j == i)
    and every completed chunk before it: j < i and (j + 1) % s == 0. With s == 1 this is the
    ordinary causal mask.
    """
    if s < 1:
        raise ValueError(f"stride must be >= 1, got {s}")
    pos = torch.arange(T, device=device)
    return stride_aware_visible(pos[:, None], pos[None, :], s)


def lengths_to_padding_mask(lengths: Tensor, T: int) -> Tensor:
    """(B,) lengths -> (B, T) bool, True at padded positions (j >= length)."""
    return torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]


def self_attention_mask(
    T: int,
    stride: int,
    lengths: Tensor | None,
    device: torch.device,
    q_pos: Tensor | None = None,
) -> Tensor:
    """Boolean mask for the parallel forward, True = attend: (T, T) or (B, 1, L, T).

    Keys sit at positions 0..T-1; queries at q_pos (B, L) (None: 0..T-1, one per key). The
    stride-aware causal rule hides every key after the query; `lengths` (B,) hides padded keys.
    A padded query keeps its own diagonal so no row is empty (callers zero its output).
    """
    if q_pos is None and lengths is None:
        return stride_aware_causal_mask(T, stride, device)
    j = torch.arange(T, device=device)
    i = j[None, :, None] if q_pos is None else q_pos[:, :, None]
    mask = stride_aware_visible(i, j, stride)
    if lengths is not None:
        mask = mask & ((j < lengths[:, None, None]) | (j == i))
    return mask[:, None]
