"""Fbank features, the feature dump (nj=1 vs nj=2, speed, bad utterances), reader and CMVN."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
from helpers import BAD_AUDIO, write_bad_audio
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import Tensor

from s2s.data.audio import AudioError, load_audio
from s2s.data.features import (
    ONSET_HOLD_FRAMES,
    BadAudioError,
    FbankConfig,
    FeatureReader,
    GlobalCMVN,
    align_onset,
    compute_cmvn_stats,
    compute_fbank,
    compute_features,
    dump_features,
    frame_energy_db,
    speech_onset,
    utterance_cmvn,
)
from s2s.data.perturb import speed_perturb

# utt -> seconds; different lengths so shard offsets matter
UTTS = {"s1-a": 0.3, "s1-b": 0.55, "s2-a": 0.42}


def make_datadir(root: Path, utts: dict[str, float] = UTTS, corrupt: tuple[str, ...] = ()) -> Path:
    """Writes one wav per utterance (8 kHz for one of them) and the Kaldi files by hand."""
    rng = np.random.default_rng(0)
    d = root / "data"
    d.mkdir()
    scp, text, u2s = [], [], []
    for i, (utt, secs) in enumerate(sorted(utts.items())):
        sr = 8000 if i == 1 else 16000
        wav = root / f"{utt}.wav"
        if utt in corrupt:
            wav.write_bytes(rng.bytes(1000))
        else:
            sf.write(wav, rng.uniform(-0.3, 0.3, int(sr * secs)).astype(np.float32), sr)
        scp.append(f"{utt} {wav}\n")
        text.append(f"{utt} words\n")
        u2s.append(f"{utt} {utt}\n")
    (d / "wav.scp").write_text("".join(scp))
    (d / "text").write_text("".join(text))
    (d / "utt2spk").write_text("".join(u2s))
    (d / "spk2utt").write_text("".join(u2s))
    return d


def test_fbank_shape_and_equals_kaldi() -> None:
    for n in (16000, 4321, 400):
        wave = torch.rand(n) * 0.6 - 0.3
        feats = compute_fbank(wave)
        assert feats.shape == ((n - 400) // 160 + 1, 80)
        ref = kaldi.fbank(wave[None] * 32768, num_mel_bins=80, dither=0.0)
        assert torch.equal(feats, ref)


def test_fbank_too_short_and_config_checks() -> None:
    with pytest.raises(ValueError, match="shorter than one"):
        compute_fbank(torch.zeros(399))
    with pytest.raises(ValueError, match="num_mel_bins"):
        FbankConfig(num_mel_bins=0)
    cfg = OmegaConf.structured(FbankConfig)
    assert cfg.num_mel_bins == 80 and cfg.dither == 0.0


def test_level_normalised_features_ignore_gain_and_added_silence() -> None:
    g = torch.Generator().manual_seed(0)
    wave = 0.3 * torch.randn(8000, generator=g) * torch.hann_window(8000)  # a burst
    cfg = FbankConfig(level="max_frame")
    feats = compute_features(wave, cfg)
    assert feats.logsumexp(-1).max().abs() < 1e-5  # the loudest frame at 0
    quiet = compute_features(wave * 10 ** (-20 / 20), cfg)  # -20 dB
    assert torch.allclose(quiet, feats, atol=1e-3)
    # 400 ms of near-silence in front (40 frames): the same frames after it
    late = compute_features(torch.cat([1e-4 * torch.randn(6400, generator=g), wave]), cfg)
    assert torch.allclose(late[40:], feats, atol=1e-3)
    raw = compute_fbank(wave)
    assert torch.equal(compute_features(wave, FbankConfig()), raw)  # "none": Kaldi's as is
    with pytest.raises(ValueError, match="features.level"):
        FbankConfig(level="rms")


BELOW_DB = 12.0


def frames_at(levels_db: list[float], seed: int, bins: int = 8) -> Tensor:
    """(T, bins) log-mel frames whose energies are levels_db to within 0.5 dB: each bin
    ln(10^(level/10) / bins) plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(levels_db, dtype=torch.float64) * (math.log(10) / 10) - math.log(bins)
    return base[:, None] + 0.05 * torch.randn(
        len(levels_db), bins, generator=g, dtype=torch.float64
    )


