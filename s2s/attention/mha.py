"""Multi-head attention with G key/value heads: MHA (G = H), GQA (1 < G < H), MQA (G = 1).

RoPE on queries and keys. Cache per token: 2 * G * d_h elements.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from s2s.attention.base import DecoderSelfAttention
from s2s.attention.cache import AttentionCache
from s2s.attention.config import AttentionConfig
from s2s.attention.ops import cascade_attention
from s2s.attention.positions import apply_rope
from s2s.attention.registry import register_attention


def head_keys(buffers: dict[str, Tensor]) -> Tensor:
    return buffers["k"]


def head_values(buffers: dict[str, Tensor]) -> Tensor:
    return buffers["v"]


def head_layout_step(attn: DecoderSelfAttention, x: Tensor, cache: AttentionCache) -> Tensor:
    """The decode step of a variant whose slots are G-head keys "k" and values "v" (MHA, GQA,
    MQA, MFA): write the token's slots, attend through the cache, project. x: (B, 1, d) ->
    (B, 1, d)."""
    pos = cache.length[:, None]
    q, kv = attn.queries(x, pos), attn.slots(x, pos)
    for name, val in kv.items():
        cache.write(name, cache.length, val[:, 0])
    cache.advance()
    out = cascade_attention(q[:, 0], cache, head_keys, head_values, attn.scale)
    return attn.out_proj(out.flatten(1))[:, None]


@dataclass
class MHAConfig(AttentionConfig):
    """mha: one key/value head per query head (G = H)."""

    type: str = "mha"

    @property
    def kv_heads(self) -> int:
        return self.n_heads


@dataclass
class MQAConfig(AttentionConfig):
    """mqa: one key/value head shared by every query head (G = 1)."""

    type: str = "mqa"

    @property
    def kv_heads(self) -> int:
        return 1


@dataclass
class GQAConfig(AttentionConfig):
    """gqa: n_kv_heads = G key/value heads, 1 < G < H, dividing H (0: max(2, H // 4))."""

    type: str = "gqa"
    n_kv_heads: int = 0

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or max(2, self.n_heads // 4)

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> GQAConfig:
        done = super().resolved(d_model, n_heads)
        g = done.kv_heads
        if not 1 < g < done.n_heads or done.n_heads % g:
            raise ValueError(
                f"gqa needs 1 < n_kv_heads < n_heads, dividing n_heads; "
                f"got {g} for n_heads={done.n_heads}"
            )
        return done


@register_attention("gqa", GQAConfig)
@register_attention("mqa", MQAConfig)
@register_attention("mha", MHAConfig)
class GroupedQueryAttention(DecoderSelfAttention):
    """MHA / GQA / MQA through the number of key/value heads `cfg.kv_heads`."""

    def __init__(self, cfg: MHAConfig | MQAConfig | GQAConfig) -> None:
        super().__init__(cfg)
        H, G, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = H, G, D
        self.q_proj = nn.Linear(cfg.d_model, H * D)
        self.kv_proj = nn.Linear(cfg.d_model, 2 * G * D)
        self.out_proj = nn.Linear(H * D, cfg.d_model)
        self.scale = D**-0.5

    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"k": (self.n_kv, self.head_dim), "v": (self.n_kv, self.head_dim)}

    def queries(self, x: Tensor, pos: Tensor) -> Tensor:
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim)
        return apply_rope(q, pos, self.cfg.rope_base)

    def slots(self, y: Tensor, pos: Tensor) -> dict[str, Tensor]:
        """{"k": rotated keys, "v": values}, each (B, T, G, D)."""
        B, T, _ = y.shape
        k, v = self.kv_proj(y).view(B, T, 2, self.n_kv, self.head_dim).unbind(2)
        return {"k": apply_rope(k, pos, self.cfg.rope_base), "v": v}

    def attend(
        self, q: Tensor, slots: dict[str, Tensor], q_pos: Tensor, lengths: Tensor | None
    ) -> Tensor:
        return self.out_proj(self.parallel(q, slots["k"], slots["v"], q_pos, lengths))

    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        return head_layout_step(self, x, cache)
