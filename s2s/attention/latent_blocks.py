"""MLRA and GLA: MLA whose latent is split into blocks, each with its own RMSNorm and its own
up-projections, so each block can live on its own tensor-parallel rank (docs/attention.md).

The latent c ∈ R^r is split into n blocks of r/n, block b normalised as
RMSNorm_b(c_b) · √(d / (r/n)) (the authors' scale). Queries are MLA's
[q_nope (d_h) ; rope(q_rope) (d_r)], the RoPE key k_rope (d_r) is shared by every block and
head, and the cache is MLA's [c ; rope(k_rope)]: r + d_r per token.

- mlra (Multi-Head Low-Rank Attention, arXiv 2603.02188, SongtaoLiu0823/MLRA's MLRA-4): every
  head h attends every block b with its own softmax over keys [c_b W_uk,b,h ; k_rope] and
  values c_b W_uv,b,h; the n outputs are summed and scaled by 1/√n.
- gla (Grouped Latent Attention, arXiv 2505.21487): n = h_c latent heads; head h reads only
  block g(h) = h // (H / h_c), one softmax per head.

Both are written as P (head, block) pairs, p = i·H + h: mlra has P = n·H with block(p) = i,
gla P = H with block(p) = g(h). Training expands per-pair keys/values and runs one parallel
attention over P heads; decoding absorbs W_uk,p into the query (a query in block b(p)'s
columns of the slot, blocks.py), attends the latent cache as MLA does, and applies W_uv,p to
block b(p) of the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from s2s.attention.blocks import block_outputs, block_queries
from s2s.attention.cache import AttentionCache
from s2s.attention.mla import LatentAttention, MLAConfig
from s2s.attention.ops import cascade_attention, latent_views
from s2s.attention.registry import register_attention


@dataclass
class MLRAConfig(MLAConfig):
    """mlra: MLA's latent_dim (r) and rope_dim (d_r), split into `blocks` blocks (4: MLRA-4)."""

    type: str = "mlra"
    blocks: int = 4

    @property
    def n_blocks(self) -> int:
        return self.blocks

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> MLRAConfig:
        done = super().resolved(d_model, n_heads)
        if done.blocks < 1 or done.latent_dim % done.blocks:
            raise ValueError(
                f"mlra needs blocks >= 1 dividing latent_dim; "
                f"got blocks={done.blocks}, latent_dim={done.latent_dim}"
            )
        return done


@dataclass
class GLAConfig(MLAConfig):
    """gla: MLA's latent_dim (r) and rope_dim (d_r), r split into latent_heads = h_c latent
    heads of r / h_c (2 · d_h at the paper's size), each read by H / h_c query heads."""

    type: str = "gla"
    latent_heads: int = 2

    @property
    def n_blocks(self) -> int:
        return self.latent_heads

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> GLAConfig:
        done = super().resolved(d_model, n_heads)
        h_c = done.latent_heads
        if h_c < 1 or done.latent_dim % h_c or done.n_heads % h_c:
            raise ValueError(
                f"gla needs latent_heads >= 1 dividing latent_dim and n_heads; got "
                f"latent_heads={h_c}, latent_dim={done.latent_dim}, n_heads={done.n_heads}"
            )
        return done


class BlockRMSNorm(nn.Module):
    """RMSNorm per block of the last dim, times √(d / block_dim). (..., n·w) -> (..., n·w)."""

    def __init__(self, n_blocks: int, block_dim: int, d_model: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.RMSNorm(block_dim) for _ in range(n_blocks))
        self.block_dim = block_dim
        self.gain = math.sqrt(d_model / block_dim)

    def forward(self, c: Tensor) -> Tensor:
        parts = c.split(self.block_dim, dim=-1)
        return torch.cat([norm(p) for norm, p in zip(self.norms, parts)], -1) * self.gain


