"""Multi-head attention with G key/value heads: MHA (G = H), GQA (1 < G < H), MQA (G = 1).

RoPE on queries and keys. Cache per token: 2 * G * d_h elements.
"""

from __future__ import annotations

from torch import Tensor, nn

from s2s.attention.base import DecoderSelfAttention, positions_like, zero_padding
from s2s.attention.cache import AttentionCache
from s2s.attention.config import AttentionConfig
from s2s.attention.ops import cached_attention, parallel_attention
from s2s.attention.positions import apply_rope


class GroupedQueryAttention(DecoderSelfAttention):
    """MHA / GQA / MQA through the number of key/value heads `cfg.kv_heads`."""

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__(cfg)
        H, G, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = H, G, D
        self.q_proj = nn.Linear(cfg.d_model, H * D)
        self.kv_proj = nn.Linear(cfg.d_model, 2 * G * D)
        self.out_proj = nn.Linear(H * D, cfg.d_model)
        self.scale = D**-0.5

    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"k": (self.n_kv, self.head_dim), "v": (self.n_kv, self.head_dim)}

    def _qkv(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, T, d), pos: (B, T) -> q (B, T, H, D), k, v (B, T, G, D), RoPE applied."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k, v = self.kv_proj(x).view(B, T, 2, self.n_kv, self.head_dim).unbind(2)
        base = self.cfg.rope_base
        return apply_rope(q, pos, base), apply_rope(k, pos, base), v

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, cache: AttentionCache | None = None
    ) -> Tensor:
        q, k, v = self._qkv(x, positions_like(x))
        out = parallel_attention(
            q,
            k,
            v,
            scale=self.scale,
            lengths=lengths,
            dropout=self.cfg.dropout if self.training else 0.0,
            backend=self.cfg.backend,
        )
        if cache is not None:
            B, T = x.shape[:2]
            full = lengths if lengths is not None else x.new_full((B,), T, dtype=cache.length.dtype)
            cache.fill_prefix({"k": k, "v": v}, full)
        return zero_padding(self.out_proj(out.flatten(2)), lengths)

    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        pos = cache.length[:, None]
        q, k, v = self._qkv(x, pos)
        cache.write("k", cache.length, k[:, 0])
        cache.write("v", cache.length, v[:, 0])
        cache.advance()
        k_buf, v_buf = cache.buffers["k"], cache.buffers["v"]
        out = cached_attention(q[:, 0], k_buf, v_buf, cache.owner, cache.num_slots(), self.scale)
        return self.out_proj(out.flatten(1))[:, None]
