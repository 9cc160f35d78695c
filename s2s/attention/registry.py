"""Config name -> attention class, and the builder the decoder calls."""

from __future__ import annotations

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


def build_attention(cfg: AttentionConfig) -> DecoderSelfAttention:
    """Instantiate the variant named by cfg.type (cfg may be a DictConfig of AttentionConfig)."""
    if not isinstance(cfg, AttentionConfig):
        from omegaconf import OmegaConf

        cfg = (
            AttentionConfig(**OmegaConf.to_container(cfg, resolve=True))
            if not isinstance(cfg, dict)
            else AttentionConfig(**cfg)
        )
    return ATTENTION_REGISTRY[cfg.type](cfg)
