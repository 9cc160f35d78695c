"""Pre-LN Transformer encoder layers and the layer stack shared with the Conformer.

Positions (`pos`):
- "abs":    sinusoidal encoding added to the input after it is scaled by sqrt(d_model).
- "rotary": RoPE on q and k in every layer (s2s.attention.positions.apply_rope).
- "rel":    Transformer-XL / ESPnet relative-position self-attention ("latest" ESPnet variant):
            score(i, j) = (q_i + u) . k_j + (q_i + v) . W_p PE(i - j), divided by sqrt(d_h),
            with learned per-head biases u, v (pos_bias_u / pos_bias_v), a bias-free W_p
            (linear_pos) and the sinusoidal encoding of every relative distance
            T-1 ... -(T-1), aligned to (i, j) with the rel-shift trick.

The stack always scales its input by sqrt(d_model) (ESPnet's xscale), so a token embedding
feeding it is scaled by sqrt(d) too. Padded keys are masked in every attention; the output at
padded frames is zeroed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.attention.masks import lengths_to_padding_mask
from s2s.attention.ops import sdpa
from s2s.attention.positions import apply_rope, sinusoidal_encoding

POSITIONS = ("abs", "rel", "rotary")


class FeedForward(nn.Sequential):
    """Linear -> activation -> dropout -> Linear. (B, T, d) -> (B, T, d)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, activation: nn.Module) -> None:
        super().__init__(
            nn.Linear(d_model, ffn_dim),
            activation,
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, d_model),
        )


def rel_shift(x: Tensor) -> Tensor:
    """(B, H, T, 2T-1) scores against relative positions T-1 ... -(T-1) -> (B, H, T, T) with
    out[..., i, j] = x[..., i, T-1-i+j], the score for distance i - j (Transformer-XL trick)."""
    B, H, T, P = x.shape
    x = F.pad(x, (1, 0))  # (B, H, T, 2T)
    x = x.view(B, H, P + 1, T)[:, :, 1:].reshape(B, H, T, P)
    return x[..., : P // 2 + 1]


def relative_positions(T: int, d_model: int, device: torch.device) -> Tensor:
    """Sinusoidal encodings of the distances T-1, T-2, ..., -(T-1): (2T-1, d_model)."""
    return sinusoidal_encoding(torch.arange(T - 1, -T, -1, device=device), d_model)


class EncoderSelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with key padding and a position scheme."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float, pos: str) -> None:
        super().__init__()
        if pos not in POSITIONS:
            raise ValueError(f"unknown pos {pos!r}; one of {POSITIONS}")
        self.n_heads, self.d_head, self.pos = n_heads, d_model // n_heads, pos
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        if pos == "rel":
            self.linear_pos = nn.Linear(d_model, d_model, bias=False)
            self.pos_bias_u = nn.Parameter(torch.empty(n_heads, 1, self.d_head))
            self.pos_bias_v = nn.Parameter(torch.empty(n_heads, 1, self.d_head))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: Tensor, pad: Tensor, pos_emb: Tensor | None) -> Tensor:
        """x: (B, T, d); pad: (B, T) bool, True at padded frames; pos_emb: (2T-1, d) for "rel",
        (B, T) long positions for "rotary", else None. Returns (B, T, d)."""
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head).unbind(2)  # (B, T, H, Dh)
        if self.pos == "rotary":
            q, k = apply_rope(q, pos_emb), apply_rope(k, pos_emb)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        keep = ~pad[:, None, None, :]  # (B, 1, 1, T); real queries always have real keys
        if self.pos == "rel":
            p = self.linear_pos(pos_emb).view(-1, self.n_heads, self.d_head).transpose(0, 1)
            bd = rel_shift((q + self.pos_bias_v) @ p.transpose(-1, -2))  # (B, H, T, T)
            mask = (bd / math.sqrt(self.d_head)).masked_fill(~keep, float("-inf"))
            q = q + self.pos_bias_u
        else:
            mask = keep
        dropout = self.attn_dropout if self.training else 0.0
        if torch.compiler.is_exporting() and self.pos == "rel":
            # The ONNX exporter's decomposition of SDPA with this additive mask makes a view of
            # strides it cannot view; the same softmax written out exports (docs/export.md).
            att = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head) + mask
            y = att.softmax(-1) @ v
        else:
            y = sdpa(q, k, v, mask, dropout=dropout)
        return self.out(y.transpose(1, 2).reshape(B, T, d))


class TransformerEncoderLayer(nn.Module):
    """Pre-LN: x + MHSA(LN(x)), then x + FFN(LN(x)) (ReLU). (B, T, d) -> (B, T, d)."""

    compile_region = True  # train.compile compiles each layer (s2s.train.speed)

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        ffn_dim: int,
        dropout: float,
        attn_dropout: float,
        pos: str,
    ) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = EncoderSelfAttention(d_model, n_heads, attn_dropout, pos)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_dim, dropout, nn.ReLU())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad: Tensor, pos_emb: Tensor | None) -> Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), pad, pos_emb))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class LayerStack(nn.Module):
    """Input scaling + positions, then `layers(x, pad, pos_emb)` in turn, then an optional final
    LayerNorm; padded frames of the output are zeros. (B, T, d), (B,) -> (B, T, d)."""

    def __init__(
        self, layers: list[nn.Module], d_model: int, pos: str, dropout: float, final_norm: bool
    ) -> None:
        super().__init__()
        if pos not in POSITIONS:
            raise ValueError(f"unknown pos {pos!r}; one of {POSITIONS}")
        self.d_model, self.pos = d_model, pos
        self.xscale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        B, T, _ = x.shape
        pad = lengths_to_padding_mask(lens, T)
        x = x * self.xscale
        positions = torch.arange(T, device=x.device)
        pos_emb: Tensor | None = None
        if self.pos == "abs":
            x = x + sinusoidal_encoding(positions, self.d_model).to(x.dtype)
        elif self.pos == "rotary":
            pos_emb = positions.expand(B, T)
        else:
            pos_emb = relative_positions(T, self.d_model, x.device).to(x.dtype)
            pos_emb = self.dropout(pos_emb)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, pad, pos_emb)
        return self.norm(x).masked_fill(pad[..., None], 0.0)


def transformer_stack(
    n_layers: int,
    d_model: int,
    n_heads: int,
    ffn_dim: int,
    dropout: float,
    attn_dropout: float,
    pos: str,
) -> LayerStack:
    """n_layers pre-LN Transformer layers with a final LayerNorm."""
    layers = [
        TransformerEncoderLayer(d_model, n_heads, ffn_dim, dropout, attn_dropout, pos)
        for _ in range(n_layers)
    ]
    return LayerStack(layers, d_model, pos, dropout, final_norm=True)
