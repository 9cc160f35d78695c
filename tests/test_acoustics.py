"""Recording in a scene (s2s.synth.scene, s2s.synth.acoustics): pauses, level, noise at an
SNR, reverberation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s.synth.acoustics import NOISE_KINDS, pink_noise, synthetic_rir
from s2s.synth.scene import Scene, render

SR = 16000


def _speech(n: int = SR, seed: int = 0) -> torch.Tensor:
    """A stand-in for speech: noise under a 4 Hz syllable-like envelope."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    return 0.3 * torch.randn(n, generator=g) * (0.6 + 0.4 * torch.sin(2 * math.pi * 4 * t))


@settings(max_examples=40, deadline=None)
@given(
    lead=st.floats(0.0, 0.8),
    trail=st.floats(0.0, 0.8),
    peak=st.floats(0.01, 1.0),
    noise=st.sampled_from(("none", *NOISE_KINDS)),
    snr=st.floats(5.0, 30.0),
    rt60=st.sampled_from((0.0, 0.2, 0.7)),
)
def test_render_length_level_and_silent_lead(lead, trail, peak, noise, snr, rt60) -> None:
    speech = _speech(4000)
    scene = Scene(lead, trail, peak, noise, snr, rt60)
    g = torch.Generator().manual_seed(1)
    out = render(speech, scene, SR, g, babble=[_speech(3000, 7)])
    n_lead = round(lead * SR)
    assert out.shape == (n_lead + 4000 + round(trail * SR),)
    assert out.abs().max().item() == pytest.approx(peak, rel=1e-5)
    if noise == "none":  # nothing but the speech (and its room) after the pause
        assert not out[:n_lead].any()
        assert out[n_lead].abs() > 0
    # a pure function of its inputs and the seed
    again = render(speech, scene, SR, torch.Generator().manual_seed(1), babble=[_speech(3000, 7)])
    assert torch.equal(out, again)


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("snr", [5.0, 30.0])
def test_render_noise_at_snr_over_the_speech(kind: str, snr: float) -> None:
    """The pauses hold noise alone: their power, against the speech part's, gives the SNR."""
    speech = _speech(SR)
    scene = Scene(lead_s=1.0, trail_s=1.0, peak=0.5, noise=kind, snr_db=snr)
    babble = [_speech(5000, s) for s in (3, 4, 5)]
    out = render(speech, scene, SR, torch.Generator().manual_seed(0), babble)
    pauses = torch.cat([out[:SR], out[2 * SR :]])
    noise_power = pauses.pow(2).mean()
    speech_power = out[SR : 2 * SR].pow(2).mean() - noise_power  # independent: powers add
    assert 10 * math.log10(speech_power / noise_power) == pytest.approx(snr, abs=0.5)


def test_pink_noise_falls_3db_per_octave() -> None:
    x = pink_noise(2**18, torch.Generator().manual_seed(0)).double()
    assert x.std().item() == pytest.approx(1.0, rel=1e-3)
    spec = torch.stft(
        x, 4096, window=torch.hann_window(4096, dtype=torch.float64), return_complex=True
    )
    power = spec.abs().pow(2).mean(-1)  # (freq,)
    hz = torch.arange(power.numel()) * SR / 4096

    def band(lo: float) -> float:  # mean power in one octave
        return power[(hz >= lo) & (hz < 2 * lo)].mean().item()

    for lo in (100, 400, 1600):
        assert 10 * math.log10(band(lo) / band(2 * lo)) == pytest.approx(3.0, abs=0.5)


def test_synthetic_rir_decay_and_direct_to_reverberant_ratio() -> None:
    rir = synthetic_rir(0.5, 6.0, SR, torch.Generator().manual_seed(0)).double()
    assert rir.shape == (SR // 2,) and rir[0] == 1.0
    tail = rir[1:]
    assert 10 * math.log10(1.0 / tail.pow(2).sum().item()) == pytest.approx(6.0, abs=1e-3)
    # energy of the tail's first and last 100 ms: 60 dB per 0.5 s is 48 dB over 0.4 s
    first, last = rir[32 : 32 + 1600].pow(2).mean(), rir[-1600:].pow(2).mean()
    assert 10 * math.log10(first / last) == pytest.approx(48.0, abs=4.0)


def test_scene_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="pauses"):
        Scene(lead_s=-0.1)
    with pytest.raises(ValueError, match="peak"):
        Scene(peak=0.0)
    with pytest.raises(ValueError, match="noise"):
        Scene(noise="brown")
    with pytest.raises(ValueError, match="babble needs"):
        render(_speech(100), Scene(noise="babble"), SR, torch.Generator())
