"""GTA: grouped-tied attention (arXiv 2505.21487; docs/attention.md).

G = h_kv tied key-value heads KV_g = x W_kv,g ∈ R^{d_h} (not rotated) and one RoPE half-key
k_r = x W_kr ∈ R^{d_h/2} shared by every head. Head h of group g = h // (H / G):
    K_g = [KV_g[:d_h/2] ; rope(k_r)],   V_g = KV_g,   q_h = [q_nope (d_h/2) ; rope(q_rope) (d_h/2)]
so the first half of each KV head is both key and value. The cache holds
[KV_0 ; … ; KV_{G-1} ; rope(k_r)]: G·d_h + d_h/2 per token, half of GQA's 2·G·d_h plus the
shared half-key. Decoding attends that slot through the latent layout: head h's query sits in
the first d_h/2 columns of block g (blocks.py), the value view is the G·d_h tied columns and
head h keeps block g of the output; no key or value is assembled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from s2s.attention.base import DecoderSelfAttention
from s2s.attention.blocks import block_outputs, block_queries
from s2s.attention.cache import AttentionCache
from s2s.attention.config import AttentionConfig
from s2s.attention.ops import cascade_attention, latent_views
from s2s.attention.positions import apply_rope
from s2s.attention.registry import register_attention


@dataclass
class GTAConfig(AttentionConfig):
    """gta: n_kv_heads = G tied heads (0: n_heads // 2, 4 at H = 8), dividing n_heads;
    head_dim % 4 == 0 (the RoPE half d_h/2 must be even)."""

    type: str = "gta"
    n_kv_heads: int = 0

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> GTAConfig:
        done = super().resolved(d_model, n_heads)
        done = replace(done, n_kv_heads=done.n_kv_heads or max(1, done.n_heads // 2))
        g = done.n_kv_heads
        if g < 1 or done.n_heads % g or done.head_dim % 4:
            raise ValueError(
                f"gta needs n_kv_heads >= 1 dividing n_heads and head_dim % 4 == 0; got "
                f"n_kv_heads={g}, n_heads={done.n_heads}, head_dim={done.head_dim}"
            )
        return done


@register_attention("gta", GTAConfig)
class GroupedTiedAttention(DecoderSelfAttention):
    """GTA. Cache buffer "kv": (B, S, G·d_h + d_h/2) = [tied heads ; rotated half-key]."""

    def __init__(self, cfg: GTAConfig) -> None:
        super().__init__(cfg)
        H, G, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim, self.half = H, G, D, D // 2
        self.q_proj = nn.Linear(cfg.d_model, H * D)
        self.kv_proj = nn.Linear(cfg.d_model, G * D + D // 2)  # [KV_0..KV_{G-1} ; k_r]
        self.out_proj = nn.Linear(H * D, cfg.d_model)
        self.register_buffer("group_of", torch.arange(H) // (H // G), persistent=False)
        self.scale = D**-0.5

    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"kv": (self.n_kv * self.head_dim + self.half,)}

    def queries(self, x: Tensor, pos: Tensor) -> Tensor:
        """(B, L, d) -> [q_nope ; rope(q_rope)] (B, L, H, d_h)."""
        B, L, _ = x.shape
        q_nope, q_rope = self.q_proj(x).view(B, L, self.n_heads, -1).split(self.half, dim=-1)
        return torch.cat((q_nope, apply_rope(q_rope, pos, self.cfg.rope_base)), -1)

    def slots(self, y: Tensor, pos: Tensor) -> dict[str, Tensor]:
        """{"kv": [tied heads ; rotated half-key]} (B, T, G·d_h + d_h/2)."""
        kv, k_r = self.kv_proj(y).split((self.n_kv * self.head_dim, self.half), dim=-1)
        return {"kv": torch.cat((kv, apply_rope(k_r, pos, self.cfg.rope_base)), -1)}

    def attend(
        self, q: Tensor, slots: dict[str, Tensor], q_pos: Tensor, lengths: Tensor | None
    ) -> Tensor:
        kv, k_r = slots["kv"].split((self.n_kv * self.head_dim, self.half), dim=-1)
        v = kv.unflatten(-1, (self.n_kv, self.head_dim))  # (B, T, G, d_h)
        k = torch.cat((v[..., : self.half], k_r[:, :, None].expand_as(v[..., self.half :])), -1)
        return self.out_proj(self.parallel(q, k, v, q_pos, lengths))

    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        pos = cache.length
        q_nope, q_rope = self.queries(x, pos[:, None])[:, 0].split(self.half, dim=-1)
        cache.write("kv", pos, self.slots(x, pos[:, None])["kv"][:, 0])
        cache.advance()
        # q_nope sits in the first half of its group's block; the block's second half (value
        # only) meets zeros.
        q_blk = torch.cat((q_nope, torch.zeros_like(q_nope)), -1)  # (N, H, d_h)
        q_full = torch.cat((block_queries(q_blk, self.group_of, self.n_kv), q_rope), -1)
        o = cascade_attention(q_full, cache, *latent_views(self.n_kv * self.head_dim), self.scale)
        out = block_outputs(o, self.group_of, self.head_dim)  # (N, H, d_h)
        return self.out_proj(out.flatten(1))[:, None]
