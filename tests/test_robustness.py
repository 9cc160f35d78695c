"""The robustness evaluation (s2s.evaluate.robustness): its measures on hand-made inputs, and a
whole run on a tiny (untrained, seeded) model and three synthesised utterances."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
from helpers import make_exp

from s2s.data.datadir import write_datadir
from s2s.decode.inference import Result, Speech2Text
from s2s.evaluate import robustness as R
from s2s.evaluate.long_audio import segment_contents
from s2s.metrics import compute
from s2s.metrics.resegment import resegment
from s2s.synth.scene import join_with_pauses
from s2s.synth.tts import SAMPLE_RATE, synthesize

PHRASES = ["good morning", "the red cup is on the table", "we like the small bird"]


def test_onset_invariance_counts_utterances_unchanged_at_every_onset() -> None:
    hyps = [["a", "b", "c", "d"], ["a", "b", "x", "d"], ["a", "y", "c", "d"]]
    assert R.onset_invariance(hyps) == 0.5  # a and d; b changes at one onset, c at another
    assert R.onset_invariance(hyps[:1]) == 1.0
    with pytest.raises(ValueError, match="one hypothesis per utterance"):
        R.onset_invariance([["a", "b"], ["a"]])


def test_segments_matching_needs_one_segment_per_utterance_with_its_text() -> None:
    alone = ["a", "b", "c", "d"]
    # segment 0: utterance 0, same text; segment 1: utterances 1 and 2 together; segment 2:
    # utterance 3, other text; segment 3: utterance 0 again (so 0 is split in two).
    texts, contents = ["a", "bc", "z", "a"], [[0], [1, 2], [3], [0]]
    assert R.segments_matching(texts, contents, alone) == 0.0
    assert R.segments_matching(texts[:3], contents[:3], alone) == 0.25
    assert R.segments_matching(["a", "b", "c", "d"], [[0], [1], [2], [3]], alone) == 1.0


def test_steadiness_is_counted_among_the_outputs_right_at_onset_0() -> None:
    refs = ["Der Hund.", "eine Katze", "zwei", "drei"]
    at0 = ["der hund", "eine Katze!", "zwei", "vier"]  # three right (lc.rm), one wrong
    later = [["der hund", "eine Katze", "zwo", "drei"], ["Der Hund.", "eine katze", "zwei", "x"]]
    # utterance 3 becomes right later: not counted; utterance 2 goes wrong at one onset
    assert R.right_and_kept([at0, *later], refs) == (3, pytest.approx(2 / 3))
    assert R.right_and_kept([at0], refs) == (3, 1.0)
    assert R.right_and_kept([["x"] * 4, *later], refs) == (0, 0.0)


def test_conditions_change_the_waveform_as_named() -> None:
    wave = 0.5 * torch.sin(torch.arange(8000) / 5.0)
    late = R.with_onset(wave, 30, SAMPLE_RATE, 3e-4, seed=0)
    assert late.numel() == wave.numel() + 480 and torch.equal(late[480:], wave)
    assert late[:480].abs().max() < 3e-4 * 6
    assert R.with_level(wave, -20, SAMPLE_RATE).abs().max().item() == pytest.approx(0.05, rel=1e-5)
    assert R.with_level(wave, 12, SAMPLE_RATE).abs().max().item() == 1.0  # clipped
    noisy = R.with_snr(wave, 10.0, SAMPLE_RATE, seed=0)
    snr = 10 * math.log10(wave.pow(2).mean() / (noisy - wave).pow(2).mean())
    assert snr == pytest.approx(10.0, abs=0.1)


def make_data(tmp_path, phrases: list[str]) -> tuple[Path, dict[str, str]]:
    """A data dir of the phrases synthesised (utt -> wav path)."""
    wavs, texts = {}, {}
    for i, phrase in enumerate(phrases):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.5 * synthesize(phrase, "en-us", seed=i)).numpy(), SAMPLE_RATE)
        wavs[f"spk-u{i}"], texts[f"spk-u{i}"] = str(path), phrase
    data = tmp_path / "data"
    write_datadir(data, wav_scp=wavs, texts={"text": texts}, utt2spk=dict.fromkeys(wavs, "spk"))
    return data, wavs


def run_benchmark(exp: Path, data: Path, out: Path) -> dict:
    args = ["--model", str(exp), "--data", str(data), "--onsets", "0", "300"]
    assert R.main([*args, "--levels", "-10", "--snrs", "10", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def decoded_directly(s2t: Speech2Text, wavs: dict[str, str]) -> tuple[dict, dict]:
    """Each condition of run_benchmark built here from the files and decoded one waveform at a
    time as Speech2Text decodes a waveform; and the long recording transcribed with the
    utterances' spans."""
    waves = [s2t.load(w) for w in wavs.values()]
    sr = s2t.sample_rate
    conditions = {
        "onset 0 ms": waves,
        "onset 300 ms": [R.with_onset(w, 300, sr, R.FLOOR, i) for i, w in enumerate(waves)],
        "level -10 dB": [R.with_level(w, -10, sr) for w in waves],
        "snr 10 dB": [R.with_snr(w, 10, sr, i) for i, w in enumerate(waves)],
    }
    hyps = {name: [s2t(w, sr)[0].text for w in ws] for name, ws in conditions.items()}
    recording, spans = join_with_pauses(waves, round(0.6 * sr), R.FLOOR, sr)
    segments = s2t.transcribe(recording, sr)
    texts = [seg.text for seg in segments]
    contents = segment_contents(segments, spans, sr)
    long = {"texts": texts, "matching": R.segments_matching(texts, contents, hyps["onset 0 ms"])}
    long["resegmented"] = resegment(texts, PHRASES)  # the references as written
    return hyps, long


