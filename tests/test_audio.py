"""Audio loading (formats, resampling, down-mix, segments, errors) and speed perturbation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from s2s.data.audio import AudioError, load_audio, load_utterance
from s2s.data.perturb import speed_perturb


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def peak_hz(wave: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(wave.double()).abs()
    return float(spec.argmax()) * sr / wave.numel()


@pytest.mark.parametrize(
    ("suffix", "subtype", "atol"),
    [(".wav", "PCM_16", 1e-4), (".flac", "PCM_16", 1e-4), (".ogg", "VORBIS", 0.05)],
)
def test_round_trip_formats(tmp_path: Path, suffix: str, subtype: str, atol: float) -> None:
    data = sine(440, 16000, 0.5)
    path = tmp_path / f"a{suffix}"
    sf.write(path, data, 16000, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.shape == (len(data),)
    assert np.abs(wave.numpy() - data).max() < atol


def test_resample_8k_to_16k_keeps_frequency(tmp_path: Path) -> None:
    path = tmp_path / "8k.wav"
    sf.write(path, sine(440, 8000, 0.5), 8000)
    wave = load_audio(path, target_sr=16000)
    assert wave.shape == (8000,)
    assert abs(peak_hz(wave, 16000) - 440) <= 2  # 0.5 s -> 2 Hz FFT bins


def test_same_rate_is_not_resampled(tmp_path: Path) -> None:
    data = np.random.default_rng(0).uniform(-0.9, 0.9, 4000).astype(np.float32)
    path = tmp_path / "f.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    assert np.array_equal(load_audio(path).numpy(), data)


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left, right = sine(300, 16000, 0.25), sine(700, 16000, 0.25, amp=0.3)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wave = load_audio(path)
    assert np.allclose(wave.numpy(), (left + right) / 2, atol=1e-7)


def test_segment_reads_region(tmp_path: Path) -> None:
    data = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    path = tmp_path / "r.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    assert np.array_equal(load_audio(path, 0.25, 0.5).numpy(), data[4000:8000])
    assert np.array_equal(load_audio(path, 0.75).numpy(), data[12000:])


def test_segment_end_slack(tmp_path: Path) -> None:
    data = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    path = tmp_path / "r.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    # 10 ms rounding slack is clamped to the end of the recording
    assert np.array_equal(load_audio(path, 0.5, 1.01).numpy(), data[8000:])
    with pytest.raises(AudioError, match=r"'u1'.*r\.wav.*past the end"):
        load_audio(path, 0.5, 1.05, utt_id="u1")
    with pytest.raises(AudioError, match=r"'u2'.*r\.wav"):
        load_audio(path, 1.2, 1.3, utt_id="u2")


def test_missing_file_names_utt_and_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"'spk-1'.*nope\.wav.*not found"):
        load_audio(path, utt_id="spk-1")


def test_zero_length_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"'u0'.*empty\.wav.*zero-length"):
        load_audio(path, utt_id="u0")


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(AudioError, match=r"'bad'.*junk\.wav.*cannot read"):
        load_audio(path, utt_id="bad")


def test_non_finite_samples(tmp_path: Path) -> None:
    data = np.zeros(1000, dtype=np.float32)
    data[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*NaN"):
        load_audio(path)


def _write_datadir(d: Path, wav: Path, segments: bool) -> None:
    d.mkdir()
    if segments:
        (d / "wav.scp").write_text(f"rec1 {wav}\n")
        (d / "segments").write_text("rec1-a rec1 0.00 0.40\nrec1-b rec1 0.40 1.00\n")
        utts = ["rec1-a", "rec1-b"]
    else:
        (d / "wav.scp").write_text(f"rec1 {wav}\n")
        utts = ["rec1"]
    (d / "text").write_text("".join(f"{u} hello\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u} rec1\n" for u in utts))
    (d / "spk2utt").write_text("rec1 " + " ".join(utts) + "\n")


@pytest.mark.parametrize("segments", [False, True])
def test_load_utterance(tmp_path: Path, segments: bool) -> None:
    from s2s.data.datadir import load_datadir

    data = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)  # 1 s at 8 kHz
    wav = tmp_path / "rec1.wav"
    sf.write(wav, data, 8000, subtype="FLOAT")
    _write_datadir(tmp_path / "d", wav, segments)
    dd = load_datadir(tmp_path / "d")
    if segments:
        got = load_utterance(dd, "rec1-b", target_sr=8000)
        assert np.array_equal(got.numpy(), data[3200:])
        assert load_utterance(dd, "rec1-a", target_sr=16000).shape == (6400,)
    else:
        assert np.array_equal(load_utterance(dd, "rec1", target_sr=8000).numpy(), data)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_length_and_pitch(factor: float) -> None:
    sr = 16000
    wave = torch.from_numpy(sine(1000, sr, 1.0))
    out = speed_perturb(wave, sr, factor)
    assert out.shape == (math.ceil(sr / factor),)
    # faster playback raises the pitch by the same factor
    assert abs(peak_hz(out, sr) - 1000 * factor) <= 2


def test_speed_perturb_identity_and_errors() -> None:
    wave = torch.randn(1000)
    out = speed_perturb(wave, 16000, 1.0)
    assert torch.equal(out, wave) and out is not wave
    with pytest.raises(ValueError, match=r"speed factor must be > 0, got 0\.0"):
        speed_perturb(wave, 16000, 0.0)
    with pytest.raises(ValueError, match=r"expected a \(N,\) waveform, got shape \(1, 1000\)"):
        speed_perturb(wave[None], 16000, 0.9)
