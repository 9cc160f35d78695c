"""The sounds a scene (s2s.synth.scene) is recorded with: pink and babble noise, and a
synthetic room's impulse response. Every random draw comes from the generator passed in.

Filtering is torchaudio's (``lfilter``); this module only decides what goes in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchaudio.functional as AF
from torch import Tensor

NOISE_KINDS = ("white", "pink", "babble")

# 1/f ("pink") noise from white noise: a 3-pole, 3-zero IIR whose response is within 0.05 dB
# of -3 dB per octave from 10 Hz to the Nyquist frequency at 44.1 kHz (Julius O. Smith,
# "Spectral Audio Signal Processing", "Example: Synthesis of 1/F Noise").
_PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
_PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)


def pink_noise(n: int, generator: torch.Generator) -> Tensor:
    """(n,) float32 noise with a 1/f power spectrum and unit variance."""
    warm = 4096  # let the IIR's start-up transient (its slowest pole) die out first
    white = torch.randn(n + warm, generator=generator, dtype=torch.float64)
    a, b = torch.tensor(_PINK_A, dtype=torch.float64), torch.tensor(_PINK_B, dtype=torch.float64)
    pink = AF.lfilter(white, a, b, clamp=False)[warm:]
    return (pink / pink.std().clamp_min(1e-12)).float()


def babble_noise(sources: Sequence[Tensor], n: int, generator: torch.Generator) -> Tensor:
    """(n,) babble: every (N_i,) source at unit power, repeated to length n from a random
    offset, summed, so several voices talk at once all the way through."""
    if not sources:
        raise ValueError("babble needs at least one source utterance")
    out = torch.zeros(n)
    for src in sources:
        src = src.float() / src.pow(2).mean().sqrt().clamp_min(1e-8)
        reps = math.ceil((n + src.numel()) / src.numel())
        start = int(torch.randint(src.numel(), (1,), generator=generator))
        out += src.repeat(reps)[start : start + n]
    return out


def synthetic_rir(
    rt60_s: float, drr_db: float, sample_rate: int, generator: torch.Generator
) -> Tensor:
    """(L,) room impulse response, L = rt60_s seconds: a unit direct path, then Gaussian
    reflections from 2 ms on whose envelope falls by 60 dB over rt60_s, scaled so that the
    direct path carries drr_db more energy than the tail."""
    n = max(int(rt60_s * sample_rate), 2)
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    tail = torch.randn(n, generator=generator, dtype=torch.float64)
    tail *= torch.exp(-3 * math.log(10) * t / rt60_s)  # amplitude 10^-3 (-60 dB) at rt60_s
    tail[: max(int(0.002 * sample_rate), 1)] = 0.0
    tail *= 10 ** (-drr_db / 20) / tail.norm().clamp_min(1e-12)
    tail[0] = 1.0
    return tail.float()
