"""Cascade (shared-prefix) decode attention over the lean engine's two-part cache.

One decode step of N = U * K hypotheses: the K hypotheses of an utterance attend its one
shared cache together (K * H queries per loaded block: the shared slots are read once per
utterance, not once per hypothesis), each hypothesis attends its own slots through the ancestry
table, and the two are merged by log-sum-exp. Both parts run the split-KV kernel of
kernels.decode_attention and write their partials side by side into one buffer, so a single
merge combines the splits of both parts. Reference: s2s.attention.ops.cascade_attention (the
CPU path; docs/engine.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.decode_attention import CachePart, attend_partials, merge_partials, split_plan


def cascade_attention_triton(
    q: Tensor, own: CachePart, shared: CachePart | None, scale: float, *, block_s: int = 32
) -> Tensor:
    """q: (N, H, Dk) one query token per hypothesis; own: the own part, one cache sequence per
    hypothesis (owner: (N, S_own) or None, num_slots: (N,)); shared: the shared part, one cache
    sequence per utterance (U = shared.num_slots.shape[0] dividing N; owner None), or None.
    Returns (N, H, Dv) in q's dtype."""
    N, H = q.shape[:2]
    Dv = own.v.shape[3]
    P_own = split_plan(own.capacity, block_s=block_s)[1]
    P_sh = split_plan(shared.capacity, block_s=block_s)[1] if shared is not None else 0
    out = torch.empty(N, P_own + P_sh, H, Dv, device=q.device, dtype=torch.float32)
    lse = torch.empty(N, P_own + P_sh, H, device=q.device, dtype=torch.float32)
    attend_partials(q, own, scale, out, lse, block_s=block_s)
    if shared is not None:
        attend_partials(q, shared, scale, out, lse, split_offset=P_own, block_s=block_s)
    return merge_partials(out, lse)[0].to(q.dtype)
