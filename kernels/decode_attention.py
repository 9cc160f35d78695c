"""Triton decode attention over (compressed) caches: split-KV partials read through ancestry
indices, and their log-sum-exp merge.

One kernel serves both parts of the lean engine's cache (docs/engine.md) and every layout:
- the **own part**: one query token per sequence, its slots read through `owner` (the
  append-only ancestry table), so beam reordering never moves a vector;
- the **shared part**: the `rows` hypotheses of an utterance attend its one shared cache
  together, so a block of slots is loaded once for rows x heads queries (one dense product);
- the **G-head layout** (MHA/GQA/MQA: keys (R, S, G, Dk), values (R, S, G, Dv)) and the
  **latent layout** (MLA/MTLA: G = 1, key [c ; k_rope] of width r + d_r, value = the first r
  columns of the same slots). For the latent layout the value is not loaded again: the kernel
  scores the query's first r columns against the c block and its last d_r against the rope
  block, then multiplies the probabilities by the same c block.

Each program takes one cache sequence c, one key/value group g, a block of that group's query
rows and one split of the slot range; it writes the split's partial output and log-sum-exp
(-inf for an empty split). Slots past num_slots[c] are never read (masked loads and a loop that
stops at the sequence's length), so caches allocated with `empty` cannot leak NaN, and nothing
is read from the device on the host: the grid is sized from the buffer's capacity.
Reference: s2s.attention.ops (attend_with_lse, cached_attention: the CPU path). Tests run this
file under TRITON_INTERPRET=1 on CPU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.launch import launch


@triton.jit
def _attend_partial(
    Q,
    K,
    KT,
    V,
    Owner,
    NumSlots,
    Out,
    Lse,
    rows_per_seq,
    split_offset,
    s_qn,
    s_qh,
    s_qd,
    s_kr,
    s_ks,
    s_kg,
    s_kd,
    s_tr,
    s_ts,
    s_tg,
    s_td,
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
    QPG: tl.constexpr,
    DK: tl.constexpr,
    DT: tl.constexpr,
    DV: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DT: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_S: tl.constexpr,
    HAS_OWNER: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    V_IS_K: tl.constexpr,
    IEEE: tl.constexpr,
):
    c = tl.program_id(0)  # cache sequence (a row of the own part, an utterance of the shared)
    n_qblocks = tl.cdiv(rows_per_seq * QPG, BLOCK_Q)
    g = tl.program_id(1) // n_qblocks
    qb = tl.program_id(1) % n_qblocks
    split = tl.program_id(2)

    # Query row i of this (c, g): hypothesis c * rows_per_seq + i // QPG, head g * QPG + i % QPG.
    offs_q = qb * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask_q = offs_q < rows_per_seq * QPG
    n = c * rows_per_seq + offs_q // QPG
    heads = g * QPG + offs_q % QPG
    q_row = Q + n[:, None] * s_qn + heads[:, None] * s_qh
    offs_dk = tl.arange(0, BLOCK_DK)
    q = tl.load(
        q_row + offs_dk[None, :] * s_qd, mask=mask_q[:, None] & (offs_dk[None, :] < DK), other=0.0
    ).to(tl.float32)
    offs_dt = tl.arange(0, BLOCK_DT)
    if HAS_TAIL:  # the key's last DT columns (the latent layout's RoPE key)
        q_t = tl.load(
            q_row + (DK + offs_dt[None, :]) * s_qd,
            mask=mask_q[:, None] & (offs_dt[None, :] < DT),
            other=0.0,
        ).to(tl.float32)
    offs_dv = tl.arange(0, BLOCK_DV)

    used = tl.load(NumSlots + c)
    start = split * (BLOCKS_PER_SPLIT * BLOCK_S)
    end = tl.minimum(start + BLOCKS_PER_SPLIT * BLOCK_S, used)

    # Finite initial max: an empty split then yields l == 0 without inf - inf = NaN.
    m_i = tl.full([BLOCK_Q], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)

    # A compile-time trip count (a power of two, so few variants compile; Triton's interpreter
    # cannot loop over a run-time count); blocks past the sequence's length are skipped by a
    # branch, so a split past it costs next to nothing.
    for i in range(BLOCKS_PER_SPLIT):
        s0 = start + i * BLOCK_S
        if s0 < end:
            offs_s = s0 + tl.arange(0, BLOCK_S)
            mask_s = offs_s < end
            if HAS_OWNER:
                rows = tl.load(Owner + c * s_wn + offs_s * s_ws, mask=mask_s, other=0)
            else:
                rows = tl.zeros([BLOCK_S], tl.int64) + c
            k = tl.load(
                K
                + rows[:, None] * s_kr
                + offs_s[:, None] * s_ks
                + g * s_kg
                + offs_dk[None, :] * s_kd,
                mask=mask_s[:, None] & (offs_dk[None, :] < DK),
                other=0.0,
            ).to(tl.float32)
            if IEEE:
                scores = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                scores = tl.dot(q, tl.trans(k))
            if HAS_TAIL:
                kt = tl.load(
                    KT
                    + rows[:, None] * s_tr
                    + offs_s[:, None] * s_ts
                    + g * s_tg
                    + offs_dt[None, :] * s_td,
                    mask=mask_s[:, None] & (offs_dt[None, :] < DT),
                    other=0.0,
                ).to(tl.float32)
                if IEEE:
                    scores += tl.dot(q_t, tl.trans(kt), input_precision="ieee")
                else:
                    scores += tl.dot(q_t, tl.trans(kt))
            scores = tl.where(mask_s[None, :], scores * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if V_IS_K:  # the latent layout: the value is the key block already in registers
                v = k
            else:
                v = tl.load(
                    V
                    + rows[:, None] * s_vr
                    + offs_s[:, None] * s_vs
                    + g * s_vg
                    + offs_dv[None, :] * s_vd,
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
    p_idx = split_offset + split
    tl.store(
        Out + n[:, None] * s_on + p_idx * s_op + heads[:, None] * s_oh + offs_dv[None, :] * s_od,
        out,
        mask=mask_q[:, None] & (offs_dv[None, :] < DV),
    )
    tl.store(Lse + n * s_ln + p_idx * s_lp + heads * s_lh, lse, mask=mask_q)


class CachePart(NamedTuple):
    """One part of a cache as the kernel reads it.

    k: (R, S_cap, G, Dk) and v: (R, S_cap, G, Dv) buffers (views allowed: the latent layout's
    value is the first Dv columns of the key's buffer); owner: (C, S_cap) buffer row of each
    slot of cache sequence c, or None for row c; num_slots: (C,) slots in use (>= 0)."""

    k: Tensor
    v: Tensor
    owner: Tensor | None
    num_slots: Tensor

    @property
    def capacity(self) -> int:
        """Slots addressable in both k and v (a caller may pass only the slots in use of one,
        e.g. mfa_kr's keys rotated at read time)."""
        return min(self.k.shape[1], self.v.shape[1])


def _pow2(x: int, least: int = 16) -> int:
    return max(least, triton.next_power_of_2(x))


def _value_in_key(k: Tensor, v: Tensor) -> bool:
    """True when v is the leading columns of k's own slots (the latent layout)."""
    return (
        v.data_ptr() == k.data_ptr()
        and v.stride() == k.stride()
        and v.shape[:3] == k.shape[:3]
        and v.shape[3] <= k.shape[3]
    )


def tile_plan(queries: int, dk: int, dt: int, dv: int, ieee: bool) -> tuple[int, int]:
    """(query rows per program, warps) for `queries` query rows per (sequence, group), key
    widths dk + dt and value width dv. All of a group's rows where they fit. The accumulator
    (rows x Dv float32) lives in registers, so wide values take fewer rows. In float32 the
    dots run on FMA units with every operand tile in registers (no tensor-core fragments), and
    the sm_80/sm_90 compilation (kernels.compile_check) spilled beyond about 32 elements of
    the q, key-tail and accumulator tiles per thread, and with 64 rows even of 32-wide heads
    (the scores and probabilities tiles grow with the rows too): 8 warps, and at most 32
    rows, fewer where the tiles are wide."""
    width = _pow2(dk) + (_pow2(max(dt, 1)) if dt else 0) + _pow2(dv)
    if ieee:
        cap = min(32, max(16, 1 << ((32 * 32 * 8) // width).bit_length() - 1))  # a power of 2
        return min(_pow2(queries), cap), 8
    return min(_pow2(queries), max(16, 8192 // _pow2(dv))), 8 if max(dk, dv) >= 256 else 4


def split_plan(
    capacity: int, num_splits: int | None = None, *, block_s: int = 32, max_splits: int = 16
) -> tuple[int, int]:
    """(slots per split, number of splits) for a part of `capacity` slots, from the capacity
    alone (no device read): by default enough programs to fill a GPU at small batch, a few
    blocks of slots each; splits past a sequence's length exit at once."""
    capacity = max(capacity, 1)
    want = num_splits or max(1, min(triton.cdiv(capacity, 4 * block_s), max_splits))
    # blocks per split: a power of two, so the kernel compiles for few trip counts
    split_len = block_s * triton.next_power_of_2(triton.cdiv(triton.cdiv(capacity, want), block_s))
    return split_len, triton.cdiv(capacity, split_len)


def attend_partials(
    q: Tensor,
    part: CachePart,
    scale: float,
    out: Tensor,
    lse: Tensor,
    *,
    split_offset: int = 0,
    block_s: int = 32,
    block_q: int | None = None,
    num_splits: int | None = None,
) -> int:
    """Write the split-KV partials of q (N, H, Dk) over `part` into out (N, P, H, Dv) and lse
    (N, P, H) (float32) at partial indices split_offset, split_offset + 1, ...; returns how many
    (split_plan(capacity, num_splits)[1]).

    N = C * rows: the `rows` = N / C consecutive query rows of cache sequence c (c's beam
    hypotheses for the shared part, 1 for the own part) attend c's slots together."""
    N, H, DK_all = q.shape
    k, v = part.k, part.v
    C, G = part.num_slots.shape[0], k.shape[2]
    same_rows = v.shape[0] == k.shape[0] and v.shape[2] == k.shape[2]
    if H % G or k.shape[3] != DK_all or not same_rows or N % max(C, 1):
        raise ValueError(
            f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
            f"{C} cache sequences"
        )
    DV = v.shape[3]
    v_is_k = _value_in_key(k, v)
    # Latent layout: split the key into the value's columns and the rest (the RoPE key), so
    # neither is padded to a power of two as one (r + d_r = 288 would pad to 512).
    DK, DT = (DV, DK_all - DV) if v_is_k else (DK_all, 0)
    kt = k[..., DK:] if DT else k
    split_len, splits = split_plan(part.capacity, num_splits, block_s=block_s)
    if split_offset + splits > out.shape[1]:
        raise ValueError("out has too few partial slots for this part's splits")
    rows, qpg = N // max(C, 1), H // G
    ieee = q.dtype == torch.float32
    auto_q, num_warps = tile_plan(rows * qpg, DK, DT, DV, ieee)
    block_q = block_q or auto_q
    n_qblocks = triton.cdiv(rows * qpg, block_q)
    owner = part.owner
    num_slots = part.num_slots.to(torch.int32).contiguous()
    launch(
        _attend_partial,
        (C, G * n_qblocks, splits),
        q,
        k,
        kt,
        v,
        owner if owner is not None else num_slots,  # placeholder pointer, never read
        num_slots,
        out,
        lse,
        rows,
        split_offset,
        *q.stride(),
        *k.stride(),
        *kt.stride(),
        *v.stride(),
        *(owner.stride() if owner is not None else (0, 0)),
        *out.stride(),
        *lse.stride(),
        scale,
        BLOCKS_PER_SPLIT=split_len // block_s,
        QPG=qpg,
        DK=DK,
        DT=DT,
        DV=DV,
        BLOCK_Q=block_q,
        BLOCK_DK=_pow2(DK),
        BLOCK_DT=_pow2(max(DT, 1)),
        BLOCK_DV=_pow2(DV),
        BLOCK_S=block_s,
        HAS_OWNER=owner is not None,
        HAS_TAIL=DT > 0,
        V_IS_K=v_is_k,
        IEEE=ieee,
        num_warps=num_warps,
    )
    return splits


def merge_partials(out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """Log-sum-exp merge of partials: out (N, P, H, Dv), lse (N, P, H) -> (N, H, Dv), (N, H).
    Empty partials carry lse = -inf and weigh nothing; a row with none gives out 0, lse -inf."""
    m = lse.amax(dim=1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = (lse - m).exp()
    den = w.sum(dim=1)
    merged = (out * w[..., None]).sum(dim=1) / den.clamp_min(1e-30)[..., None]
    return merged, m[:, 0] + den.log()


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
    in q's dtype and its (N, H) float32 log-sum-exp (for a cascade merge)."""
    if num_slots.shape != (q.shape[0],):
        raise ValueError(f"num_slots must be ({q.shape[0]},), got {tuple(num_slots.shape)}")
    P = split_plan(min(k.shape[1], v.shape[1]), num_splits, block_s=block_s)[1]
    out = q.new_empty(q.shape[0], P, q.shape[1], v.shape[3], dtype=torch.float32)
    lse = q.new_empty(q.shape[0], P, q.shape[1], dtype=torch.float32)
    attend_partials(
        q, CachePart(k, v, owner, num_slots), scale, out, lse, block_s=block_s, num_splits=P
    )
    merged, total = merge_partials(out, lse)
    return merged.to(q.dtype), total
