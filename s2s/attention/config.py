"""Structured configs for decoder self-attention (read through OmegaConf; docs/attention.md).

`AttentionConfig` holds the fields every variant takes; each variant declares its own subclass
(the fields it uses, their defaults, their checks) beside its module and registers class and
config together (registry.py). A key the chosen variant does not use is an error naming both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

BACKENDS = ("auto", "sdpa", "flex")


@dataclass
class AttentionConfig:
    """Fields of every variant (docs/attention.md notation).

    type: the registered variant name. d_model: width d. n_heads: query heads H. head_dim: d_h
    (0: d / H). Inside a decoder config leave d_model and n_heads at 0: they are taken from the
    decoder (`resolved`), so a YAML file never states them twice. backend: parallel-forward
    kernel: "sdpa" (boolean mask), "flex" (flex_attention with a mask_mod), "auto" = flex on
    CUDA, sdpa elsewhere.
    """

    type: str = "mha"
    d_model: int = 0
    n_heads: int = 0
    head_dim: int = 0
    dropout: float = 0.0
    rope_base: float = 10000.0
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"attention backend {self.backend!r} unknown; choose one of {BACKENDS}"
            )
        for name in ("d_model", "n_heads", "head_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"attention {name} must be >= 0, got {getattr(self, name)}")
        if self.head_dim % 2:
            raise ValueError(f"attention head_dim must be even for RoPE, got {self.head_dim}")

    @property
    def stride(self) -> int:
        """Tokens merged into one cache slot: 1 unless the variant merges (MTLA)."""
        return 1

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> AttentionConfig:
        """A complete copy: d_model / n_heads from the enclosing module where unset here, and
        head_dim = d_model // n_heads where unset. Conflicting explicit values are an error."""
        values = {}
        for name, outer in (("d_model", d_model), ("n_heads", n_heads)):
            own = getattr(self, name)
            if own and outer and own != outer:
                raise ValueError(f"attention.{name}={own} conflicts with the decoder's {outer}")
            values[name] = own or outer
            if not values[name]:
                raise ValueError(f"attention.{name} is not set (and no decoder to inherit it from)")
        if values["d_model"] % values["n_heads"] and not self.head_dim:
            raise ValueError(
                f"d_model {values['d_model']} not divisible by n_heads {values['n_heads']}"
            )
        values["head_dim"] = self.head_dim or values["d_model"] // values["n_heads"]
        done = replace(self, **values)
        done.check_resolved()
        return done

    def check_resolved(self) -> None:
        """Checks that need the decoder's sizes; variants extend it."""


#: variant name -> its config class; filled by registry.register_attention
CONFIG_CLASSES: dict[str, type[AttentionConfig]] = {}


def _config_class(name: str) -> type[AttentionConfig]:
    if name not in CONFIG_CLASSES:
        raise ValueError(f"attention type {name!r} unknown; choose one of {tuple(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[name]


def attention_config(cfg: AttentionConfig | Mapping[str, Any] | DictConfig) -> AttentionConfig:
    """The chosen variant's own config from a mapping with a `type` key (a YAML section).
    A key that variant does not use is an error naming the variant and the key."""
    if isinstance(cfg, AttentionConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    values = dict(cfg)
    name = values.get("type", AttentionConfig.type)
    cls = _config_class(name)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"attention type {name!r} does not use {', '.join(map(repr, unknown))}; "
            f"its keys are {sorted(known)}"
        )
    return cls(**values)


def sweep_config(name: str, **candidates: Any) -> AttentionConfig:
    """A variant's config from the keyword arguments it uses, ignoring the others: for sweeps
    (benchmarks, tests) where one set of sizes serves every variant. Configs read from files
    go through the strict `attention_config`."""
    known = {f.name for f in fields(_config_class(name))}
    return attention_config({"type": name, **{k: v for k, v in candidates.items() if k in known}})