def check_report(report: dict, hyps: dict, long: dict) -> None:
    """Every condition's hypotheses are those of its own waveform decoded directly, its share
    'same as at 0 ms' is counted from them, and the long recording's figures are those of its
    direct transcription."""
    rows = report["conditions"]
    assert list(rows) == list(hyps)
    alone = hyps["onset 0 ms"]
    for name, row in rows.items():
        assert row["hyps"] == hyps[name], name
        same = sum(a == b for a, b in zip(hyps[name], alone)) / len(alone)
        assert row["same_as_onset_0"] == same, name
        assert row["right_kept"] == R.right_and_kept([alone, hyps[name]], PHRASES)[1], name
    assert report["onset_invariance"] == R.onset_invariance([alone, hyps["onset 300 ms"]])
    assert report["long_recording"]["texts"] == long["texts"]
    assert report["long_recording"]["matching"] == long["matching"]
    assert report["long_recording"]["resegmented"] == long["resegmented"]
    refs = PHRASES
    assert (
        report["long_recording"]["bleu"]
        == compute(["bleu"], long["resegmented"], refs).values["bleu"]
    )
    n_right, kept = R.right_and_kept([alone, hyps["onset 300 ms"]], refs)
    assert (report["right_at_onset_0"], report["right_kept_at_every_onset"]) == (n_right, kept)
    base = rows["onset 0 ms"]["bleu"]
    moved = [rows[n]["bleu"] for n in ("onset 300 ms", "level -10 dB")]
    assert report["spread"] == max(abs(b - base) for b in moved)


def test_benchmark_on_a_tiny_model(tmp_path, capsys) -> None:
    exp = make_exp(tmp_path)
    data, wavs = make_data(tmp_path, PHRASES)
    report = run_benchmark(exp, data, tmp_path / "robust.json")
    printed = capsys.readouterr().out
    rows = report["conditions"]
    assert report["metric"] == "bleu" and all(0 <= r["bleu"] <= 100 for r in rows.values())
    hyps, long = decoded_directly(Speech2Text.from_dir(exp), wavs)
    check_report(report, hyps, long)
    # the untrained model says the same whatever it hears: each utterance, found as one
    # segment of its own (0.6 s pauses), matches itself decoded alone
    assert report["long_recording"]["segments"] == len(PHRASES) and long["matching"] == 1.0
    assert f"{100 * report['onset_invariance']:.1f}%" in printed
    assert "| onset 300 ms |" in printed


def test_each_condition_decodes_its_own_waveform(tmp_path, monkeypatch) -> None:
    """The same comparisons with a decoder whose output names its input (the features' frame
    count and sum): every condition, and every segment of the long recording, gives other
    hypotheses than the unmodified utterances, so a benchmark that decoded the unmodified
    waveforms for some condition, or reported the long recording's share of another
    decoding, fails check_report here."""

    def fingerprint(self, sources):
        return [[Result(f"{s.shape[0]}:{s.double().sum():.9g}", [], 0.0, 0.0)] for s in sources]

    monkeypatch.setattr(Speech2Text, "decode_sources", fingerprint)
    exp = make_exp(tmp_path)
    data, wavs = make_data(tmp_path, PHRASES)
    report = run_benchmark(exp, data, tmp_path / "robust.json")
    hyps, long = decoded_directly(Speech2Text.from_dir(exp), wavs)
    check_report(report, hyps, long)
    alone = hyps["onset 0 ms"]
    assert all(h[i] != alone[i] for h in list(hyps.values())[1:] for i in range(len(alone)))
    # a segment holds other samples than its utterance's file unless the cuts fall on the
    # file's ends: not every utterance matches here, while every one did with the real model
    assert long["matching"] < 1.0


def test_decoding_settings_from_the_command_line(tmp_path) -> None:
    """Trailing key=value arguments decode as Speech2Text does with those overrides."""
    exp = make_exp(tmp_path)
    data, wavs = make_data(tmp_path, PHRASES[:1])
    path = wavs["spk-u0"]
    out = tmp_path / "robust.json"
    settings = ["decode.beam_size=1", "decode.nbest=1", "decode.max_len_a=0", "decode.max_len_b=2"]
    args = ["--model", str(exp), "--data", str(data), "--onsets", "0", "--levels", "--snrs"]
    assert R.main([*args, "--json", str(out), *settings]) == 0
    report = json.loads(out.read_text())
    assert report["decode_overrides"] == settings
    s2t = Speech2Text.from_dir(exp, decode_overrides=settings)
    assert report["conditions"]["onset 0 ms"]["hyps"] == [s2t(path)[0].text]
    assert len(s2t(path)[0].tokens) <= 2  # the settings took effect
    default = Speech2Text.from_dir(exp)(path)[0]  # and they make a difference here
    assert len(default.tokens) > 2 and report["conditions"]["onset 0 ms"]["hyps"] != [default.text]
    with pytest.raises(ValueError, match="beam_sise"):
        R.main(["decode.beam_sise=2", *args])
