"""Recording conditions for clean (synthesised) speech: pauses, level, noise, reverberation.

The embedded phrases corpus (local/phrases) renders every utterance through a ``Scene`` so
that its speech varies as recordings do (docs/data.md): the clean speech is reverberated in
a synthetic room, placed between a leading and a trailing pause, mixed with background noise
(white, pink, or babble made from other utterances) at an SNR measured over the speech
alone, and scaled to a peak level. Every random draw comes from the generator passed in, so a
rendering is a pure function of the speech, the scene and the generator's seed.

Filtering, convolution and mixing are torchaudio's (``lfilter``, ``fftconvolve``,
``add_noise``); this module only decides what goes in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchaudio.functional as AF
from torch import Tensor

NOISE_KINDS = ("white", "pink", "babble")

# 1/f ("pink") noise from white noise: a 3-pole, 3-zero IIR whose response is within 0.05 dB
# of -3 dB per octave from 10 Hz to the Nyquist frequency at 44.1 kHz (Julius O. Smith,
# "Spectral Audio Signal Processing", "Example: Synthesis of 1/F Noise").
_PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
_PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)


@dataclass(frozen=True)
class Scene:
    """How one utterance is recorded.

    lead_s / trail_s: pause before / after the speech, in seconds;
    peak: the peak amplitude of the result (its level), in (0, 1];
    noise: ``none`` or one of NOISE_KINDS, at ``snr_db`` over the speech's own samples;
    rt60_s: reverberation time of the synthetic room (0: dry), with the direct path
    ``drr_db`` louder than the reverberant tail."""

    lead_s: float = 0.0
    trail_s: float = 0.0
    peak: float = 0.9
    noise: str = "none"
    snr_db: float = 20.0
    rt60_s: float = 0.0
    drr_db: float = 5.0

    def __post_init__(self) -> None:
        if self.lead_s < 0 or self.trail_s < 0:
            raise ValueError(f"pauses must be >= 0 s, got {self.lead_s}, {self.trail_s}")
        if not 0 < self.peak <= 1:
            raise ValueError(f"peak must be in (0, 1], got {self.peak}")
        if self.noise != "none" and self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be 'none' or one of {NOISE_KINDS}, got {self.noise!r}")
        if self.rt60_s < 0:
            raise ValueError(f"rt60_s must be >= 0, got {self.rt60_s}")


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


def render(
    speech: Tensor,
    scene: Scene,
    sample_rate: int,
    generator: torch.Generator,
    babble: Sequence[Tensor] = (),
) -> Tensor:
    """Record clean (N,) ``speech`` in ``scene``: (lead + N + trail,) float32 samples.

    The reverberant tail runs on into the trailing pause (and is cut at its end); the noise
    covers the pauses too. ``babble`` holds the clean source utterances for babble noise."""
    if speech.dim() != 1 or speech.numel() == 0:
        raise ValueError(f"expected a non-empty (N,) waveform, got shape {tuple(speech.shape)}")
    x = speech.float()
    if scene.rt60_s > 0:
        rir = synthetic_rir(scene.rt60_s, scene.drr_db, sample_rate, generator)
        x = AF.fftconvolve(x, rir)
    lead, trail = round(scene.lead_s * sample_rate), round(scene.trail_s * sample_rate)
    n_speech = speech.numel()
    out = torch.zeros(lead + n_speech + trail)
    body = x[: n_speech + trail]
    out[lead : lead + body.numel()] = body
    if scene.noise != "none":
        if scene.noise == "white":
            noise = torch.randn(out.numel(), generator=generator)
        elif scene.noise == "pink":
            noise = pink_noise(out.numel(), generator)
        else:
            noise = babble_noise(babble, out.numel(), generator)
        # add_noise sets the SNR over the whole signal; the pauses hold no speech, so ask for
        # what gives `snr_db` over the speech's own samples.
        snr = scene.snr_db + 10 * math.log10(n_speech / out.numel())
        out = AF.add_noise(out[None], noise[None], torch.tensor([snr]))[0]
    return out * (scene.peak / out.abs().max().clamp_min(1e-8))
