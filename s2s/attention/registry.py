"""Variant name -> (attention class, its config class): the one place variants register, and
the builder the decoder calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig

from s2s.attention.config import CONFIG_CLASSES, AttentionConfig, attention_config

ATTENTION_REGISTRY: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_attention(name: str, config: type[AttentionConfig]) -> Callable[[T], T]:
    """Class decorator: `@register_attention("mla", MLAConfig)` makes `type: mla` build it."""

    def add(cls: T) -> T:
        if name in ATTENTION_REGISTRY:
            raise ValueError(f"attention type {name!r} registered twice")
        ATTENTION_REGISTRY[name] = cls
        CONFIG_CLASSES[name] = config
        return cls

    return add


def build_attention(
    cfg: AttentionConfig | DictConfig | Mapping[str, Any], d_model: int = 0, n_heads: int = 0
):
    """Instantiate the variant named by cfg.type; d_model / n_heads fill unset fields (a
    decoder passes its own). A mapping is validated against the variant's config first."""
    cfg = attention_config(cfg).resolved(d_model, n_heads)
    return ATTENTION_REGISTRY[cfg.type](cfg)
