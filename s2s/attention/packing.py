"""Packing a per-sample prefix (encoder frames) and the targets into one right-padded sequence.

[prefix_b ; x_b ; padding] per row b: the prefix starts at position 0 of every row, so positions
(RoPE) and MTLA's chunks count from each sample's own first frame, and padded frames are never
merged into a chunk. Used by the prefix arrangement inside each self-attention (keys/values of
[frames ; targets]) and by the prompt arrangement at the decoder's input (docs/arrangements.md).
"""

from __future__ import annotations

import torch
from torch import Tensor


def pack_prefix(
    prefix: Tensor, prefix_lens: Tensor, x: Tensor, x_lens: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """prefix: (B, P, d) with prefix_lens (B,); x: (B, L, d) with x_lens (B,) (None: all L).

    Returns seq (B, T, d) with T = max(prefix_lens + x_lens), lengths (B,), and the position of
    every x token in seq, (B, L) long: prefix_lens[b] + j, clamped to the row's last real
    position for padded tokens (so they stay inside the sequence and are zeroed by callers).
    """
    B, P, d = prefix.shape
    L = x.shape[1]
    if x_lens is None:
        x_lens = torch.full((B,), L, dtype=torch.long, device=x.device)
    lens = prefix_lens + x_lens
    T = max(int(lens.max()), 1)
    keep = torch.arange(min(P, T), device=x.device)[None, :] < prefix_lens[:, None]
    # Under autocast the projected frames come out of a Linear in bfloat16 while the target
    # embeddings stay float32: pack both in the wider type (scatter_add needs one dtype).
    dtype = torch.promote_types(prefix.dtype, x.dtype)
    prefix, x = prefix.to(dtype), x.to(dtype)
    seq = prefix.new_zeros(B, T, d)
    seq[:, : min(P, T)] = prefix[:, :T] * keep[..., None].to(prefix.dtype)
    where = prefix_lens[:, None] + torch.arange(L, device=x.device)[None, :]
    valid = torch.arange(L, device=x.device)[None, :] < x_lens[:, None]
    where = torch.where(valid, where, lens[:, None] - 1).clamp(0, T - 1)
    # Padded tokens scatter zeros onto a real position: a no-op.
    seq = seq.scatter_add(1, where[..., None].expand(-1, -1, d), x * valid[..., None].to(x.dtype))
    return seq, lens, where
