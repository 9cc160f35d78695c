"""MLA: multi-head latent attention with decoupled RoPE (docs/attention.md).

Keys and values come from a normalised low-rank latent c (width r) shared by all heads, plus
one RoPE key k_rope (width d_r) shared by all heads. The cache holds [c ; k_rope]: r + d_r
elements per token. Decoding absorbs W_uk into the query and W_uv after the attention, so the
step attends MQA-style over the latent cache and never expands keys or values.

`LatentAttention` is written for a cache slot that covers `stride` tokens; MLA is stride 1 and
MTLA (mtla.py) overrides the two merge hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from s2s.attention.base import DecoderSelfAttention
from s2s.attention.cache import AttentionCache
from s2s.attention.config import AttentionConfig
from s2s.attention.ops import cascade_attention, latent_views
from s2s.attention.positions import apply_rope
from s2s.attention.registry import register_attention


@dataclass
class MLAConfig(AttentionConfig):
    """mla: latent_dim = r (0: d_model // 2), rope_dim = d_r (0: head_dim // 2), the paper's
    ratios (r = 256, d_r = 32 at d = 512, d_h = 64)."""

    type: str = "mla"
    latent_dim: int = 0
    rope_dim: int = 0

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> MLAConfig:
        done = super().resolved(d_model, n_heads)
        done = replace(
            done,
            latent_dim=done.latent_dim or done.d_model // 2,
            rope_dim=done.rope_dim or done.head_dim // 2,
        )
        if done.latent_dim < 1 or done.rope_dim < 2 or done.rope_dim % 2:
            raise ValueError(
                f"{done.type} needs latent_dim >= 1 and an even rope_dim >= 2, "
                f"got latent_dim={done.latent_dim}, rope_dim={done.rope_dim}"
            )
        return done


@register_attention("mla", MLAConfig)
class LatentAttention(DecoderSelfAttention):
    """MLA. Cache buffer "kv": (B, S, r + d_r) = [latent ; rotated rope key] per slot."""

    def __init__(self, cfg: MLAConfig) -> None:
        super().__init__(cfg)
        H, D, R, Dr = cfg.n_heads, cfg.head_dim, cfg.latent_dim, cfg.rope_dim
        self.n_heads, self.head_dim, self.latent_dim, self.rope_dim = H, D, R, Dr
        self.q_proj = nn.Linear(cfg.d_model, H * (D + Dr))
        self.dkv_proj = nn.Linear(cfg.d_model, R + Dr)
        self.kv_norm = nn.LayerNorm(R)
        # Bias-free up-projections: absorption into the query / after attention is exact.
        self.uk_proj = nn.Linear(R, H * D, bias=False)
        self.uv_proj = nn.Linear(R, H * D, bias=False)
        self.out_proj = nn.Linear(H * D, cfg.d_model)
        self.scale = (D + Dr) ** -0.5

    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"kv": (self.latent_dim + self.rope_dim,)}

    # --- merge hooks (MTLA overrides) -------------------------------------------------------
    def merge_parallel(self, c: Tensor, pos: Tensor) -> Tensor:
        """Partial slot content after each token. c: (B, T, r) -> (B, T, r)."""
        return c

    def step_slot(self, c: Tensor, k_rope: Tensor, cache: AttentionCache) -> Tensor:
        """The slot a decode step writes for the token at cache.length: c (B, r) latent,
        k_rope (B, Dr) rotated -> (B, r + Dr)."""
        return torch.cat((c, k_rope), -1)

    # --- the interface's pieces (base.py) -----------------------------------------------------
    def queries(self, x: Tensor, pos: Tensor) -> Tensor:
        """(B, L, d) -> [q_nope ; rotated q_rope] (B, L, H, D + Dr)."""
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim + self.rope_dim)
        q_nope, q_rope = q.split((self.head_dim, self.rope_dim), dim=-1)
        return torch.cat((q_nope, apply_rope(q_rope, pos, self.cfg.rope_base)), -1)

    def _latent(self, y: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, d) -> normalised latent c (B, T, r), rotated shared rope key (B, T, Dr)."""
        c, k_rope = self.dkv_proj(y).split((self.latent_dim, self.rope_dim), dim=-1)
        return self.kv_norm(c), apply_rope(k_rope, pos, self.cfg.rope_base)

    def slots(self, y: Tensor, pos: Tensor) -> dict[str, Tensor]:
        """{"kv": [partial merged latent ; rotated rope key of the latest token]} (B, T, r+Dr)."""
        c, k_rope = self._latent(y, pos)
        return {"kv": torch.cat((self.merge_parallel(c, pos), k_rope), -1)}

    def attend(
        self, q: Tensor, slots: dict[str, Tensor], q_pos: Tensor, lengths: Tensor | None
    ) -> Tensor:
        H, D = self.n_heads, self.head_dim
        c_hat, k_rope = slots["kv"].split((self.latent_dim, self.rope_dim), dim=-1)
        B, T, _ = c_hat.shape
        # Training expands keys/values per head; decoding (step) never does.
        k = torch.cat(
            (self.uk_proj(c_hat).view(B, T, H, D), k_rope[:, :, None].expand(-1, -1, H, -1)), -1
        )
        v = self.uv_proj(c_hat).view(B, T, H, D)
        return self.out_proj(self.parallel(q, k, v, q_pos, lengths))

    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        H, D, R = self.n_heads, self.head_dim, self.latent_dim
        pos = cache.length
        q_nope, q_rope = self.queries(x, pos[:, None])[:, 0].split((D, self.rope_dim), dim=-1)
        c, k_rope = self._latent(x, pos[:, None])
        cache.write("kv", pos // self.stride, self.step_slot(c[:, 0], k_rope[:, 0], cache))
        cache.advance()
        # Absorb W_uk: q_nope . (c W_uk,h) == (W_uk,h q_nope) . c, a query in latent space.
        w_uk = self.uk_proj.weight.view(H, D, R)
        q_lat = torch.einsum("bhd,hdr->bhr", q_nope, w_uk)
        q_full = torch.cat((q_lat, q_rope), -1)  # (B, H, R + Dr)
        o_lat = cascade_attention(q_full, cache, *latent_views(R), self.scale)
        # Absorb W_uv after the attention: sum_j p_j (c_j W_uv,h) == (sum_j p_j c_j) W_uv,h.
        out = torch.einsum("bhr,hdr->bhd", o_lat, self.uv_proj.weight.view(H, D, R))
        return self.out_proj(out.flatten(1))[:, None]