# frames 3 dB or more clear of the onset threshold on either side, so the rounding of a sum
# never decides which side a frame is on
LOUD = st.floats(-BELOW_DB + 3, 0)
QUIET = st.floats(-80, -BELOW_DB - 3)


@settings(max_examples=60, deadline=None)
@given(
    head=st.lists(QUIET, max_size=12),
    speech=st.lists(st.one_of(LOUD, QUIET), max_size=30),
    front=st.lists(QUIET, max_size=40),
    pad=st.integers(0, 10),
    gain=st.floats(-30, 30),
    seed=st.integers(0, 2**16),
)
def test_aligned_features_start_pad_frames_before_the_onset_whatever_is_in_front(
    head, speech, front, pad, gain, seed
) -> None:
    """X: `head` quiet frames, then ONSET_HOLD_FRAMES at the loudest level (the loudness),
    then any frames, then a pause (so the quietest frame is under the threshold). Put in
    front of it, any number of frames quieter than the threshold leave every frame from the
    onset's pad on as it was; a gain shifts every frame and moves nothing."""
    levels = [*head, *[0.0] * ONSET_HOLD_FRAMES, *speech, -60.0]
    x = frames_at(levels, seed)
    onset = len(head)
    assert speech_onset(frame_energy_db(x), BELOW_DB) == onset
    out = align_onset(x, pad, BELOW_DB)
    assert out.shape[0] == x.shape[0] - onset + pad
    assert speech_onset(frame_energy_db(out), BELOW_DB) == pad
    kept = min(pad, onset)  # frames of x's own in front of the onset that stay
    assert torch.equal(out[pad - kept :], x[onset - kept :])
    if pad > onset:  # the rest: copies of the quietest frame
        assert torch.equal(out[: pad - onset], x[x.logsumexp(-1).argmin()].expand(pad - onset, -1))
    later = align_onset(torch.cat([frames_at(front, seed + 1), x]), pad, BELOW_DB)
    assert later.shape == out.shape
    assert torch.equal(later[pad - kept :], out[pad - kept :])
    if len(front) + onset >= pad:  # enough in front: cut there, the same frames as x's own
        assert torch.equal(later[pad - kept :], x[onset - kept :])
    shift = gain * math.log(10) / 10
    assert torch.allclose(align_onset(x + shift, pad, BELOW_DB), out + shift, atol=1e-9)


def test_aligned_features_of_a_recording_ignore_near_silence_in_front() -> None:
    """align_onset on compute_features: a burst behind its own 200 ms pause and then 0-500 ms
    more of near-silence (whole frames) gives the same frames, its onset 10 frames in."""
    g = torch.Generator().manual_seed(0)
    burst = 0.3 * torch.randn(8000, generator=g) * torch.hann_window(8000)
    wave = torch.cat([1e-4 * torch.randn(3200, generator=g), burst])
    cfg = FbankConfig(level="max_frame")
    raw = compute_features(wave, cfg)
    onset = speech_onset(frame_energy_db(raw), BELOW_DB)
    feats = align_onset(raw, 10, BELOW_DB)
    assert onset > 20 and torch.equal(feats, raw[onset - 10 :])
    assert speech_onset(frame_energy_db(feats), BELOW_DB) == 10
    for ms in (10, 30, 100, 500):
        late = compute_features(torch.cat([3e-4 * torch.randn(16 * ms, generator=g), wave]), cfg)
        assert late.shape[0] == raw.shape[0] + ms // 10
        torch.testing.assert_close(align_onset(late, 10, BELOW_DB), feats, atol=1e-4, rtol=0)


