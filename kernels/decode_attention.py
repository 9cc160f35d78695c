"""Triton decode attention over (compressed) caches, read through ancestry indices.

One query token per sequence attends its cache slots. The same kernel serves MHA/GQA/MQA
(G key/value heads, H/G query heads per group) and the latent MLA/MTLA decode (G = 1, key =
[c ; k_rope] of width r + d_r, value = the first r columns of the same buffer): each program
loads a block of slots once and scores it against all query heads of its group, which is what
makes the latent cache cheap to read.

Layout (AttentionCache): k (R, S_cap, G, Dk), v (R, S_cap, G, Dv) buffers, any strides;
owner (N, S_cap) int64 names the buffer row that holds slot s of sequence n (append-only beam
search), or None for row n. Slots past num_slots[n] are never read (masked loads), so caches
allocated with `empty` cannot leak NaN. Split-KV: the slot range is cut into `num_splits`
pieces processed in parallel, each writing a partial output and its log-sum-exp; a reduce
merges them. Reference: s2s.attention.ops.cached_attention (the CPU path). Tests run this file
under TRITON_INTERPRET=1 on CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _decode_partial(
    Q,
    K,
    V,
    Owner,
    NumSlots,
    Out,
    Lse,
    s_qn,
    s_qh,
    s_qd,
    s_kr,
    s_ks,
    s_kg,
    s_kd,
    s_vr,
    s_vs,
    s_vg,
    s_vd,
    s_wn,
    s_ws,
    s_on,
    s_op,
    s_oh,
    s_od,
    s_ln,
    s_lp,
    s_lh,
    scale,
    BLOCKS_PER_SPLIT: tl.constexpr,
    QH: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BLOCK_QH: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_S: tl.constexpr,
    HAS_OWNER: tl.constexpr,
    IEEE: tl.constexpr,
):
    n = tl.program_id(0)
    g = tl.program_id(1)
    split = tl.program_id(2)

    offs_h = tl.arange(0, BLOCK_QH)
    offs_dk = tl.arange(0, BLOCK_DK)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_h = offs_h < QH
    heads = g * QH + offs_h

    q = tl.load(
        Q + n * s_qn + heads[:, None] * s_qh + offs_dk[None, :] * s_qd,
        mask=mask_h[:, None] & (offs_dk[None, :] < DK),
        other=0.0,
    ).to(tl.float32)

    used = tl.load(NumSlots + n)
    start = split * BLOCKS_PER_SPLIT * BLOCK_S
    end = tl.minimum(start + BLOCKS_PER_SPLIT * BLOCK_S, used)

    # Finite initial max: an empty split then yields l == 0 without inf - inf = NaN.
    m_i = tl.full([BLOCK_QH], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_QH], tl.float32)
    acc = tl.zeros([BLOCK_QH, BLOCK_DV], tl.float32)

    # A compile-time trip count (a power of two, so few variants get compiled as the cache
    # grows); blocks past `end` are fully masked.
    for i in range(0, BLOCKS_PER_SPLIT):
        offs_s = start + i * BLOCK_S + tl.arange(0, BLOCK_S)
        mask_s = offs_s < end
        if HAS_OWNER:
            rows = tl.load(Owner + n * s_wn + offs_s * s_ws, mask=mask_s, other=0)
        else:
            rows = tl.zeros([BLOCK_S], tl.int64) + n
        k = tl.load(
            K + rows[:, None] * s_kr + offs_s[:, None] * s_ks + g * s_kg + offs_dk[None, :] * s_kd,
            mask=mask_s[:, None] & (offs_dk[None, :] < DK),
            other=0.0,
        ).to(tl.float32)
        if IEEE:
            scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        else:
            scores = tl.dot(q, tl.trans(k)) * scale
        scores = tl.where(mask_s[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        p = tl.exp(scores - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(
            V + rows[:, None] * s_vr + offs_s[:, None] * s_vs + g * s_vg + offs_dv[None, :] * s_vd,
            mask=mask_s[:, None] & (offs_dv[None, :] < DV),
            other=0.0,
        ).to(tl.float32)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p, v)
        m_i = m_new

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.log(tl.where(empty, 1.0, l_i)))
    tl.store(
        Out + n * s_on + split * s_op + heads[:, None] * s_oh + offs_dv[None, :] * s_od,
        out,
        mask=mask_h[:, None] & (offs_dv[None, :] < DV),
    )
    tl.store(Lse + n * s_ln + split * s_lp + heads * s_lh, lse, mask=mask_h)


def merge_splits(out: Tensor, lse: Tensor) -> Tensor:
    """Log-sum-exp merge of split-KV partials. out: (N, P, H, Dv), lse: (N, P, H) -> (N, H, Dv).
    Empty splits carry lse = -inf and weight 0."""
    weights = torch.softmax(lse, dim=1)  # every row has at least one non-empty split
    return (out * weights[..., None]).sum(dim=1)


def _pow2(x: int, least: int = 16) -> int:
    return max(least, triton.next_power_of_2(x))


def decode_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    owner: Tensor | None,
    num_slots: Tensor,
    scale: float,
    *,
    num_splits: int | None = None,
    block_s: int = 32,
) -> tuple[Tensor, Tensor]:
    """Decode attention of q (N, H, Dk) over k (R, S_cap, G, Dk) / v (R, S_cap, G, Dv) buffers,
    through owner (N, S_cap) (or None) for num_slots (N,) slots. Returns the output (N, H, Dv)
    in q's dtype and its (N, H) float32 log-sum-exp (for a cascade merge).
    """
    N, H, DK = q.shape
    G, DV = k.shape[2], v.shape[3]
    if H % G or k.shape[3] != DK or v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if num_slots.shape != (N,):
        raise ValueError(f"num_slots must be ({N},), got {tuple(num_slots.shape)}")
    max_slots = int(num_slots.max()) if N else 0
    if max_slots < 1:
        raise ValueError("every sequence needs at least one cached slot")
    if num_splits is None:  # enough programs to fill the GPU, a few blocks of slots each
        num_splits = max(1, min(triton.cdiv(max_slots, 4 * block_s), 64))
    blocks_per_split = triton.next_power_of_2(
        triton.cdiv(triton.cdiv(max_slots, num_splits), block_s)
    )
    num_splits = triton.cdiv(max_slots, blocks_per_split * block_s)
    out = torch.empty(N, num_splits, H, DV, device=q.device, dtype=torch.float32)
    lse = torch.empty(N, num_splits, H, device=q.device, dtype=torch.float32)
    num_slots = num_slots.to(torch.int32).contiguous()
    own = owner if owner is not None else num_slots  # placeholder pointer, never read
    _decode_partial[(N, G, num_splits)](
        q,
        k,
        v,
        own,
        num_slots,
        out,
        lse,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *(owner.stride() if owner is not None else (0, 0)),
        *out.stride(),
        *lse.stride(),
        scale,
        BLOCKS_PER_SPLIT=blocks_per_split,
        QH=H // G,
        DK=DK,
        DV=DV,
        BLOCK_QH=_pow2(H // G),
        BLOCK_DK=_pow2(DK),
        BLOCK_DV=_pow2(DV),
        BLOCK_S=block_s,
        HAS_OWNER=owner is not None,
        IEEE=q.dtype == torch.float32,
    )
    return merge_splits(out, lse).to(q.dtype), torch.logsumexp(lse, dim=1)
