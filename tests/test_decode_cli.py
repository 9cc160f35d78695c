"""s2s-decode and Speech2Text on a tiny (untrained, seeded) experiment directory: audio at other
sample rates and channel counts, a corrupt file, text input, JSON output, data-dir decoding,
batched decoding equal to one-at-a-time decoding, and where decode settings come from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from helpers import make_exp
from omegaconf import OmegaConf

from s2s.cli.decode import main as decode_main
from s2s.data.datadir import write_datadir
from s2s.decode.inference import Speech2Text
from s2s.experiment import (
    ExperimentConfig,
    decoding_config,
    decoding_name,
)
from s2s.experiment.decode_config import BeamSearchConfig
from s2s.models.seq2seq import Seq2SeqModel


@pytest.fixture(scope="module")
def speech_exp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exp(tmp_path_factory.mktemp("decode"))


def tone(sr: int, seconds: float, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    wave = 0.3 * np.sin(2 * math.pi * freq * t) + 0.05 * np.sin(2 * math.pi * 3 * freq * t)
    return np.stack([wave] * channels, 1) if channels > 1 else wave


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio")
    files = {"8k": d / "a_8k.wav", "44k_stereo": d / "b_44k.flac", "corrupt": d / "c.wav"}
    sf.write(files["8k"], tone(8000, 0.8), 8000)
    sf.write(files["44k_stereo"], tone(44100, 0.6, channels=2, freq=300.0), 44100)
    files["corrupt"].write_bytes(b"RIFF\x00\x01garbage that is not audio" * 4)
    return files


def test_cli_decodes_good_files_and_reports_the_bad_one(
    speech_exp: Path, audio_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(audio_files[k]) for k in ("8k", "corrupt", "44k_stereo")]
    rc = decode_main(["--model", str(speech_exp), *paths])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [paths[0], paths[2]]
    assert str(audio_files["corrupt"]) in err and "1 of 3 files" in err

    rc = decode_main(["--model", str(speech_exp), "--format", "json", paths[0]])
    record = json.loads(capsys.readouterr().out)
    assert rc == 0 and record["input"] == paths[0] and len(record["nbest"]) == 2
    assert record["nbest"][0]["score"] >= record["nbest"][1]["score"]


def test_cli_reports_each_failing_file_in_one_line_and_decodes_the_rest(
    speech_exp: Path,
    audio_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """30 ms of audio (too short for the conv2d4 frontend), a file too long for the memory
    there is, a corrupt file and a missing one, between good files: one stderr line each,
    naming the file and the reason; the good files are decoded; exit status 1."""
    short, long = tmp_path / "short_30ms.wav", tmp_path / "long_3s.wav"
    sf.write(short, tone(16000, 0.03), 16000)
    sf.write(long, tone(16000, 3.0), 16000)
    encode = Seq2SeqModel.encode

    def encode_or_run_out_of_memory(self, src, src_lens):
        if src.shape[1] > 200:  # stands in for an encoder too big for a long input: a real
            torch.empty(10**15, dtype=torch.uint8)  # allocator failure (1 PB), as on a 2 h file
        return encode(self, src, src_lens)

    monkeypatch.setattr(Seq2SeqModel, "encode", encode_or_run_out_of_memory)
    good = [str(audio_files["8k"]), str(audio_files["44k_stereo"])]
    bad = [str(short), str(long), str(audio_files["corrupt"]), str(tmp_path / "missing.wav")]
    rc = decode_main(["--model", str(speech_exp), good[0], *bad, good[1]])
    out, err = capsys.readouterr()
    assert rc == 1
    assert [line.split("\t")[0] for line in out.splitlines()] == good
    lines = err.splitlines()
    assert all(line.startswith("s2s-decode: ") for line in lines), err  # no traceback
    reasons = ["too short: 30 ms", "too long for this model on cpu", "cannot read", "not found"]
    for path, reason in zip(bad, reasons):
        assert len([line for line in lines if path in line]) == 1, (path, err)
        assert reason in next(line for line in lines if path in line)
    assert lines[-1] == "s2s-decode: 4 of 6 files could not be decoded"

    # A data dir is decoded whole or not at all: the short utterance stops it, in one line.
    data = tmp_path / "data"
    write_datadir(data, {"u1": good[0], "u2": str(short)}, {"text": {"u1": "a", "u2": "b"}},
                  {"u1": "u1", "u2": "u2"})  # fmt: skip
    args = ["--model", str(speech_exp), "--data", str(data), "--out", str(tmp_path / "dec")]
    assert decode_main(args) == 2
    err = capsys.readouterr().err  # (also tqdm's progress bar)
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("s2s-decode: ")] == [
        f"s2s-decode: utterance 'u2' ({short}): too short: 30 ms of audio; the model needs at "
        "least 85 ms (7 feature frames)"
    ]


def test_cli_decodes_many_files_in_batches_in_the_order_given(
    speech_exp: Path,
    audio_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Six files of other lengths and rates, a corrupt one and a long one among them: the
    short ones go through the search in one length-sorted batch (as --data does), the long one
    (> --max-segment) is split by voice activity where it stands; one output per file in the
    order given, the corrupt file one stderr line, and every n-best list exactly what decoding
    that file alone gives."""
    short = []
    for i, (sr, seconds) in enumerate([(16000, 0.5), (8000, 1.1), (22050, 0.7), (16000, 0.9)]):
        short.append(tmp_path / f"s{i}.wav")
        sf.write(short[-1], tone(sr, seconds, freq=200.0 + 70 * i), sr)
    long = tmp_path / "long.wav"  # two tones 0.9 s apart: two segments
    sf.write(long, np.concatenate([tone(16000, 1.0), np.zeros(14400), tone(16000, 1.0)]), 16000)
    files = [short[0], audio_files["8k"], short[1], audio_files["corrupt"], long, short[2],
             audio_files["44k_stereo"], short[3]]  # fmt: skip
    s2t = Speech2Text.from_dir(speech_exp)
    alone = {f: s2t(f) for f in files if f not in (long, audio_files["corrupt"])}

    batches: list[int] = []
    decode_sources = Speech2Text.decode_sources

    def spy(self, sources):
        batches.append(len(sources))
        return decode_sources(self, sources)

    monkeypatch.setattr(Speech2Text, "decode_sources", spy)
    args = ["--model", str(speech_exp), "--format", "json", "--max-segment", "1.5"]
    assert decode_main([*args, *map(str, files)]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    long_segments = [r for r in records if r["input"] == str(long)]
    assert len(long_segments) == 2 and all(r["end"] - r["start"] <= 1.5 for r in long_segments)
    inputs = [r["input"] for r in records]
    want_order = [str(f) for f in files if f != audio_files["corrupt"] for _ in
                  range(2 if f == long else 1)]  # fmt: skip
    assert inputs == want_order
    for r in records:
        if r["input"] != str(long):
            want = alone[Path(r["input"])]
            assert [h["text"] for h in r["nbest"]] == [w.text for w in want]
            assert [h["score"] for h in r["nbest"]] == pytest.approx(
                [w.score for w in want], abs=1e-4
            )
    assert batches[0] == 6  # the six whole files in one batch; then the long file's segments
    assert [line for line in err.splitlines() if line.startswith("s2s-decode: ")] == [
        next(line for line in err.splitlines() if str(audio_files["corrupt"]) in line),
        "s2s-decode: 1 of 8 files could not be decoded",
    ]


def test_speech2text_takes_a_list(speech_exp: Path, audio_files: dict[str, Path]) -> None:
    """A list of paths and waveforms: their n-best lists in the order given, each what it gets
    alone; a bad one raises its AudioError."""
    from s2s.data.audio import AudioError

    s2t = Speech2Text.from_dir(speech_exp)
    wave = torch.from_numpy(tone(16000, 1.3, freq=500.0)).float()
    items = [audio_files["8k"], wave, audio_files["44k_stereo"]]
    got = s2t(items, sample_rate=16000)
    want = [s2t(audio_files["8k"]), s2t(wave, sample_rate=16000), s2t(audio_files["44k_stereo"])]
    assert [[r.tokens for r in nb] for nb in got] == [[r.tokens for r in nb] for nb in want]
    with pytest.raises(AudioError, match="c.wav"):
        s2t([audio_files["8k"], audio_files["corrupt"]])


def test_resampling_and_downmix_match_the_waveform_api(
    speech_exp: Path, audio_files: dict[str, Path]
) -> None:
    s2t = Speech2Text.from_dir(speech_exp)
    by_path = s2t(audio_files["44k_stereo"])
    wave, sr = sf.read(audio_files["44k_stereo"], dtype="float32", always_2d=True)
    by_wave = s2t(torch.from_numpy(wave.T.copy()), sample_rate=sr)  # (C, N) at 44.1 kHz
    assert [r.tokens for r in by_path] == [r.tokens for r in by_wave]
    mono16k = AF.resample(torch.from_numpy(wave.mean(1)), sr, 16000)
    assert s2t(mono16k, sample_rate=16000)[0].tokens == by_path[0].tokens
    with pytest.raises(ValueError, match="sample_rate"):
        s2t(mono16k)


def test_a_minute_of_audio_decodes_without_cache_growth(
    speech_exp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Speech2Text runs the lean engine: on a 60 s input the caches are sized once at the start
    of the search and never grow, and the peak cache bytes are reported."""
    from s2s.attention.cache import AttentionCache

    grew: list[tuple[int, int]] = []
    reserve = AttentionCache.reserve

    def spy(self: AttentionCache, slots: int) -> None:
        if slots > self.capacity:
            grew.append((self.capacity, slots))
        reserve(self, slots)

    monkeypatch.setattr(AttentionCache, "reserve", spy)
    s2t = Speech2Text.from_dir(speech_exp)
    torch.manual_seed(2)
    result = s2t(torch.randn(60 * 16000) * 0.1, sample_rate=16000)
    assert result and not grew
    assert s2t.peak_cache_bytes > 0


def test_padded_batch_equals_each_alone(speech_exp: Path) -> None:
    s2t = Speech2Text.from_dir(speech_exp)
    torch.manual_seed(1)
    waves = [torch.randn(n) * 0.1 for n in (16000, 7000, 11000)]
    feats = [s2t.features(w) for w in waves]
    together = s2t.decode_sources(feats)
    for f, nbest in zip(feats, together):
        alone = s2t.decode_sources([f])[0]
        assert [r.tokens for r in alone] == [r.tokens for r in nbest]
        for a, b in zip(alone, nbest):
            assert a.score == pytest.approx(b.score, abs=1e-4)


def test_text_model_decodes_a_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = make_exp(tmp_path, text=True)
    docs = tmp_path / "docs.txt"
    docs.write_text("the red cup number 3\nthe small bird number 12\n")
    assert decode_main(["--model", str(exp), "--text", str(docs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"{docs}:1", f"{docs}:2"]
    assert decode_main(["--model", str(exp), "--text", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_decode_datadir_writes_hyp_ref_nbest_stats(
    speech_exp: Path, audio_files: dict[str, Path], tmp_path: Path
) -> None:
    wav = {"u1": str(audio_files["8k"]), "u2": str(audio_files["44k_stereo"])}
    data = tmp_path / "data"
    write_datadir(
        data, wav, {"text": {"u1": "red cup", "u2": "blue dog"}}, {"u1": "u1", "u2": "u2"}
    )
    out = tmp_path / "dec"
    assert decode_main(["--model", str(speech_exp), "--data", str(data), "--out", str(out)]) == 0
    assert [line.split()[0] for line in (out / "hyp.txt").read_text().splitlines()] == ["u1", "u2"]
    assert (out / "ref.txt").read_text() == "u1 red cup\nu2 blue dog\n"
    nbest = (out / "nbest.txt").read_text().splitlines()
    assert len(nbest) == 4 and nbest[0].split()[:2] == ["u1", "1"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["utterances"] == 2 and stats["peak_cache_mib"] > 0
    assert stats["peak_memory_mib"] is None  # GPU peak only on CUDA
    assert stats["cache_bytes_per_token"] > 0


def test_missing_experiment_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert decode_main(["--model", str(tmp_path / "nope"), "x.wav"]) == 2
    assert "nope: no such experiment directory or model pack" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert decode_main(["--model", str(tmp_path / "empty"), "x.wav"]) == 2
    assert "config.yaml not found" in capsys.readouterr().err


def test_decode_settings_config_yaml_then_decode_yaml_then_overrides(
    speech_exp: Path, tmp_path: Path
) -> None:
    """config.yaml says beam 3, nbest 2, max_len_b 6; the YAML beam 4, min_len 1; the override
    beam 2: each later layer wins for what it sets, and the run is named after what differs
    from the YAML's own settings."""
    yaml = tmp_path / "dec.yaml"
    yaml.write_text("decode:\n  beam_size: 4\n  min_len: 1\n")
    s2t = Speech2Text.from_dir(
        speech_exp, decode_config=yaml, decode_overrides=["decode.beam_size=2"]
    )
    d = s2t.decode_cfg
    assert (d.beam_size, d.min_len, d.nbest, d.max_len_b) == (2, 1, 2, 6)
    assert decoding_name(d, yaml) == "dec_beam_size2_nbest2_max_len_b6"
    assert decoding_name(decoding_config(speech_exp, yaml).decode, yaml) == "dec_nbest2_max_len_b6"
    bad = tmp_path / "bad.yaml"
    bad.write_text("decode:\n  beam_size: 4\nmodel:\n  ctc_weight: 0.5\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*only decode:.*\['model'\]"):
        Speech2Text.from_dir(speech_exp, decode_config=bad)
    with pytest.raises(ValueError, match=r"only decode\.\* settings.*model\.ctc_weight"):
        Speech2Text.from_dir(speech_exp, decode_overrides=["model.ctc_weight=0.5"])


def test_cli_decode_settings_on_the_command_line(
    speech_exp: Path,
    audio_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wav = str(audio_files["8k"])
    # five hypotheses need beam 5 (config.yaml: beam 3, nbest 2)
    args = ["--model", str(speech_exp), "--format", "json"]
    assert decode_main([*args, wav, "decode.beam_size=5", "decode.nbest=5"]) == 0
    assert len(json.loads(capsys.readouterr().out)["nbest"]) == 5
    assert decode_main([*args, "beam_size=5", wav]) == 2
    assert "only decode.* settings" in capsys.readouterr().err

    data = tmp_path / "data"
    write_datadir(data, {"u1": wav}, {"text": {"u1": "red cup"}}, {"u1": "u1"})
    out = tmp_path / "dec"
    args = ["--model", str(speech_exp), "--data", str(data), "--out", str(out)]
    assert decode_main([*args, "decode.beam_size=4"]) == 0
    held = OmegaConf.load(out / "decode.yaml").decode
    assert (held.beam_size, held.nbest, held.max_len_b) == (4, 2, 6)
    assert json.loads((out / "stats.json").read_text())["beam_size"] == 4
    assert decode_main([*args, "decode.beam_size=4"]) == 0  # the same settings: a re-run
    capsys.readouterr()
    assert decode_main([*args, "decode.beam_size=2"]) == 2  # other settings: not mixed in
    assert f"{out} holds a decoding run with other settings" in capsys.readouterr().err
    assert OmegaConf.load(out / "decode.yaml").decode.beam_size == 4


def test_cli_no_kernels_reaches_the_search(
    speech_exp: Path, audio_files: dict[str, Path], tmp_path: Path
) -> None:
    """--no-kernels is decode.kernels=false: held in the decode dir's settings (so it never
    shares a dir with a kernel run)."""
    data = tmp_path / "data"
    write_datadir(data, {"u1": str(audio_files["8k"])}, {"text": {"u1": "a"}}, {"u1": "u1"})
    out = tmp_path / "dec"
    args = ["--model", str(speech_exp), "--data", str(data), "--out", str(out)]
    assert decode_main([*args, "--no-kernels"]) == 0
    assert OmegaConf.load(out / "decode.yaml").decode.kernels is False


def test_the_encoder_takes_long_batches_in_chunks(speech_exp: Path, monkeypatch) -> None:
    """Past ENCODE_FRAMES padded frames, encode_sources runs the encoder over length-sorted
    chunks and pads their outputs into one batch, in the order given: the same memory as one
    padded batch (up to rounding) and the same n-best lists."""
    import s2s.decode.inference as inference

    s2t = Speech2Text.from_dir(speech_exp)
    g = torch.Generator().manual_seed(0)
    sources = [torch.randn(n, 80, generator=g) for n in (90, 300, 40, 210, 120)]
    one_memory, one_lens = s2t.encode_sources(sources)
    one = s2t.decode_sources(sources)
    calls: list[int] = []
    encode = s2t.model.encode
    monkeypatch.setattr(s2t.model, "encode", lambda x, n: calls.append(len(n)) or encode(x, n))
    monkeypatch.setattr(inference, "ENCODE_FRAMES", 400)
    memory, lens = s2t.encode_sources(sources)
    assert len(calls) > 1 and max(calls) < len(sources)
    assert torch.equal(lens, one_lens) and memory.shape == one_memory.shape
    keep = torch.arange(memory.shape[1])[None, :] < lens[:, None]
    assert torch.allclose(memory[keep], one_memory[keep], atol=1e-5)
    assert [[r.tokens for r in nb] for nb in s2t.decode_sources(sources)] == [
        [r.tokens for r in nb] for nb in one
    ]


@pytest.mark.parametrize("views, shifts", [(2, (0, 2)), (3, (0, 1, 2)), (4, (0, 1, 2, 3))])
def test_encoder_views_average_encodings_started_across_the_subsampling_step(
    speech_exp: Path, views: int, shifts: tuple[int, ...]
) -> None:
    """decode.encoder_views=N: each source's memory is the mean of its encodings started
    j * factor // N frames in (a source the frontend could not take that much shorter keeps
    its start), each encoded alone here, cut to the shortest view; padded frames are zeros;
    and the search over a batch finds what it finds for each source alone."""
    s2t = Speech2Text.from_dir(speech_exp, decode_overrides=[f"decode.encoder_views={views}"])
    assert s2t.model.subsampling_factor == 4  # the conv2d4 frontend
    need = s2t.model.min_input_length
    g = torch.Generator().manual_seed(0)
    sources = [torch.randn(n, 80, generator=g) for n in (90, 31, need, need + 1)]
    memory, lens = s2t.encode_sources(sources)
    with torch.inference_mode():
        for b, src in enumerate(sources):
            starts = [k if src.shape[0] - k >= need else 0 for k in shifts]
            views_alone = [
                s2t.model.encode(src[k:][None], torch.tensor([src.shape[0] - k])) for k in starts
            ]
            shortest = min(int(n) for _, n in views_alone)
            expected = torch.stack([m[0, :shortest] for m, _ in views_alone]).mean(0)
            assert int(lens[b]) == shortest
            torch.testing.assert_close(memory[b, :shortest], expected, atol=1e-5, rtol=0)
            assert not memory[b, shortest:].any()
    together = s2t.decode_sources(sources)
    for src, nbest in zip(sources, together):
        assert [r.tokens for r in s2t.decode_sources([src])[0]] == [r.tokens for r in nbest]


def test_views_merged_by_scores_search_the_mean_of_each_views_log_probs(tmp_path: Path) -> None:
    """decode.views_merge=scores: greedy search over N views takes, step by step, the argmax
    of the mean over the views of the decoder's log-probs, each teacher-forced here on its
    view's encoding computed alone (started j * 4 // N frames in), and its log-prob is the sum
    of those means. Every step's best token leads the next by over 1e-3, so rounding cannot
    decide a token."""
    from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

    exp = make_exp(tmp_path)
    views, limit = 3, 6
    s2t = Speech2Text.from_dir(exp, decode_overrides=[
        "decode.beam_size=1", "decode.nbest=1", f"decode.max_len_b={limit}",
        f"decode.encoder_views={views}", "decode.views_merge=scores",
    ])  # fmt: skip
    g = torch.Generator().manual_seed(1)
    sources = [torch.randn(n, 80, generator=g) for n in (90, 47)]
    with pytest.raises(ValueError, match="views_merge=scores searches 3 encodings"):
        s2t.encode_sources(sources)
    found = s2t.decode_sources(sources)
    model = s2t.model
    with torch.inference_mode():
        for src, nbest in zip(sources, found):
            encs = [
                model.encode(src[k:][None], torch.tensor([src.shape[0] - k])) for k in (0, 1, 2)
            ]
            prefix, total = [BOS_ID], 0.0
            for t in range(limit + 1):
                x = torch.tensor([prefix])
                lens = torch.tensor([len(prefix)])
                logits = [model.decoder(x, lens, m, n)[0, -1].double() for m, n in encs]
                logp = torch.stack([lo.log_softmax(-1) for lo in logits]).mean(0)
                logp[[PAD_ID, BOS_ID]] = float("-inf")
                if t == limit:  # the search's length limit: EOS only
                    logp[torch.arange(logp.numel()) != EOS_ID] = float("-inf")
                top = logp.topk(2)
                assert t == limit or float(top.values[0] - top.values[1]) > 1e-3
                token = int(top.indices[0])
                total += float(logp[token])
                if token == EOS_ID:
                    break
                prefix.append(token)
            assert nbest[0].tokens == prefix[1:]
            assert nbest[0].log_prob == pytest.approx(total, abs=1e-4)


def test_views_merged_by_scores_batch_as_alone_and_keep_the_lm_once(
    tmp_path: Path, monkeypatch
) -> None:
    """With CTC (a partial scorer, once per view), a batch of sources finds what each finds
    alone, and so it does with the encoder run in chunks (each view's chunks put back in
    order); with one view, views_merge=scores is the plain search; a scorer that reads no
    encoding (the LM) is in the ensemble once, at its own weight."""
    import s2s.decode.inference as inference
    from s2s.decode.scorer_set import view_ensemble
    from s2s.decode.scorers import OnEncoding, Weighted

    exp = make_exp(tmp_path, ctc=0.3)
    over = ["decode.beam_size=3", "decode.max_len_b=6", "decode.views_merge=scores"]
    s2t = Speech2Text.from_dir(exp, decode_overrides=[*over, "decode.encoder_views=2"])
    g = torch.Generator().manual_seed(0)
    sources = [torch.randn(n, 80, generator=g) for n in (90, 31, 120)]
    together = s2t.decode_sources(sources)
    for src, nbest in zip(sources, together):
        assert [r.tokens for r in s2t.decode_sources([src])[0]] == [r.tokens for r in nbest]
    monkeypatch.setattr(inference, "ENCODE_FRAMES", 150)  # a chunk per source
    assert [[r.tokens for r in nb] for nb in s2t.decode_sources(sources)] == [
        [r.tokens for r in nb] for nb in together
    ]
    monkeypatch.undo()
    one = Speech2Text.from_dir(exp, decode_overrides=[*over, "decode.encoder_views=1"])
    plain = Speech2Text.from_dir(exp, decode_overrides=over[:2])
    assert [[r.tokens for r in nb] for nb in one.decode_sources(sources)] == [
        [r.tokens for r in nb] for nb in plain.decode_sources(sources)
    ]
    encodings = s2t.encode_views(sources)
    real = s2t.scorers() | {"lm": Weighted(s2t.scorers()["decoder"].scorer, 0.5)}
    ens = view_ensemble(real, encodings)
    assert list(ens) == ["decoder@0", "ctc@0", "decoder@1", "ctc@1", "lm"]
    assert [w.weight for w in ens.values()] == pytest.approx([0.35, 0.15, 0.35, 0.15, 0.5])
    assert ens["lm"] is real["lm"] and isinstance(ens["ctc@1"].scorer, OnEncoding)
    assert ens["ctc@1"].scorer.memory is encodings[1][0]


def test_encoder_views_are_checked(tmp_path: Path) -> None:
    """At least one view; several only where a speech frontend subsamples (a text encoder
    has no step to start across)."""
    with pytest.raises(ValueError, match="encoder_views must be >= 1, got 0"):
        BeamSearchConfig(encoder_views=0)
    with pytest.raises(ValueError, match="views_merge must be one of .*, got 'mean'"):
        BeamSearchConfig(views_merge="mean")
    exp = make_exp(tmp_path, text=True)
    with pytest.raises(ValueError, match="decode.encoder_views=2 .* not this model"):
        Speech2Text.from_dir(exp, decode_overrides=["decode.encoder_views=2"])

    class Graphs:  # what Speech2Text sees of an ONNX bundle's model: no frontend to read
        def to(self, device):
            return self

        def eval(self):
            return self

    with pytest.raises(ValueError, match="encoder_views=3 .* not an ONNX bundle"):
        Speech2Text(Graphs(), None, ExperimentConfig(), decode=BeamSearchConfig(encoder_views=3))


def test_onset_aligned_decoding_reads_the_same_frames_whatever_is_in_front(
    speech_exp: Path, tmp_path: Path
) -> None:
    """decode.onset_pad_ms: a burst behind 0-370 ms of near-silence (whole frames) is decoded
    from the same frames, from audio or from a feature dump, with its onset pad_ms in; text
    sources have no onset and decode as before."""
    from s2s.data.datadir import load_datadir
    from s2s.data.features import (
        compute_features,
        dump_features,
        frame_energy_db,
        speech_onset,
    )
    from s2s.decode.decode_dir import datadir_sources

    s2t = Speech2Text.from_dir(speech_exp, decode_overrides=["decode.onset_pad_ms=50"])
    plain = Speech2Text.from_dir(speech_exp)
    g = torch.Generator().manual_seed(0)
    burst = torch.from_numpy(tone(16000, 0.5)).float() * torch.hann_window(8000)
    wave = torch.cat([3e-4 * torch.randn(1600, generator=g), burst])
    feats = s2t.features(wave)
    raw = compute_features(wave, s2t.fbank)  # before CMVN
    raw_onset = speech_onset(frame_energy_db(raw), 12.0)
    assert raw_onset > 5 and feats.shape[0] == raw.shape[0] - raw_onset + 5
    waves = {"u0": wave}
    for ms in (30, 100, 370):
        late = torch.cat([3e-4 * torch.randn(16 * ms, generator=g), wave])
        waves[f"u{ms}"] = late
        assert plain.features(late).shape[0] == plain.features(wave).shape[0] + ms // 10
        torch.testing.assert_close(s2t.features(late), feats, atol=1e-4, rtol=0)
    d = tmp_path / "data"
    paths = {}
    for u, w in waves.items():
        paths[u] = str(tmp_path / f"{u}.wav")
        sf.write(paths[u], w.numpy(), 16000, subtype="FLOAT")
    write_datadir(d, paths, {"text": {u: "red cup" for u in waves}}, {u: u for u in waves})
    dump = dump_features(d, tmp_path / "dump", s2t.fbank)
    get, _ = datadir_sources(s2t, load_datadir(d), dump)
    for u in waves:
        torch.testing.assert_close(get(u), feats, atol=1e-4, rtol=0)
    # no pad and the onset in the last frames: too few frames left, decoded as it is
    bare = Speech2Text.from_dir(speech_exp, decode_overrides=["decode.onset_pad_ms=0"])
    need = bare.model.min_input_length
    end = torch.cat([3e-4 * torch.randn(8000, generator=g), burst[3600:4400]])
    raw_end = compute_features(end, bare.fbank)
    assert raw_end.shape[0] - speech_onset(frame_energy_db(raw_end), 12.0) < need
    torch.testing.assert_close(bare.features(end), plain.features(end))
    with pytest.raises(ValueError, match="onset_pad_ms must be >= 0"):
        BeamSearchConfig(onset_pad_ms=-1.0)
    with pytest.raises(ValueError, match="onset_below_db must be > 0"):
        BeamSearchConfig(onset_below_db=0.0)
    text_exp = make_exp(tmp_path / "text", text=True)
    texts = Speech2Text.from_dir(text_exp, decode_overrides=["decode.onset_pad_ms=50"])
    as_before = Speech2Text.from_dir(text_exp).decode_texts(["the red cup number 3"])
    assert texts.decode_texts(["the red cup number 3"])[0][0].tokens == as_before[0][0].tokens
