"""Structured config for decoder self-attention (read through OmegaConf)."""

from __future__ import annotations

from dataclasses import dataclass, replace

VARIANTS = ("mha", "mqa", "gqa", "mla", "mtla")
BACKENDS = ("auto", "sdpa", "flex")


@dataclass
class AttentionConfig:
    """Decoder self-attention hyper-parameters (DESIGN §3 notation).

    type: one of VARIANTS. d_model: width d. n_heads: query heads H. head_dim: d_h (0: d / H).
    Inside a decoder config leave d_model and n_heads at 0: they are taken from the decoder
    (`resolved`), so a YAML file never states them twice.
    n_kv_heads: key/value heads G for gqa (mha uses H, mqa uses 1; 0 = the variant's default).
    latent_dim: r (mla/mtla). rope_dim: decoupled RoPE width d_r (mla/mtla).
    stride: s, the temporal merge factor of mtla (1 = no merging).
    backend: parallel-forward kernel: "sdpa" (boolean mask), "flex" (flex_attention with a
    mask_mod), "auto" = flex on CUDA, sdpa elsewhere.
    """

    type: str = "mha"
    d_model: int = 0
    n_heads: int = 0
    head_dim: int = 0
    n_kv_heads: int = 0
    latent_dim: int = 256
    rope_dim: int = 32
    stride: int = 2
    dropout: float = 0.0
    rope_base: float = 10000.0
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.type not in VARIANTS:
            raise ValueError(f"attention type {self.type!r} unknown; choose one of {VARIANTS}")
        if self.backend not in BACKENDS:
            raise ValueError(
                f"attention backend {self.backend!r} unknown; choose one of {BACKENDS}"
            )
        if self.stride < 1:
            raise ValueError(f"attention stride must be >= 1, got {self.stride}")
        for name in ("d_model", "n_heads", "head_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"attention {name} must be >= 0, got {getattr(self, name)}")
        if self.head_dim % 2:
            raise ValueError(f"attention head_dim must be even for RoPE, got {self.head_dim}")
        if self.type in ("mla", "mtla"):
            if self.latent_dim < 1 or self.rope_dim < 2 or self.rope_dim % 2:
                raise ValueError(
                    f"{self.type} needs latent_dim >= 1 and an even rope_dim >= 2, "
                    f"got latent_dim={self.latent_dim}, rope_dim={self.rope_dim}"
                )
            if self.type == "mtla" and self.stride > 1 and self.latent_dim % 4:
                raise ValueError(
                    f"mtla's hyper-network needs latent_dim % 4 == 0, got {self.latent_dim}"
                )
        if self.type == "gqa" and self.n_heads:
            g = self.kv_heads
            if not 1 < g < self.n_heads or self.n_heads % g:
                raise ValueError(
                    f"gqa needs 1 < n_kv_heads < n_heads, dividing n_heads; "
                    f"got {g} for n_heads={self.n_heads}"
                )

    @property
    def kv_heads(self) -> int:
        """G: the number of key/value heads actually used by mha/mqa/gqa."""
        if self.type == "mqa":
            return 1
        if self.type == "gqa":
            return self.n_kv_heads or max(2, self.n_heads // 4)
        return self.n_heads

    def resolved(self, d_model: int = 0, n_heads: int = 0) -> AttentionConfig:
        """A complete copy: d_model / n_heads from the enclosing module where unset here, and
        head_dim = d_model // n_heads where unset. Conflicting explicit values are an error."""
        fields = {}
        for name, outer in (("d_model", d_model), ("n_heads", n_heads)):
            own = getattr(self, name)
            if own and outer and own != outer:
                raise ValueError(f"attention.{name}={own} conflicts with the decoder's {outer}")
            fields[name] = own or outer
            if not fields[name]:
                raise ValueError(f"attention.{name} is not set (and no decoder to inherit it from)")
        if fields["d_model"] % fields["n_heads"] and not self.head_dim:
            raise ValueError(
                f"d_model {fields['d_model']} not divisible by n_heads {fields['n_heads']}"
            )
        fields["head_dim"] = self.head_dim or fields["d_model"] // fields["n_heads"]
        return replace(self, **fields)
