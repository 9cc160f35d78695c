"""Queries that read one block of a latent cache slot, for the variants whose heads each see a
part of the slot plus a RoPE key shared by all heads (mlra, gla, gta; docs/attention.md).

The slot is [block_0 ; ... ; block_{n-1} ; k_rope]. A head's key is [its block ; k_rope], so
the decode step puts its absorbed query into its block's columns, zeros elsewhere, and attends
the whole slot through the latent layout (ops.latent_views): q · slot = q_b · block_b +
q_rope · k_rope exactly, no key is assembled per head and the cache is read as it is. The
value view is all blocks; each head keeps its own block of the output.
"""

from __future__ import annotations

import torch
from torch import Tensor


def block_queries(q: Tensor, block: Tensor, n_blocks: int) -> Tensor:
    """q: (N, Q, w), block: (Q,) long -> (N, Q, n_blocks * w), row i holding q[:, i] in
    columns block[i] * w ... block[i] * w + w - 1 and zeros elsewhere."""
    N, Q, w = q.shape
    out = q.new_zeros(N, Q, n_blocks, w)
    out[:, torch.arange(Q, device=q.device), block] = q
    return out.flatten(2)


def block_outputs(o: Tensor, block: Tensor, width: int) -> Tensor:
    """o: (N, Q, n_blocks * width), block: (Q,) long -> (N, Q, width): row i's own block."""
    N, Q, _ = o.shape
    return o.view(N, Q, -1, width)[:, torch.arange(Q, device=o.device), block]
