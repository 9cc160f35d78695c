"""Encoder config and builder: a frontend (speech subsampling or token embedding) followed by a
Transformer or Conformer layer stack.

Every encoder is called as `encoder(x, lens) -> (out (B, T', d_model), out_lens (B,))`, with x
(B, T, F) float features for speech or (B, T) long token ids (pad 0) for text; frames of `out`
past `out_lens` are zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from s2s.data.tokenizer import PAD_ID
from s2s.models.conformer import conformer_stack
from s2s.models.subsampling import SUBSAMPLINGS, Frontend, build_frontend, min_input_dim
from s2s.models.transformer_encoder import POSITIONS, LayerStack, transformer_stack

ENCODER_TYPES = ("transformer", "conformer", "text")


@dataclass
class EncoderConfig:
    """type: "transformer" | "conformer" (speech) | "text" (token embedding + Transformer).
    subsampling: speech frontend (SUBSAMPLINGS), ignored for text. pos: "abs" | "rel" | "rotary".
    conv_kernel: Conformer depthwise kernel (odd). subsampling_channels: conv channels of the
    frontend (0 = d_model for conv2d, ffn_dim for conv1d).
    subsampling_norm: the conv2d frontends end with a LayerNorm, its gain started at 0.5 (it
    takes away the pull that kills their ReLU channels early in training: subsampling.py).
    vocab_size: text encoder's vocabulary (0 = take the one build_encoder is given, i.e. the
    tokenizer's)."""

    type: str = "transformer"
    input_dim: int = 80
    d_model: int = 256
    n_heads: int = 4
    ffn_dim: int = 1024
    n_layers: int = 6
    dropout: float = 0.1
    attn_dropout: float = 0.0
    subsampling: str = "conv2d4"
    subsampling_channels: int = 0
    subsampling_norm: bool = False
    pos: str = "abs"
    conv_kernel: int = 31
    vocab_size: int = 0

    def __post_init__(self) -> None:
        if self.type not in ENCODER_TYPES:
            raise ValueError(f"encoder type {self.type!r} not in {ENCODER_TYPES}")
        if self.subsampling not in SUBSAMPLINGS:
            raise ValueError(f"encoder subsampling {self.subsampling!r} not in {SUBSAMPLINGS}")
        if self.pos not in POSITIONS:
            raise ValueError(f"encoder pos {self.pos!r} not in {POSITIONS}")
        for name in ("d_model", "n_heads", "ffn_dim", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder {name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"encoder d_model {self.d_model} not divisible by {self.n_heads} heads"
            )
        if self.pos == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"rotary positions need an even head dim, got {self.d_model // self.n_heads}"
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"encoder {name} must be in [0, 1), got {getattr(self, name)}")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"encoder conv_kernel must be odd and >= 1, got {self.conv_kernel}")
        if self.subsampling_channels < 0:
            raise ValueError(
                f"encoder subsampling_channels must be >= 0, got {self.subsampling_channels}"
            )
        if self.subsampling_norm and not self.subsampling.startswith("conv2d"):
            raise ValueError(
                f"encoder subsampling_norm applies to the conv2d frontends, not "
                f"{self.subsampling!r}"
            )
        if self.vocab_size < 0:
            raise ValueError(f"encoder vocab_size must be >= 0, got {self.vocab_size}")
        if self.type != "text":
            need = min_input_dim(self.subsampling)
            if self.input_dim < need:
                raise ValueError(
                    f"encoder input_dim {self.input_dim} too small for subsampling "
                    f"{self.subsampling!r} (needs >= {need})"
                )


class TokenEmbedding(nn.Module):
    """Token ids (B, T) long, pad 0 -> (B, T, d_model); the stack scales it by sqrt(d_model)."""

    name = "text"
    min_input_length = 1
    subsampling_factor = 1

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 2 or x.is_floating_point():
            raise ValueError(
                f"text encoder expects token ids (B, T) long, got {x.dtype} {tuple(x.shape)}"
            )
        if lens.shape != (x.shape[0],):
            raise ValueError(f"lengths must have shape ({x.shape[0]},), got {tuple(lens.shape)}")
        if torch.compiler.is_exporting():  # lengths and ids are data when traced
            return self.embed(x), lens.clone()
        if lens.numel() and int(lens.min()) < 1:
            raise ValueError("text encoder: an input of 0 tokens; the minimum input length is 1")
        if lens.numel() and int(lens.max()) > x.shape[1]:
            raise ValueError(f"length {int(lens.max())} exceeds the padded length {x.shape[1]}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.embed.num_embeddings):
            raise ValueError(
                f"token ids must be in [0, {self.embed.num_embeddings}), got "
                f"[{int(x.min())}, {int(x.max())}]"
            )
        return self.embed(x), lens.clone()


class Encoder(nn.Module):
    """frontend (B, T[, F]) -> (B, T', d), then the layer stack. forward(x, lens) -> (out, lens)."""

    def __init__(self, frontend: Frontend | TokenEmbedding, stack: LayerStack) -> None:
        super().__init__()
        self.frontend = frontend
        self.stack = stack

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, F) float or (B, T) long; lens: (B,) -> (B, T', d), (B,)."""
        y, out_lens = self.frontend(x, lens)
        return self.stack(y, out_lens), out_lens


def build_encoder(cfg: EncoderConfig | DictConfig, vocab_size: int = 0) -> Encoder:
    """Encoder from its config. For type "text" the vocabulary is cfg.vocab_size when set (a
    source vocabulary of its own), else `vocab_size` (the tokenizer's); neither -> ValueError."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(cfg)
    args = (
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.ffn_dim,
        cfg.dropout,
        cfg.attn_dropout,
        cfg.pos,
    )
    if cfg.type == "text":
        vocab = cfg.vocab_size or vocab_size
        if vocab < 1:
            raise ValueError(
                "text encoder needs a vocabulary size: set encoder.vocab_size or pass vocab_size "
                "to build_encoder"
            )
        return Encoder(TokenEmbedding(vocab, cfg.d_model), transformer_stack(*args))
    # conv1d's inner width (before GLU) follows ffn_dim by default, like fairseq's 1024 for
    # d = 256; conv2d's channels default to d_model, like ESPnet.
    channels = cfg.subsampling_channels
    if cfg.subsampling == "conv1d":
        channels = 2 * max(1, (channels or cfg.ffn_dim) // 2)
    frontend = build_frontend(
        cfg.subsampling,
        cfg.input_dim,
        cfg.d_model,
        channels,
        cfg.subsampling_norm,
    )
    if cfg.type == "conformer":
        return Encoder(frontend, conformer_stack(*args, cfg.conv_kernel))
    return Encoder(frontend, transformer_stack(*args))