def test_a_click_does_not_move_the_onset() -> None:
    """The onset's loudness is the loudest level held for 30 ms, not the loudest frame: a
    click of one or two frames, however loud, leaves the onset where it was; three frames
    that loud are sound, and set it."""
    levels = [-60.0] * 20 + [0.0] * 15 + [-60.0] * 10
    x = frames_at(levels, 0)
    assert speech_onset(frame_energy_db(x), BELOW_DB) == 20
    for frames, onset in ((1, 20), (2, 20), (3, 40)):
        clicked = frames_at([*levels[:40], *[40.0] * frames, *levels[40 + frames :]], 0)
        assert speech_onset(frame_energy_db(clicked), BELOW_DB) == onset


def test_dump_nj1_nj2_identical_and_reader(tmp_path: Path) -> None:
    d = make_datadir(tmp_path)
    out1 = dump_features(d, tmp_path / "nj1", FbankConfig(), nj=1)
    out2 = dump_features(d, tmp_path / "nj2", FbankConfig(), nj=2)
    assert sorted(p.name for p in out2.glob("feats.*.npy")) == ["feats.1.npy", "feats.2.npy"]
    assert (out1 / "utt2num_frames").read_text() == (out2 / "utt2num_frames").read_text()
    r1, r2 = FeatureReader(out1), FeatureReader(out2)
    assert r1.keys() == r2.keys() == sorted(UTTS)
    for utt in UTTS:
        assert torch.equal(r1[utt], r2[utt])
        ref = compute_fbank(load_audio(tmp_path / f"{utt}.wav"))
        # the dump computes single-threaded, exact only up to summation order here
        assert torch.allclose(r1[utt], ref, rtol=0, atol=1e-4)
        assert r1.num_frames(utt) == ref.shape[0] == (int(16000 * UTTS[utt]) - 400) // 160 + 1
    assert r1.dim == 80 and len(r1) == 3 and "s1-b" in r1 and "zz" not in r1
    with pytest.raises(KeyError, match="zz"):
        r1["zz"]
    # a pickled reader (DataLoader worker) reopens its shards
    assert torch.equal(pickle.loads(pickle.dumps(r2))["s2-a"], r2["s2-a"])

    # re-dumping with fewer jobs removes the old shards
    dump_features(d, out2, FbankConfig(), nj=1)
    assert [p.name for p in out2.glob("feats.*.npy")] == ["feats.1.npy"]


def test_dump_speed_perturbed(tmp_path: Path) -> None:
    d = make_datadir(tmp_path, {"u1": 0.5})
    out = dump_features(d, tmp_path / "sp", FbankConfig(), speed=0.9)
    reader = FeatureReader(out)
    assert reader.keys() == ["sp0.9-u1"]
    ref = compute_fbank(speed_perturb(load_audio(tmp_path / "u1.wav"), 16000, 0.9))
    # the dump resamples single-threaded; the conv's summation order may differ here
    assert torch.allclose(reader["sp0.9-u1"], ref, rtol=0, atol=1e-4)
    assert (out / "utt2num_frames").read_text() == f"sp0.9-u1 {ref.shape[0]}\n"


def test_dump_bad_utterance(tmp_path: Path) -> None:
    d = make_datadir(tmp_path, corrupt=("s1-b",))
    with pytest.raises(AudioError, match=r"'s1-b'.*s1-b\.wav"):
        dump_features(d, tmp_path / "f", FbankConfig(), nj=2)  # raised in a worker
    assert not (tmp_path / "f" / "feats.index").exists()
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        out = dump_features(d, tmp_path / "f", FbankConfig(), skip_bad=True)
    assert FeatureReader(out).keys() == ["s1-a", "s2-a"]
    bad = (out / "bad_utts").read_text().splitlines()
    assert len(bad) == 1 and bad[0].startswith("s1-b ") and "s1-b.wav" in bad[0]


