"""Speed perturbation, Kaldi/ESPnet style (`sox speed`): duration and pitch change together.

The waveform is resampled from `sample_rate` to `sample_rate / factor` and then read as if it
were still at `sample_rate`, so factor 0.9 gives a slower, lower, ~11% longer signal.
"""

from __future__ import annotations

from fractions import Fraction

import torchaudio.functional as AF
from torch import Tensor


def speed_perturb(wave: Tensor, sample_rate: int, factor: float) -> Tensor:
    """Speed-perturbs (N,) -> (N',) with N' = ceil(N / factor); factor 1.0 returns a copy.

    `sample_rate` only documents the rate the signal is at; the output is at the same rate.
    The ratio is taken as a fraction with denominator <= 1000 (0.9 -> 9/10), which keeps the
    polyphase resampling kernel small.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if wave.dim() != 1:
        raise ValueError(f"expected a (N,) waveform, got shape {tuple(wave.shape)}")
    if factor == 1.0:
        return wave.clone()
    ratio = Fraction(factor).limit_denominator(1000)
    # resampling from rate p to rate q changes length by q/p; we want 1/factor = den/num
    return AF.resample(wave, ratio.numerator, ratio.denominator)
