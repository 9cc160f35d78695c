"""Conformer layers (Gulati et al. 2020, ESPnet layout):

    x = x + 1/2 FFN(LN(x))          macaron half-step, Swish
    x = x + MHSA(LN(x))             any position scheme of EncoderSelfAttention
    x = x + Conv(LN(x))             pointwise + GLU, depthwise, BatchNorm, Swish, pointwise
    x = x + 1/2 FFN(LN(x))
    x = LN(x)

Padded frames are zeroed before the depthwise conv, and the BatchNorm takes its batch
statistics over valid frames only, so padding never reaches a valid frame, in training or not.
"""

from __future__ import annotations

from torch import Tensor, nn

from s2s.models.transformer_encoder import EncoderSelfAttention, FeedForward, LayerStack


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (B, C, T) whose training statistics ignore padded frames."""

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """x: (B, C, T); pad: (B, T) bool, True at padded frames."""
        if not self.training or pad is None:
            return super().forward(x)
        valid = (~pad)[:, None, :].to(x.dtype)  # (B, 1, T)
        n = valid.sum()
        mean = (x * valid).sum((0, 2)) / n
        var = (((x - mean[:, None]) ** 2) * valid).sum((0, 2)) / n
        if self.track_running_stats:
            self.num_batches_tracked += 1
            # momentum=None means a cumulative average, as in nn.BatchNorm1d.
            m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            unbiased = var.detach() * n / (n - 1).clamp(min=1)
            self.running_mean.lerp_(mean.detach(), m)
            self.running_var.lerp_(unbiased, m)
        y = (x - mean[:, None]) * (var[:, None] + self.eps).rsqrt()
        return y * self.weight[:, None] + self.bias[:, None]


class ConvolutionModule(nn.Module):
    """Conformer convolution module. (B, T, d) -> (B, T, d)."""

    def __init__(self, d_model: int, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"conformer conv_kernel must be odd and >= 1, got {kernel}")
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.norm = MaskedBatchNorm1d(d_model)
        self.act = nn.SiLU()
        self.pointwise2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        """x: (B, T, d); pad: (B, T) bool, True at padded frames."""
        y = self.glu(self.pointwise1(x.transpose(1, 2)))  # (B, d, T)
        # The depthwise conv reads `kernel // 2` frames past the end: zeros, as when alone.
        y = y.masked_fill(pad[:, None, :], 0.0)
        y = self.act(self.norm(self.depthwise(y), pad))
        return self.pointwise2(y).transpose(1, 2)


class ConformerLayer(nn.Module):
    """One Conformer block (module docstring). (B, T, d) -> (B, T, d)."""

    compile_region = True  # train.compile compiles each layer (s2s.train.speed)

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        ffn_dim: int,
        dropout: float,
        attn_dropout: float,
        pos: str,
        conv_kernel: int,
    ) -> None:
        super().__init__()
        self.ffn1_norm = nn.LayerNorm(d_model)
        self.ffn1 = FeedForward(d_model, ffn_dim, dropout, nn.SiLU())
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = EncoderSelfAttention(d_model, n_heads, attn_dropout, pos)
        self.conv_norm = nn.LayerNorm(d_model)
        self.conv = ConvolutionModule(d_model, conv_kernel)
        self.ffn2_norm = nn.LayerNorm(d_model)
        self.ffn2 = FeedForward(d_model, ffn_dim, dropout, nn.SiLU())
        self.final_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad: Tensor, pos_emb: Tensor | None) -> Tensor:
        """x: (B, T, d); pad: (B, T) bool; pos_emb as EncoderSelfAttention.forward."""
        x = x + 0.5 * self.dropout(self.ffn1(self.ffn1_norm(x)))
        x = x + self.dropout(self.attn(self.attn_norm(x), pad, pos_emb))
        x = x + self.dropout(self.conv(self.conv_norm(x), pad))
        x = x + 0.5 * self.dropout(self.ffn2(self.ffn2_norm(x)))
        return self.final_norm(x)


def conformer_stack(
    n_layers: int,
    d_model: int,
    n_heads: int,
    ffn_dim: int,
    dropout: float,
    attn_dropout: float,
    pos: str,
    conv_kernel: int,
) -> LayerStack:
    """n_layers Conformer blocks; each ends in its own LayerNorm, so no extra final norm."""
    layers = [
        ConformerLayer(d_model, n_heads, ffn_dim, dropout, attn_dropout, pos, conv_kernel)
        for _ in range(n_layers)
    ]
    return LayerStack(layers, d_model, pos, dropout, final_norm=False)
