"""One way to record speech in a scene: a room, pauses, background noise, a level.

``render(speech, scene, ...)`` is the one renderer; what varies is the ``Scene``:

- the embedded phrases corpus (local/phrases) records every utterance in a drawn scene so that
  its speech varies as recordings do (docs/data.md): reverberated in a synthetic room, placed
  between a leading and a trailing pause, mixed with background noise (white, pink, or babble
  made from other utterances) at an SNR measured over the speech alone, scaled to a peak level;
- the synthesiser's noisy speech (``s2s.synth.tts.synthesize(snr_db=...)``) and the robustness
  evaluation's conditions (s2s.evaluate.robustness: a later onset behind near-silence, a gain,
  white noise at an SNR) keep the speech's own level (``peak=None``);
- ``join_with_pauses`` records utterances one after the other with pauses of near-silence
  between them: the long recording of s2s.evaluate.long_audio and s2s.evaluate.robustness.

Every random draw comes from the generator passed in, in a fixed order (room, pauses, noise),
so a rendering is a pure function of the speech, the scene and the generator's seed.
Convolution and measured mixing are torchaudio's (``fftconvolve``, ``add_noise``); the sounds
themselves are s2s.synth.acoustics'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchaudio.functional as AF
from torch import Tensor

from s2s.synth.acoustics import NOISE_KINDS, babble_noise, pink_noise, synthetic_rir

NOISE_SCALES = ("measured", "expected")


@dataclass(frozen=True)
class Scene:
    """How one utterance is recorded.

    lead_s / trail_s: pause before / after the speech, in seconds, of digital silence or, with
    ``floor`` > 0, of white noise at that amplitude (near-silence: a quiet room);
    peak: the peak amplitude of the result (its level), in (0, 1]; None keeps the speech's own
    level, times ``gain_db`` when that is set (which needs peak=None);
    noise: ``none`` or one of NOISE_KINDS, at ``snr_db`` over the speech's own samples, scaled
    by the noise's ``measured`` power (torchaudio's add_noise: the corpus) or, for white noise,
    its ``expected`` power (unit variance: the synthesiser and the robustness evaluation);
    rt60_s: reverberation time of the synthetic room (0: dry), with the direct path
    ``drr_db`` louder than the reverberant tail.

    With peak=None, a scene that sets a gain or adds noise clips the result at full scale
    (as a recording would); pauses and a room alone leave the samples as they come."""

    lead_s: float = 0.0
    trail_s: float = 0.0
    peak: float | None = 0.9
    noise: str = "none"
    snr_db: float = 20.0
    rt60_s: float = 0.0
    drr_db: float = 5.0
    floor: float = 0.0
    gain_db: float | None = None
    noise_scale: str = "measured"

    def __post_init__(self) -> None:
        if self.lead_s < 0 or self.trail_s < 0:
            raise ValueError(f"pauses must be >= 0 s, got {self.lead_s}, {self.trail_s}")
        if self.peak is not None and not 0 < self.peak <= 1:
            raise ValueError(f"peak must be in (0, 1] or None, got {self.peak}")
        if self.peak is not None and self.gain_db is not None:
            raise ValueError("a scene sets its level by peak or by gain_db (with peak=None)")
        if self.noise != "none" and self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be 'none' or one of {NOISE_KINDS}, got {self.noise!r}")
        if self.noise_scale not in NOISE_SCALES:
            raise ValueError(f"noise_scale must be one of {NOISE_SCALES}, got {self.noise_scale!r}")
        if self.noise_scale == "expected" and self.noise not in ("none", "white"):
            raise ValueError(f"noise_scale 'expected' is for white noise, not {self.noise!r}")
        if self.rt60_s < 0:
            raise ValueError(f"rt60_s must be >= 0, got {self.rt60_s}")
        if self.floor < 0:
            raise ValueError(f"floor must be >= 0, got {self.floor}")


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
    if scene.floor > 0:
        out[:lead] = torch.randn(lead, generator=generator) * scene.floor
        out[lead + n_speech :] += torch.randn(trail, generator=generator) * scene.floor
    if scene.noise != "none":
        out = _add_noise(out, n_speech, scene, generator, babble)
    if scene.peak is not None:
        return out * (scene.peak / out.abs().max().clamp_min(1e-8))
    if scene.gain_db is not None:
        out = out * 10 ** (scene.gain_db / 20)
    if scene.gain_db is not None or scene.noise != "none":
        out = out.clamp(-1.0, 1.0)
    return out


def _add_noise(
    out: Tensor,
    n_speech: int,
    scene: Scene,
    generator: torch.Generator,
    babble: Sequence[Tensor],
) -> Tensor:
    """``out`` (lead + N + trail,) with the scene's noise at scene.snr_db over the speech."""
    if scene.noise_scale == "expected":
        # the pauses hold no speech: the power over all samples, counted over the speech's
        # (a factor of exactly 1 without pauses)
        power = out.pow(2).mean().clamp_min(1e-10) * (out.numel() / n_speech)
        std = (power / 10 ** (scene.snr_db / 10)).sqrt()
        return out + std * torch.randn(out.shape, generator=generator, dtype=out.dtype)
    if scene.noise == "white":
        noise = torch.randn(out.numel(), generator=generator)
    elif scene.noise == "pink":
        noise = pink_noise(out.numel(), generator)
    else:
        noise = babble_noise(babble, out.numel(), generator)
    # add_noise sets the SNR over the whole signal; the pauses hold no speech, so ask for
    # what gives `snr_db` over the speech's own samples.
    snr = scene.snr_db + 10 * math.log10(n_speech / out.numel())
    return AF.add_noise(out[None], noise[None], torch.tensor([snr]))[0]


def join_with_pauses(
    waves: Sequence[Tensor], gap: int, floor: float, sample_rate: int, seed: int = 0
) -> tuple[Tensor, list[tuple[int, int]]]:
    """(N_i,) waveforms -> one recording with ``gap`` samples of white noise at amplitude
    ``floor`` before, between and after them, and each one's [start, end) in samples: each
    utterance rendered with its leading pause (the last with its trailing one too), from one
    generator seeded with ``seed``."""
    if not waves:
        raise ValueError("no waveforms to join")
    g = torch.Generator().manual_seed(seed)
    pause_s = gap / sample_rate  # round(pause_s * sample_rate) == gap: whole samples
    pieces: list[Tensor] = []
    spans, at = [], 0
    for i, w in enumerate(waves):
        trail_s = pause_s if i == len(waves) - 1 else 0.0
        scene = Scene(lead_s=pause_s, trail_s=trail_s, peak=None, floor=floor)
        pieces.append(render(w, scene, sample_rate, g))
        spans.append((at + gap, at + gap + w.numel()))
        at += gap + w.numel()
    return torch.cat(pieces), spans