class BlockLatentAttention(LatentAttention):
    """MLA's queries, latent and cache ("kv": (B, S, r + d_r)); keys/values per (head, block)
    pair. Subclasses say which pairs exist and how their outputs combine."""

    def __init__(self, cfg: MLRAConfig | GLAConfig, block_of: Tensor, out_scale: float) -> None:
        super().__init__(cfg)
        D, n = cfg.head_dim, cfg.n_blocks
        self.n_blocks, self.block_dim = n, cfg.latent_dim // n
        self.kv_norm = BlockRMSNorm(n, self.block_dim, cfg.d_model)
        # Per-pair up-projections (P, d_h, r/n) replace MLA's; bias-free so absorption is exact.
        del self.uk_proj, self.uv_proj
        P = block_of.numel()
        bound = self.block_dim**-0.5  # nn.Linear's default init for fan-in r/n
        self.uk = nn.Parameter(torch.empty(P, D, self.block_dim).uniform_(-bound, bound))
        self.uv = nn.Parameter(torch.empty(P, D, self.block_dim).uniform_(-bound, bound))
        self.register_buffer("block_of", block_of, persistent=False)
        self.out_scale = out_scale

    def _pairs(self, c_hat: Tensor) -> Tensor:
        """c_hat (B, T, r) -> each pair's block (B, T, P, r/n)."""
        return c_hat.unflatten(-1, (self.n_blocks, self.block_dim))[:, :, self.block_of]

    def _combine(self, out: Tensor) -> Tensor:
        """Per-pair outputs (..., P, d_h), p = i·H + h -> per-head (..., H * d_h)."""
        per_head = out.unflatten(-2, (-1, self.n_heads)).sum(-3) * self.out_scale
        return per_head.flatten(-2)

    def attend(
        self, q: Tensor, slots: dict[str, Tensor], q_pos: Tensor, lengths: Tensor | None
    ) -> Tensor:
        c_hat, k_rope = slots["kv"].split((self.latent_dim, self.rope_dim), dim=-1)
        cb = self._pairs(c_hat)  # (B, T, P, r/n)
        P = cb.shape[2]
        k_nope = torch.einsum("btpr,pdr->btpd", cb, self.uk)
        k = torch.cat((k_nope, k_rope[:, :, None].expand(-1, -1, P, -1)), -1)
        v = torch.einsum("btpr,pdr->btpd", cb, self.uv)
        qp = q.repeat(1, 1, P // self.n_heads, 1)  # pair p reads head p % H's query
        out = self.parallel(qp, k, v, q_pos, lengths).unflatten(-1, (P, self.head_dim))
        return self.out_proj(self._combine(out))

    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        D, R = self.head_dim, self.latent_dim
        pos = cache.length
        q_nope, q_rope = self.queries(x, pos[:, None])[:, 0].split((D, self.rope_dim), dim=-1)
        c, k_rope = self._latent(x, pos[:, None])
        cache.write("kv", pos, torch.cat((c[:, 0], k_rope[:, 0]), -1))
        cache.advance()
        P = self.block_of.numel()
        reps = P // self.n_heads
        # Absorb W_uk,p: q_nope,h . (c_b W_uk,p) == (W_uk,p q_nope,h) . c_b, in block b's columns.
        q_lat = torch.einsum("npd,pdr->npr", q_nope.repeat(1, reps, 1), self.uk)
        q_full = torch.cat(
            (block_queries(q_lat, self.block_of, self.n_blocks), q_rope.repeat(1, reps, 1)), -1
        )  # (N, P, r + d_r)
        o_lat = cascade_attention(q_full, cache, *latent_views(R), self.scale)
        o_b = block_outputs(o_lat, self.block_of, self.block_dim)  # (N, P, r/n)
        out = torch.einsum("npr,pdr->npd", o_b, self.uv)
        return self.out_proj(self._combine(out))[:, None]


@register_attention("mlra", MLRAConfig)
class MultiHeadLowRankAttention(BlockLatentAttention):
    """MLRA: every head attends every block; outputs summed, times 1/√n."""

    def __init__(self, cfg: MLRAConfig) -> None:
        H, n = cfg.n_heads, cfg.blocks
        super().__init__(cfg, torch.arange(n).repeat_interleave(H), n**-0.5)


@register_attention("gla", GLAConfig)
class GroupedLatentAttention(BlockLatentAttention):
    """GLA: head h reads latent head h // (H / h_c) only."""

    def __init__(self, cfg: GLAConfig) -> None:
        H, h_c = cfg.n_heads, cfg.latent_heads
        super().__init__(cfg, torch.arange(H) // (H // h_c), 1.0)
