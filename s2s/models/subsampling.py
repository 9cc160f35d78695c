"""Speech frontends: (B, T, F) features -> (B, T', d_model) frames, with exact output lengths.

- conv2d4 / conv2d6 / conv2d8 (ESPnet's Conv2dSubsampling): unpadded 2-D convs + ReLU over
  (time, freq), then a Linear from channels x remaining freq bins to d_model, optionally
  normalised (`norm`). Unpadded convs mean a valid output frame only ever reads valid input
  frames.
- conv1d (fairseq's Conv1dSubsampler): two 1-D convs over time (kernel 5, stride 2, padding 2),
  each followed by GLU; padded frames are zeroed before every conv so they never leak in.
- none: a Linear projection, T' = T.

Every frontend returns (out, out_lens) and raises ValueError when an input is shorter than
`min_input_length` (it would produce zero frames).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from s2s.attention.masks import lengths_to_padding_mask

SUBSAMPLINGS = ("conv2d4", "conv2d6", "conv2d8", "conv1d", "none")

# (kernel, stride) per 2-D conv layer, applied to time and frequency alike.
_CONV2D_LAYERS: dict[str, tuple[tuple[int, int], ...]] = {
    "conv2d4": ((3, 2), (3, 2)),
    "conv2d6": ((3, 2), (5, 3)),
    "conv2d8": ((3, 2), (3, 2), (3, 2)),
}


# (kernel, stride, padding) in time of fairseq's two 1-D convs.
_CONV1D_LAYERS = ((5, 2, 2), (5, 2, 2))


def _conv_out(n: Tensor | int, kernel: int, stride: int, padding: int = 0) -> Tensor | int:
    """Output length of one conv: floor((n + 2p - k) / s) + 1 (may be <= 0)."""
    return (n + 2 * padding - kernel) // stride + 1


def _min_len(layers: tuple[tuple[int, int, int], ...]) -> int:
    """Smallest input length whose output (through (kernel, stride, padding) layers) is >= 1."""
    need = 1
    for k, s, p in reversed(layers):
        need = max(1, (need - 1) * s + k - 2 * p)
    return need


class Frontend(nn.Module):
    """Base: holds the per-layer (kernel, stride, padding) in time for the length formula."""

    name = "frontend"

    def __init__(self, time_layers: tuple[tuple[int, int, int], ...]) -> None:
        super().__init__()
        self.time_layers = time_layers
        self.min_input_length = _min_len(time_layers)
        self.subsampling_factor = math.prod(s for _, s, _ in time_layers)  # inputs per output

    def output_lengths(self, lens: Tensor) -> Tensor:
        """(B,) input lengths -> (B,) output lengths."""
        for k, s, p in self.time_layers:
            lens = _conv_out(lens, k, s, p)
        return lens

    def check(self, x: Tensor, lens: Tensor, input_dim: int) -> None:
        if x.dim() != 3 or x.shape[-1] != input_dim:
            raise ValueError(
                f"{self.name} frontend expects features (B, T, {input_dim}), got {tuple(x.shape)}"
            )
        if lens.shape != (x.shape[0],):
            raise ValueError(f"lengths must have shape ({x.shape[0]},), got {tuple(lens.shape)}")
        if lens.numel() == 0 or torch.compiler.is_exporting():  # lengths are data when traced
            return
        shortest, longest = int(lens.min()), int(lens.max())
        if shortest < self.min_input_length:
            raise ValueError(
                f"{self.name} frontend: an input of {shortest} frames is too short; the minimum "
                f"input length is {self.min_input_length} frames"
            )
        if longest > x.shape[1]:
            raise ValueError(f"length {longest} exceeds the padded time dimension {x.shape[1]}")


# The starting gain of the LayerNorm ending a conv2d frontend (Conv2dSubsampling `norm`).
NORM_GAIN = 0.5


class Conv2dSubsampling(Frontend):
    """ESPnet-style 2-D conv subsampling by 4 (two 3x3 s2), 6 (3x3 s2, 5x5 s3) or 8 (three
    3x3 s2); `channels` conv channels (ESPnet: d_model; fewer make small models much cheaper,
    the convs dominate their cost); `norm`: a LayerNorm over each output frame (below).
    (B, T, F) -> (B, T', d_model)."""

    def __init__(
        self, kind: str, input_dim: int, d_model: int, channels: int = 0, norm: bool = False
    ) -> None:
        if kind not in _CONV2D_LAYERS:
            raise ValueError(f"unknown conv2d subsampling {kind!r}; one of {tuple(_CONV2D_LAYERS)}")
        layers = _CONV2D_LAYERS[kind]
        super().__init__(tuple((k, s, 0) for k, s in layers))
        self.name = kind
        self.input_dim = input_dim
        freq = input_dim
        for k, s in layers:
            freq = _conv_out(freq, k, s)
        if freq < 1:
            raise ValueError(
                f"{kind} subsampling needs input_dim >= {_min_len(self.time_layers)}, "
                f"got {input_dim}"
            )
        channels = channels or d_model
        convs: list[nn.Module] = []
        for i, (k, s) in enumerate(layers):
            convs += [nn.Conv2d(1 if i == 0 else channels, channels, k, s), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*convs)
        self.out = nn.Linear(channels * freq, d_model)
        # A ReLU channel whose input the optimiser has pushed below zero everywhere passes no
        # gradient and never comes back. Early in training the encoder gains by quietening the
        # speech (the decoder first learns from the previous tokens alone), and the second
        # conv's weights drift negative together (its inputs, ReLU outputs, are all >= 0):
        # with some seeds every channel dies and the encoder hears nothing (BENCHMARKS.md
        # §33). Normalising each frame, as icefall's frontends end (out_norm), takes that
        # lever away: the frames keep their scale whatever the convs give. Its gain starts at
        # 0.5: the frames then start at an RMS of 0.5 a value (5.7 after the stack's
        # sqrt(d_model) at d = 128, against the positions' 1/sqrt(2)); at 1 both mha seeds
        # tried learned less, at 0.2 every seed stalled (§33). Off by default: where the
        # ReLUs stay alive it costs 3.5-5 BLEU on the demo (§35).
        self.norm: nn.Module = nn.Identity()
        if norm:
            self.norm = nn.LayerNorm(d_model)
            nn.init.constant_(self.norm.weight, NORM_GAIN)

    @torch.no_grad()
    def silent_channels(self, x: Tensor, lens: Tensor) -> list[float]:
        """Per conv layer, the share of its channels whose input to the ReLU is <= 0 at every
        position of every utterance of (x (B, T, F), lens (B,)): dead channels, which say
        nothing and pass no gradient. Each utterance is run alone, unpadded, so no padding
        frame counts. All of the last layer's channels dead: the encoder hears nothing
        (docs/training.md, "A frontend that keeps hearing")."""
        convs = list(self.conv[0::2])
        alive = [torch.zeros(c.out_channels, dtype=torch.bool, device=x.device) for c in convs]
        for utt, n in zip(x, lens.tolist()):
            y = utt[:n].unsqueeze(0).unsqueeze(0).contiguous(memory_format=self.memory_format())
            for i, conv in enumerate(convs):
                y = conv(y)
                alive[i] |= y.amax(dim=(0, 2, 3)) > 0  # (1, C, T', F') -> (C,)
                y = y.relu()
        return [1.0 - float(a.float().mean()) for a in alive]

    def memory_format(self) -> torch.memory_format:
        """The layout the convolutions run in: their weights' (train.channels_last converts
        them). The last conv's weight tells: the first one's, of one input channel, is both."""
        w = self.conv[-2].weight
        cl = w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last)
        return torch.channels_last if cl else torch.contiguous_format

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, F), lens: (B,) -> (B, T', d_model), (B,)."""
        self.check(x, lens, self.input_dim)
        layout = self.memory_format()
        y = self.conv(x.unsqueeze(1).contiguous(memory_format=layout))  # (B, C, T', F')
        B, C, T, F = y.shape
        if layout == torch.channels_last:
            # y lies as (B, T', F', C): flattened in that order it is a view, and its gradient
            # comes back channels-last like the ReLUs' saved outputs. Flattened as (C, F') it
            # is a copy whose gradient has neither layout, and each ReLU's backward then takes
            # a strided path several times slower. The Linear's columns (the checkpoint's
            # (C, F') order) are taken in the same (F', C) order instead.
            w = self.out.weight.unflatten(1, (C, F)).transpose(1, 2).flatten(1)
            y = nn.functional.linear(y.permute(0, 2, 3, 1).reshape(B, T, F * C), w, self.out.bias)
        else:
            y = self.out(y.transpose(1, 2).reshape(B, T, C * F))
        return self.norm(y), self.output_lengths(lens)


class Conv1dSubsampler(Frontend):
    """fairseq-style: Conv1d(k=5, s=2, p=2) + GLU, twice; x4 in time.
    (B, T, F) -> (B, T', d_model) with T' = ceil(ceil(T / 2) / 2)."""

    name = "conv1d"

    def __init__(self, input_dim: int, d_model: int, channels: int = 1024) -> None:
        super().__init__(_CONV1D_LAYERS)
        if channels < 2 or channels % 2:
            raise ValueError(f"conv1d subsampler channels must be even and >= 2, got {channels}")
        self.input_dim = input_dim
        # Each conv outputs twice the channels GLU keeps.
        self.convs = nn.ModuleList(
            (
                nn.Conv1d(input_dim, channels, 5, stride=2, padding=2),
                nn.Conv1d(channels // 2, 2 * d_model, 5, stride=2, padding=2),
            )
        )
        self.glu = nn.GLU(dim=1)

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, F), lens: (B,) -> (B, T', d_model), (B,)."""
        self.check(x, lens, self.input_dim)
        y = x.transpose(1, 2)  # (B, F, T)
        for conv, (k, s, p) in zip(self.convs, self.time_layers):
            # Padded convs read past the end: make what they read there zeros, as when alone.
            y = y.masked_fill(lengths_to_padding_mask(lens, y.shape[-1])[:, None], 0.0)
            y = self.glu(conv(y))
            lens = _conv_out(lens, k, s, p)
        return y.transpose(1, 2), lens


class LinearFrontend(Frontend):
    """No subsampling: a Linear from input_dim to d_model. (B, T, F) -> (B, T, d_model)."""

    name = "none"

    def __init__(self, input_dim: int, d_model: int) -> None:
        super().__init__(())
        self.input_dim = input_dim
        self.out = nn.Linear(input_dim, d_model)

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, F), lens: (B,) -> (B, T, d_model), (B,)."""
        self.check(x, lens, self.input_dim)
        return self.out(x), lens.clone()


def min_input_dim(kind: str) -> int:
    """Smallest feature dimension a frontend accepts."""
    if kind in _CONV2D_LAYERS:
        return _min_len(tuple((k, s, 0) for k, s in _CONV2D_LAYERS[kind]))
    return 1


def min_input_frames(kind: str) -> int:
    """Fewest feature frames from which the frontend `kind` makes one output frame: shorter
    audio cannot be encoded at all (recipe stage 3 reports it as too short)."""
    if kind in _CONV2D_LAYERS:
        return _min_len(tuple((k, s, 0) for k, s in _CONV2D_LAYERS[kind]))
    return _min_len(_CONV1D_LAYERS) if kind == "conv1d" else 1


def build_frontend(
    kind: str,
    input_dim: int,
    d_model: int,
    channels: int = 1024,
    norm: bool = False,
) -> Frontend:
    """Frontend by name (SUBSAMPLINGS); `channels` is the conv2d channel count (0 = d_model)
    or conv1d's inner width (before GLU); `norm` the conv2d frontends' (Conv2dSubsampling)."""
    if kind in _CONV2D_LAYERS:
        return Conv2dSubsampling(kind, input_dim, d_model, channels, norm)
    if kind == "conv1d":
        return Conv1dSubsampler(input_dim, d_model, channels)
    if kind == "none":
        return LinearFrontend(input_dim, d_model)
    raise ValueError(f"unknown subsampling {kind!r}; one of {SUBSAMPLINGS}")