def test_dump_lists_every_bad_utterance_in_one_pass(tmp_path: Path) -> None:
    """Four kinds of bad audio among good utterances: one run reports all four (utterance,
    path, reason), writes no index, and with skip_bad dumps the rest and lists them. (nj=1:
    shards run the same code in workers; test_dump_bad_utterance covers nj=2.)"""
    nj = 1
    d = make_datadir(tmp_path)
    bad = write_bad_audio(tmp_path / "bad")
    lines = {f"bad-{n}": str(p) for n, p in bad.items()}
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        good = (d / name).read_text().splitlines()
        extra = [f"{u} {lines[u] if name == 'wav.scp' else u}" for u in lines]
        (d / name).write_text("".join(f"{x}\n" for x in sorted(good + extra)))

    with pytest.raises(BadAudioError) as e:
        dump_features(d, tmp_path / "f", nj=nj, min_frames=10)
    assert sorted(u for u, _, _ in e.value.bad) == sorted(lines)
    msg = str(e.value).splitlines()
    assert len(msg) == 5 and msg[-1].startswith(f"4 of 7 utterances of {d}")
    for n, (_, why) in BAD_AUDIO.items():
        line = next(m for m in msg if m.startswith(f"utterance 'bad-{n}' ({bad[n]}): "))
        assert re.search(why, line), line
    assert not (tmp_path / "f" / "feats.index").exists()

    with pytest.warns(UserWarning, match="skipped 4 of 7"):
        out = dump_features(d, tmp_path / "f", nj=nj, min_frames=10, skip_bad=True)
    assert FeatureReader(out).keys() == sorted(UTTS)
    listed = [line.split(" ", 2) for line in (out / "bad_utts").read_text().splitlines()]
    assert [(u, p) for u, p, _ in listed] == sorted(lines.items())
    assert (
        "too short: 1 frames (30 ms), the model needs 10"
        in dict((u, w) for u, _, w in listed)["bad-short"]
    )


def test_reader_reports_bad_index(tmp_path: Path) -> None:
    (tmp_path / "feats.index").write_text("u1 feats.1.npy 0 5\nu2 feats.1.npy x 5\n")
    with pytest.raises(ValueError, match=r"feats\.index:2:"):
        FeatureReader(tmp_path)
    (tmp_path / "feats.index").write_text("u1 feats.1.npy 0 5\n")
    np.save(tmp_path / "feats.1.npy", np.zeros((3, 80), np.float32))
    with pytest.raises(ValueError, match=r"feats\.1\.npy.*needs"):
        FeatureReader(tmp_path)["u1"]


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_cmvn_stats_match_numpy(tmp_path: Path, suffix: str) -> None:
    out = dump_features(make_datadir(tmp_path), tmp_path / "f", FbankConfig(), nj=1)
    stats_path = compute_cmvn_stats(out, tmp_path / f"cmvn{suffix}")
    reader = FeatureReader(out)
    allf = np.concatenate([reader[u].numpy().astype(np.float64) for u in reader])
    cmvn = GlobalCMVN.from_file(stats_path)
    assert np.allclose(cmvn.mean.numpy(), allf.mean(0), rtol=0, atol=1e-5)
    assert np.allclose(cmvn.std.numpy(), allf.std(0), rtol=1e-6, atol=0)
    normed = torch.cat([cmvn(reader[u]) for u in reader])
    assert normed.mean(0).abs().max() < 1e-4
    assert (normed.std(0, unbiased=False) - 1).abs().max() < 1e-4
    if suffix == ".json":
        stats = json.loads(stats_path.read_text())
        assert stats["count"] == allf.shape[0]
        assert np.allclose(stats["mean"], allf.mean(0), rtol=0, atol=1e-10)
        assert np.allclose(stats["std"], allf.std(0), rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="dim 40"):
        cmvn(torch.zeros(5, 40))


def test_global_cmvn_std_floor() -> None:
    cmvn = GlobalCMVN(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.0]), std_floor=0.5)
    out = cmvn(torch.tensor([[3.0, 3.0]]))
    assert torch.allclose(out, torch.tensor([[1.0, 2.0]]))


