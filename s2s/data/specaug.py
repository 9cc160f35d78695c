"""SpecAugment (Park et al. 2019) on one utterance's features: time warp, frequency and time masks.

Order and sampling follow ESPnet: warp first, then `freq_masks` bands of width w ~ U{0..W_f}
then `time_masks` bands of width w ~ U{0..W_t}, each at a uniform start so the band fits.
Masked values are set to 0, which is the mean once features are CMVN-normalised, so apply CMVN
before SpecAugment. All randomness comes from the `generator` argument (or torch's global RNG).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class SpecAugConfig:
    """SpecAugment settings; the defaults are the MTLA paper's (1 frequency mask of width up to
    27, 1 time mask of width up to 100, no time warp).

    time_width_ratio > 0 caps the time mask width at floor(ratio * T) for T-frame inputs
    (Park et al.'s p), on top of time_width. time_warp is the warp window in frames (0 = off).
    time_shift > 0 moves the start of the speech by up to that many frames first (`time_shift`),
    so the model cannot learn where in the input speech begins.
    """

    freq_masks: int = 1
    freq_width: int = 27
    time_masks: int = 1
    time_width: int = 100
    time_width_ratio: float = 0.0
    time_warp: int = 0
    time_shift: int = 0

    def __post_init__(self) -> None:
        names = ("freq_masks", "freq_width", "time_masks", "time_width", "time_warp", "time_shift")
        for name in names:
            if getattr(self, name) < 0:
                raise ValueError(f"SpecAugConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.time_width_ratio <= 1.0:
            raise ValueError(
                f"SpecAugConfig.time_width_ratio must be in [0, 1], got {self.time_width_ratio}"
            )


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def time_warp(feats: Tensor, window: int, generator: torch.Generator | None = None) -> Tensor:
    """ESPnet's time warp: (T, F) -> (T, F). Picks a centre c in [W, T-W) and stretches [0, c)
    to a new length in [c-W+1, c+W] by bicubic interpolation, squeezing [c, T) to fill the rest.
    Inputs with T <= 2W are returned unchanged (as a copy)."""
    t = feats.shape[0]
    if window == 0 or t - window <= window:
        return feats.clone()
    center = _randint(window, t - window - 1, generator)
    warped = _randint(center - window, center + window - 1, generator) + 1
    x = feats[None, None]  # (1, 1, T, F) for 2-D interpolation
    n_freq = feats.shape[1]
    left = F.interpolate(x[:, :, :center], (warped, n_freq), mode="bicubic", align_corners=False)
    right = F.interpolate(
        x[:, :, center:], (t - warped, n_freq), mode="bicubic", align_corners=False
    )
    return torch.cat([left, right], dim=2)[0, 0]


def time_shift(feats: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """(T, F) -> (T + k, F) for k uniform in [-max_shift, max_shift]: k > 0 puts k copies of the
    quietest of the first max_shift frames (a pause, where there is one) in front; k < 0 drops
    the first -k frames, keeping at least half of the input."""
    t = feats.shape[0]
    k = _randint(-max_shift, max_shift, generator)
    if k < 0:
        return feats[min(-k, t // 2) :].clone()
    if k == 0:
        return feats.clone()
    head = feats[:max_shift]
    quiet = head[head.mean(-1).argmin()]  # (CMVN-normalised) log-mel: lowest on average
    return torch.cat([quiet.expand(k, -1), feats])


class SpecAugment:
    """Callable augmentation: (T, F) features -> a masked (T, F) copy; the input is untouched."""

    def __init__(self, cfg: SpecAugConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else SpecAugConfig()

    def max_time_width(self, num_frames: int) -> int:
        """Largest time mask width for a `num_frames`-frame input."""
        width = self.cfg.time_width
        if self.cfg.time_width_ratio > 0:
            width = min(width, int(self.cfg.time_width_ratio * num_frames))
        return min(width, num_frames)

    def __call__(self, feats: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if feats.dim() != 2:
            raise ValueError(f"SpecAugment expects (T, F) features, got {tuple(feats.shape)}")
        cfg = self.cfg
        if cfg.time_shift:
            feats = time_shift(feats, cfg.time_shift, generator)
        n_time, n_freq = feats.shape
        out = time_warp(feats, cfg.time_warp, generator) if cfg.time_warp else feats.clone()
        max_f = min(cfg.freq_width, n_freq)
        for _ in range(cfg.freq_masks):
            width = _randint(0, max_f, generator)
            start = _randint(0, n_freq - width, generator)
            out[:, start : start + width] = 0.0
        max_t = self.max_time_width(n_time)
        for _ in range(cfg.time_masks):
            width = _randint(0, max_t, generator)
            start = _randint(0, n_time - width, generator)
            out[start : start + width, :] = 0.0
        return out
