"""Attention arithmetic shared by every variant: the parallel (training) call and the
single-step decode call over a cache.

The decode functions here are the PyTorch reference and the CPU path; the Triton kernels in
`kernels/` compute the same thing and are tested against these.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from s2s.attention.masks import self_attention_mask


def parallel_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    stride: int = 1,
    lengths: Tensor | None = None,
    q_pos: Tensor | None = None,
    dropout: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Causal (stride-aware for stride > 1) attention over a right-padded batch.

    q: (B, L, H, Dk); k: (B, T, G, Dk); v: (B, T, G, Dv) with H % G == 0 (G == H: plain MHA).
    Keys sit at positions 0..T-1, queries at q_pos (B, L) (None: L == T, query t at t; the
    prefix arrangement puts the targets' queries after the frames). lengths: (B,) valid keys or
    None. Returns (B, L, H, Dv); padded query rows hold finite values that callers zero (see
    base.zero_padding).
    """
    use_flex = backend == "flex" or (backend == "auto" and q.is_cuda)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, D)
    gqa = kh.shape[1] != qh.shape[1]
    if use_flex:
        out = _flex(qh, kh, vh, scale=scale, stride=stride, lengths=lengths, q_pos=q_pos, gqa=gqa)
    else:
        mask = self_attention_mask(k.shape[1], stride, lengths, q.device, q_pos)
        out = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=gqa
        )
    return out.transpose(1, 2)


@functools.cache
def _compiled_flex():  # compiled once per process; eager flex is a slow reference
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    stride: int,
    lengths: Tensor | None,
    q_pos: Tensor | None,
    gqa: bool,
) -> Tensor:
    """flex_attention with the stride-aware causal mask as a mask_mod (block-sparse on GPU)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, L, T = q.shape[0], q.shape[2], k.shape[2]
    lens = lengths if lengths is not None else torch.full((B,), T, device=q.device)
    qpos = q_pos if q_pos is not None else torch.arange(L, device=q.device).expand(B, L)

    def mask_mod(b, h, q_idx, kv_idx):
        i = qpos[b, q_idx]
        visible = (kv_idx == i) | ((kv_idx < i) & ((kv_idx + 1) % stride == 0))
        # Padded queries keep their diagonal so no row is empty (zeroed by the caller).
        return visible & ((kv_idx < lens[b]) | (kv_idx == i))

    block_mask = create_block_mask(mask_mod, B, None, L, T, device=q.device)
    fn = _compiled_flex() if q.is_cuda else flex_attention
    return fn(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)


def decode_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float) -> Tensor:
    """One query step over gathered keys/values (reference path, float32 softmax).

    q: (B, H, Dk); k: (B, S, G, Dk); v: (B, S, G, Dv), H % G == 0; valid: (B, S) bool with at
    least one True per row (unused slots may hold anything, NaN included). Returns (B, H, Dv).
    """
    B, H, Dk = q.shape
    G = k.shape[2]
    qg = q.float().view(B, G, H // G, Dk)
    scores = torch.einsum("bgqd,bsgd->bgqs", qg, k.float()) * scale
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    p = scores.softmax(dim=-1)
    vf = v.float().masked_fill(~valid[:, :, None, None], 0.0)  # 0 * NaN would poison the sum
    out = torch.einsum("bgqs,bsgd->bgqd", p, vf)
    return out.reshape(B, H, -1).to(q.dtype)


def cached_attention(
    q: Tensor, k: Tensor, v: Tensor, owner: Tensor | None, num_slots: Tensor, scale: float
) -> Tensor:
    """Decode attention straight over a cache's buffers (AttentionCache layout).

    q: (N, H, Dk); k: (R, S_cap, G, Dk) and v: (R, S_cap, G, Dv) buffers (views allowed, e.g.
    the first columns of a latent buffer); owner: (N, S_cap) row of each sequence's slot, or
    None when row n holds sequence n; num_slots: (N,) slots in use. Returns (N, H, Dv).
    On CUDA this runs the Triton kernel (kernels.decode_attention), which reads through `owner`
    without gathering; elsewhere the same math in PyTorch.
    """
    if q.is_cuda and _triton_enabled():
        from kernels.decode_attention import decode_attention_triton

        return decode_attention_triton(q, k, v, owner, num_slots, scale)
    S = int(num_slots.max())
    slots = torch.arange(S, device=q.device)
    if owner is None:
        kk, vv = k[:, :S], v[:, :S]
    else:
        rows = owner[:, :S]
        kk, vv = k[rows, slots], v[rows, slots]
    return decode_attention(q, kk, vv, slots[None, :] < num_slots[:, None], scale)


@functools.cache
def _triton_enabled() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:  # pragma: no cover - triton ships with torch on Linux
        return False
    return True


def latent_cached_attention(
    q: Tensor, kv: Tensor, owner: Tensor | None, num_slots: Tensor, value_dim: int, scale: float
) -> Tensor:
    """MLA/MTLA absorbed decode: every head attends the one shared latent cache (MQA-style).

    q: (N, H, R + Dr) = [W_uk-absorbed query ; rotated rope query]; kv: (R_rows, S_cap, R + Dr)
    latent buffer = [c ; rotated rope key]; the value is its first value_dim (= R) columns, a
    view, so nothing is expanded. Returns (N, H, R): the attention-weighted latent, before W_uv.
    """
    return cached_attention(q, kv[:, :, None], kv[:, :, None, :value_dim], owner, num_slots, scale)
