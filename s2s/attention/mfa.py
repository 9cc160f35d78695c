"""MFA and MFA-KR: multi-matrix factorization attention (arXiv 2412.19255; docs/attention.md).

m wide query heads (width C) through a factorised query projection, q̄ = RMSNorm(x W_qa) ∈
R^{C_q}, q_h = RoPE(q̄ W_qb,h), attending one shared key head k = RoPE(x W_k) ∈ R^C and one
shared value head: MQA with many wide heads, in the G-head cache layout with G = 1.

- mfa: the value head is its own projection v = x W_v. Cache [k ; v]: 2C per token.
- mfa_kr (key reuse): only the un-rotated key k̃ = x W_k is cached; values are re-made from
  it, v = k̃ + α ⊙ (N k̃) = M k̃ with α initialised to 0 (training starts from v = k̃). Keys
  are RoPE(k̃), values come from the pre-RoPE k̃ (ours: rotating first would make v depend on
  the position). Decoding attends with values k̃ and applies M after the attention (linear, so
  Σ_j p_j M k̃_j = M Σ_j p_j k̃_j), rotating the cached keys as it reads them. Cache C per token.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from s2s.attention.base import DecoderSelfAttention
from s2s.attention.cache import AttentionCache
from s2s.attention.config import AttentionConfig
from s2s.attention.mha import head_keys, head_layout_step
from s2s.attention.ops import cascade_attention, slots_in_use
from s2s.attention.positions import apply_rope
from s2s.attention.registry import register_attention


@dataclass
class MFAConfig(AttentionConfig):
    """mfa: query_heads = m (0: n_heads), kv_dim = C (0: 2 * head_dim), query_rank = C_q
    (0: d_model // 2): m = 8, C = 128, C_q = 256 at d = 512, H = 8, d_h = 64."""

    type: str = "mfa"
    query_heads: int = 0
    kv_dim: int = 0
    query_rank: int = 0

    def default_heads(self) -> int:
        return self.n_heads

    def default_kv_dim(self) -> int:
        return 2 * self.head_dim

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> MFAConfig:
        done = super().resolved(d_model, n_heads)
        done = replace(
            done,
            query_heads=done.query_heads or done.default_heads(),
            kv_dim=done.kv_dim or done.default_kv_dim(),
            query_rank=done.query_rank or done.d_model // 2,
        )
        if min(done.query_heads, done.query_rank) < 1 or done.kv_dim < 2 or done.kv_dim % 2:
            raise ValueError(
                f"{done.type} needs query_heads >= 1, query_rank >= 1 and an even kv_dim "
                f"(RoPE); got query_heads={done.query_heads}, query_rank={done.query_rank}, "
                f"kv_dim={done.kv_dim}"
            )
        return done


@dataclass
class MFAKRConfig(MFAConfig):
    """mfa_kr: MFA's keys; defaults m = n_heads // 2, C = 4 * head_dim (m = 4, C = 256 at the
    paper's size: the same m * C as mfa)."""

    type: str = "mfa_kr"

    def default_heads(self) -> int:
        return max(1, self.n_heads // 2)

    def default_kv_dim(self) -> int:
        return 4 * self.head_dim


@register_attention("mfa", MFAConfig)
class FactorizedAttention(DecoderSelfAttention):
    """MFA. Cache buffers "k" (rotated) and "v": (B, S, 1, C)."""

    def __init__(self, cfg: MFAConfig) -> None:
        super().__init__(cfg)
        M, C = cfg.query_heads, cfg.kv_dim
        self.n_heads, self.kv_dim = M, C
        self.q_a = nn.Linear(cfg.d_model, cfg.query_rank, bias=False)
        self.q_norm = nn.RMSNorm(cfg.query_rank)
        self.q_b = nn.Linear(cfg.query_rank, M * C, bias=False)
        self.kv_proj = nn.Linear(cfg.d_model, self.kv_width())
        self.out_proj = nn.Linear(M * C, cfg.d_model)
        self.scale = C**-0.5

    def kv_width(self) -> int:
        """Output width of the key/value projection: [k ; v]."""
        return 2 * self.kv_dim

    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"k": (1, self.kv_dim), "v": (1, self.kv_dim)}

    def queries(self, x: Tensor, pos: Tensor) -> Tensor:
        """(B, L, d) -> (B, L, m, C), RoPE over the whole head."""
        B, L, _ = x.shape
        q = self.q_b(self.q_norm(self.q_a(x))).view(B, L, self.n_heads, self.kv_dim)
        return apply_rope(q, pos, self.cfg.rope_base)

    def slots(self, y: Tensor, pos: Tensor) -> dict[str, Tensor]:
        """{"k": rotated key, "v": value}, each (B, T, 1, C)."""
        k, v = self.kv_proj(y)[:, :, None].split(self.kv_dim, dim=-1)
        return {"k": apply_rope(k, pos, self.cfg.rope_base), "v": v}

    def attend(
        self, q: Tensor, slots: dict[str, Tensor], q_pos: Tensor, lengths: Tensor | None
    ) -> Tensor:
        return self.out_proj(self.parallel(q, slots["k"], slots["v"], q_pos, lengths))

    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        return head_layout_step(self, x, cache)


@register_attention("mfa_kr", MFAKRConfig)
class FactorizedKeyReuseAttention(FactorizedAttention):
    """MFA-KR. Cache buffer "k": (B, S, 1, C), the un-rotated key k̃."""

    def __init__(self, cfg: MFAKRConfig) -> None:
        super().__init__(cfg)
        C = cfg.kv_dim
        self.v_mix = nn.Linear(C, C, bias=False)  # N
        self.v_gate = nn.Parameter(torch.zeros(C))  # α: v = k̃ at initialisation

    def kv_width(self) -> int:
        return self.kv_dim

    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"k": (1, self.kv_dim)}

    def values_of(self, k: Tensor) -> Tensor:
        """v = k̃ + α ⊙ (N k̃) over the last dim (also applied to an attention output)."""
        return k + self.v_gate * self.v_mix(k)

    def slots(self, y: Tensor, pos: Tensor) -> dict[str, Tensor]:
        """{"k": un-rotated key k̃} (B, T, 1, C): what the cache holds."""
        return {"k": self.kv_proj(y)[:, :, None]}

    def attend(
        self, q: Tensor, slots: dict[str, Tensor], q_pos: Tensor, lengths: Tensor | None
    ) -> Tensor:
        k_raw = slots["k"]
        pos = torch.arange(k_raw.shape[1], device=k_raw.device).expand(k_raw.shape[:2])
        k = apply_rope(k_raw, pos, self.cfg.rope_base)
        return self.out_proj(self.parallel(q, k, self.values_of(k_raw), q_pos, lengths))

    def step(self, x: Tensor, cache: AttentionCache) -> Tensor:
        pos = cache.length[:, None]
        q = self.queries(x, pos)
        cache.write("k", cache.length, self.slots(x, pos)["k"][:, 0])
        cache.advance()
        out = cascade_attention(q[:, 0], cache, self._rotated_keys(cache), head_keys, self.scale)
        return self.out_proj(self.values_of(out).flatten(1))[:, None]

    def _rotated_keys(self, cache: AttentionCache):
        """k_of for cascade_attention: the cached k̃ of a part rotated to its positions. Shared
        slot g holds position g; own slot j of row n holds position cache.base()[n] + j (rows
        of one utterance share their base, so an ancestry owner reads the right angle)."""

        def k_of(part: dict[str, Tensor]) -> Tensor:
            # (which part, told by its tensor: a compiled step traces no `is` between dicts)
            if part["k"] is cache.shared.get("k"):  # the same positions in every row: one table
                k, first = part["k"], cache.shared_slots.new_zeros(1)  # (U, S, 1, C)
            else:  # only the slots in use, not the whole allocation (cached_attention reads
                # no further than the rows' own_slots)
                k = part["k"][:, : slots_in_use(cache.own_slots(), part["k"].shape[1])]
                first = cache.base()
            slots = torch.arange(k.shape[1], device=k.device)
            pos = first[:, None] + slots[None, :]
            return apply_rope(k, pos, self.cfg.rope_base)

        return k_of
