"""The MTLA cache-slot update of one decode step (docs/attention.md).

For the token at position t of each hypothesis n, with latent c_n (r), rotated RoPE key
k_n (d_r) and the hyper-network's two projections a_n = A PE(t // s), b_n = B c_n (r / 4):
    w_n = sigmoid(<a_n, b_n>)
    slot = [w_n c_n ; k_n]                            if t mod s == 0 (a new chunk)
    slot = [parent's partial + w_n c_n ; k_n]         otherwise
where the parent's partial is the first r columns of own slot j_n of the row owner[n, j_n]
(the ancestry table: the hypothesis this one continues). One program per hypothesis fuses the
merge weight, the read through the ancestry table, the accumulation and the concatenation.

The result is returned, not written into the cache: within one step a row may read the slot
that another row overwrites with its own new partial, so every read must finish before any
write (the cache's write is the second launch). Reference: s2s.attention.ops.merged_slot.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.launch import launch


@triton.jit
def _mtla_slot(
    C,
    KR,
    A,
    Bh,
    KV,
    Owner,
    J,
    First,
    Out,
    s_cn,
    s_kn,
    s_an,
    s_bn,
    s_vr,
    s_vs,
    s_wn,
    s_ws,
    s_on,
    R: tl.constexpr,
    DR: tl.constexpr,
    RH: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_DR: tl.constexpr,
    BLOCK_RH: tl.constexpr,
    HAS_OWNER: tl.constexpr,
):
    n = tl.program_id(0)
    offs_h = tl.arange(0, BLOCK_RH)
    a = tl.load(A + n * s_an + offs_h, mask=offs_h < RH, other=0.0).to(tl.float32)
    b = tl.load(Bh + n * s_bn + offs_h, mask=offs_h < RH, other=0.0).to(tl.float32)
    w = tl.sigmoid(tl.sum(a * b, axis=0))

    offs_r = tl.arange(0, BLOCK_R)
    c = tl.load(C + n * s_cn + offs_r, mask=offs_r < R, other=0.0).to(tl.float32)
    j = tl.load(J + n)
    first = tl.load(First + n)
    if HAS_OWNER:
        row = tl.load(Owner + n * s_wn + j * s_ws)
    else:
        row = n
    # A new chunk reads nothing: its slot may be unwritten (NaN in tests), never touched here.
    prev = tl.load(
        KV + row * s_vr + j * s_vs + offs_r, mask=(offs_r < R) & (first == 0), other=0.0
    ).to(tl.float32)
    tl.store(Out + n * s_on + offs_r, prev + w * c, mask=offs_r < R)
    offs_d = tl.arange(0, BLOCK_DR)
    k = tl.load(KR + n * s_kn + offs_d, mask=offs_d < DR, other=0.0)
    tl.store(Out + n * s_on + R + offs_d, k, mask=offs_d < DR)


def mtla_slot_triton(
    c: Tensor,
    k_rope: Tensor,
    a: Tensor,
    b: Tensor,
    kv: Tensor,
    owner: Tensor | None,
    own_index: Tensor,
    first: Tensor,
) -> Tensor:
    """c: (N, r) normalised latents; k_rope: (N, d_r) rotated; a, b: (N, r/4) the
    hyper-network's projections; kv: (R, S_own, r + d_r) own-part buffer; owner: (N, S_own)
    ancestry table or None (row n owns its slots); own_index: (N,) own slot of the token's
    chunk; first: (N,) bool, the token opens its chunk. Returns the new slots (N, r + d_r) in
    kv's dtype (float32 arithmetic)."""
    N, R = c.shape
    DR, RH = k_rope.shape[1], a.shape[1]
    if kv.shape[2] != R + DR or b.shape != a.shape or kv.stride(2) != 1:
        raise ValueError(
            f"shape mismatch: c {tuple(c.shape)}, k_rope {tuple(k_rope.shape)}, a "
            f"{tuple(a.shape)}, b {tuple(b.shape)}, kv {tuple(kv.shape)}"
        )
    c, k_rope, a, b = (t.contiguous() for t in (c, k_rope, a, b))
    out = torch.empty(N, R + DR, device=c.device, dtype=kv.dtype)
    launch(
        _mtla_slot,
        (N,),
        c,
        k_rope,
        a,
        b,
        kv,
        owner if owner is not None else own_index,  # placeholder pointer, never read
        own_index.contiguous(),
        first.to(torch.int8).contiguous(),
        out,
        c.stride(0),
        k_rope.stride(0),
        a.stride(0),
        b.stride(0),
        kv.stride(0),
        kv.stride(1),
        *(owner.stride() if owner is not None else (0, 0)),
        out.stride(0),
        R=R,
        DR=DR,
        RH=RH,
        BLOCK_R=triton.next_power_of_2(R),
        BLOCK_DR=triton.next_power_of_2(DR),
        BLOCK_RH=triton.next_power_of_2(RH),
        HAS_OWNER=owner is not None,
    )
    return out
