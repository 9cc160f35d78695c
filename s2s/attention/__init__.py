"""Decoder self-attention variants behind one interface (see base.py), their masks and caches."""

from s2s.attention.base import DecoderSelfAttention
from s2s.attention.cache import AttentionCache
from s2s.attention.config import VARIANTS, AttentionConfig
from s2s.attention.masks import stride_aware_causal_mask
from s2s.attention.registry import ATTENTION_REGISTRY, build_attention

__all__ = [
    "ATTENTION_REGISTRY",
    "VARIANTS",
    "AttentionCache",
    "AttentionConfig",
    "DecoderSelfAttention",
    "build_attention",
    "stride_aware_causal_mask",
]
