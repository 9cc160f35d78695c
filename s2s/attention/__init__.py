"""Decoder self-attention variants behind one interface (see base.py), their masks and caches.

Importing the package registers every variant (registry.py); VARIANTS lists their names."""

# Import order is registration order, the order of VARIANTS: the baselines first.
# isort: off
from s2s.attention import mha, mla, mtla  # noqa: F401  (each registers its variants)
from s2s.attention import mfa, latent_blocks, gta  # noqa: F401
# isort: on

from s2s.attention.base import DecoderSelfAttention
from s2s.attention.cache import AttentionCache
from s2s.attention.config import AttentionConfig, attention_config, sweep_config
from s2s.attention.masks import stride_aware_causal_mask
from s2s.attention.registry import ATTENTION_REGISTRY, build_attention, register_attention

VARIANTS = tuple(ATTENTION_REGISTRY)

__all__ = [
    "ATTENTION_REGISTRY",
    "VARIANTS",
    "AttentionCache",
    "AttentionConfig",
    "DecoderSelfAttention",
    "attention_config",
    "build_attention",
    "register_attention",
    "stride_aware_causal_mask",
    "sweep_config",
]