def test_utterance_cmvn() -> None:
    feats = torch.randn(50, 4) * torch.tensor([1.0, 3.0, 0.1, 5.0]) + 7.0
    feats[:, 2] = 4.0  # a constant dimension must not divide by zero
    out = utterance_cmvn(feats)
    assert torch.isfinite(out).all()
    assert out.mean(0).abs().max() < 1e-5
    assert torch.allclose(out[:, [0, 1, 3]].std(0, unbiased=False), torch.ones(3), atol=1e-5)
    assert torch.equal(out[:, 2], torch.zeros(50))
    centred = utterance_cmvn(feats, norm_vars=False)
    assert torch.allclose(centred, feats - feats.mean(0), atol=1e-5)


def _dump_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_killed_dump_reruns_only_unfinished_shards(tmp_path: Path, monkeypatch) -> None:
    """A dump killed in its third shard, run again, computes only that shard and the ones after
    it, and ends with exactly the files of a dump never interrupted; with other settings, a
    rerun computes everything."""
    import s2s.data.features as F

    utts = {f"u{i}": 0.2 + 0.03 * i for i in range(7)}
    d = make_datadir(tmp_path, utts)
    clean = _dump_files(dump_features(d, tmp_path / "clean", shard_utts=2))
    assert [n for n in clean if n.endswith(".npy")] == [f"feats.{k}.npy" for k in (1, 2, 3, 4)]
    assert "feats.plan" not in clean and not any(n.endswith(".done") for n in clean)

    real, computed = F._features, []

    def features(utt, *args):
        if utt == "u4" and kill:
            raise KeyboardInterrupt  # the process dies here
        computed.append(utt)
        return real(utt, *args)

    monkeypatch.setattr(F, "_features", features)
    out = tmp_path / "f"
    kill = True
    with pytest.raises(KeyboardInterrupt):
        dump_features(d, out, shard_utts=2)
    assert not (out / "feats.index").exists()
    assert sorted(p.name for p in out.glob("*.done")) == ["feats.1.done", "feats.2.done"]
    kill, computed[:] = False, []
    assert _dump_files(dump_features(d, out, shard_utts=2)) == clean
    assert computed == ["u4", "u5", "u6"]  # shards 3 and 4 only

    # killed again, then rerun with another feature setting: nothing is reused
    kill, computed[:] = True, []
    with pytest.raises(KeyboardInterrupt):
        dump_features(d, out, shard_utts=2)
    kill, computed[:] = False, []
    dump_features(d, out, FbankConfig(level="max_frame"), shard_utts=2)
    assert computed == sorted(utts)


def test_repaired_audio_is_read_again_after_a_failed_dump(tmp_path: Path) -> None:
    """The shard holding bad audio keeps no mark: once the file is repaired, the rerun reads it."""
    d = make_datadir(tmp_path, corrupt=("s1-b",))
    with pytest.raises(BadAudioError):
        dump_features(d, tmp_path / "f", shard_utts=1)
    sf.write(tmp_path / "s1-b.wav", np.zeros(8000, np.float32), 16000)
    out = dump_features(d, tmp_path / "f", shard_utts=1)
    assert FeatureReader(out).keys() == sorted(UTTS)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_a_pass_over_the_dump_does_not_grow_the_resident_set(tmp_path: Path) -> None:
    """Reading every utterance of a 48 MiB shard (an epoch, the CMVN statistics) leaves the
    reader's process about as large as before: a memory map would keep every page read."""
    frames, dim, n = 150_000, 80, 1000
    np.save(tmp_path / "feats.1.npy", np.random.default_rng(0).random((frames, dim), np.float32))
    step = frames // n
    index = "".join(f"u{i:04d} feats.1.npy {i * step} {step}\n" for i in range(n))
    (tmp_path / "feats.index").write_text(index)
    reader = FeatureReader(tmp_path)
    reader["u0000"]
    before = _rss_kib()
    total = sum(float(reader[u][0, 0]) for u in reader)
    grown = _rss_kib() - before
    assert total > 0 and grown < 12 * 1024, f"RSS grew by {grown} KiB over a 48 MiB pass"
