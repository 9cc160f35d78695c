"""Config name -> attention class, and the builder the decoder calls."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from s2s.attention.base import DecoderSelfAttention
from s2s.attention.config import AttentionConfig
from s2s.attention.mha import GroupedQueryAttention
from s2s.attention.mla import LatentAttention
from s2s.attention.mtla import TemporalLatentAttention

ATTENTION_REGISTRY: dict[str, type[DecoderSelfAttention]] = {
    "mha": GroupedQueryAttention,
    "mqa": GroupedQueryAttention,
    "gqa": GroupedQueryAttention,
    "mla": LatentAttention,
    "mtla": TemporalLatentAttention,
}


def build_attention(
    cfg: AttentionConfig | DictConfig | dict, d_model: int = 0, n_heads: int = 0
) -> DecoderSelfAttention:
    """Instantiate the variant named by cfg.type; d_model / n_heads fill unset fields (a
    decoder passes its own). A DictConfig is converted (and so validated) first."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(cfg)
    elif isinstance(cfg, dict):
        cfg = AttentionConfig(**cfg)
    cfg = cfg.resolved(d_model, n_heads)
    return ATTENTION_REGISTRY[cfg.type](cfg)
