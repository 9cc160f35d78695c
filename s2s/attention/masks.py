"""Attention masks: causal, MTLA's stride-aware causal mask, and right padding."""

from __future__ import annotations

import torch
from torch import Tensor


def stride_aware_causal_mask(T: int, s: int, device: torch.device | str | None = None) -> Tensor:
    """(T, T) bool, True where query i may attend key j (DESIGN §3).

    Key j holds the partial MTLA slot after token j. Query i sees its own partial slot (j == i)
    and every completed chunk before it: j < i and (j + 1) % s == 0. With s == 1 this is the
    ordinary causal mask.
    """
    if s < 1:
        raise ValueError(f"stride must be >= 1, got {s}")
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j == i) | ((j < i) & ((j + 1) % s == 0))


def lengths_to_padding_mask(lengths: Tensor, T: int) -> Tensor:
    """(B,) lengths -> (B, T) bool, True at padded positions (j >= length)."""
    return torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]


def self_attention_mask(
    T: int, stride: int, lengths: Tensor | None, device: torch.device
) -> Tensor:
    """Boolean mask for the parallel forward: (T, T) or (B, 1, T, T), True = attend.

    Padding is on the right, so causality already hides padded keys from real queries; the key
    mask only matters for padded queries, which keep their own diagonal so no row is empty
    (their outputs are zeroed afterwards).
    """
    mask = stride_aware_causal_mask(T, stride, device)
    if lengths is None:
        return mask
    keep = ~lengths_to_padding_mask(lengths, T)
    return (mask[None] & keep[:, None, :] | torch.eye(T, dtype=torch.bool, device=device))[:, None]
