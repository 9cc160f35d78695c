"""The robustness benchmark (s2s.bench.robustness): its measures on hand-made inputs, and a
whole run on a tiny (untrained, seeded) model and three synthesised utterances."""

from __future__ import annotations

import json
import math

import pytest
import soundfile as sf
import torch
from helpers import make_exp

from s2s.bench import robustness as R
from s2s.data.datadir import write_datadir
from s2s.data.tts import SAMPLE_RATE, synthesize
from s2s.decode.inference import Speech2Text

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


def test_conditions_change_the_waveform_as_named() -> None:
    wave = 0.5 * torch.sin(torch.arange(8000) / 5.0)
    late = R.with_onset(wave, 30, SAMPLE_RATE, 3e-4, seed=0)
    assert late.numel() == wave.numel() + 480 and torch.equal(late[480:], wave)
    assert late[:480].abs().max() < 3e-4 * 6
    assert R.with_level(wave, -20).abs().max().item() == pytest.approx(0.05, rel=1e-5)
    assert R.with_level(wave, 12).abs().max().item() == 1.0  # clipped
    noisy = R.with_snr(wave, 10.0, seed=0)
    snr = 10 * math.log10(wave.pow(2).mean() / (noisy - wave).pow(2).mean())
    assert snr == pytest.approx(10.0, abs=0.1)


def test_benchmark_on_a_tiny_model(tmp_path, capsys) -> None:
    exp = make_exp(tmp_path)
    wavs, texts = {}, {}
    for i, phrase in enumerate(PHRASES):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.5 * synthesize(phrase, "en-us", seed=i)).numpy(), SAMPLE_RATE)
        wavs[f"spk-u{i}"], texts[f"spk-u{i}"] = str(path), phrase
    data = tmp_path / "data"
    write_datadir(data, wav_scp=wavs, texts={"text": texts}, utt2spk=dict.fromkeys(wavs, "spk"))
    out = tmp_path / "robust.json"
    args = ["--model", str(exp), "--data", str(data), "--onsets", "0", "300"]
    assert R.main([*args, "--levels", "-10", "--snrs", "10", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = report["conditions"]
    assert list(rows) == ["onset 0 ms", "onset 300 ms", "level -10 dB", "snr 10 dB"]
    assert report["metric"] == "bleu" and all(0 <= r["bleu"] <= 100 for r in rows.values())
    # onset 0 is each utterance decoded as s2s-decode decodes its file
    s2t = Speech2Text.from_dir(exp)
    assert rows["onset 0 ms"]["hyps"] == [s2t(w)[0].text for w in wavs.values()]
    assert rows["onset 0 ms"]["same_as_onset_0"] == 1.0
    assert report["onset_invariance"] == R.onset_invariance(
        [rows["onset 0 ms"]["hyps"], rows["onset 300 ms"]["hyps"]]
    )
    long = report["long_recording"]
    assert long["segments"] == len(PHRASES)  # 0.6 s pauses: one segment per utterance
    assert f"{100 * report['onset_invariance']:.1f}%" in printed
    assert "| onset 300 ms |" in printed


def test_decoding_settings_from_the_command_line(tmp_path) -> None:
    """Trailing key=value arguments decode as Speech2Text does with those overrides."""
    exp = make_exp(tmp_path)
    path = tmp_path / "u0.wav"
    sf.write(path, (0.5 * synthesize(PHRASES[0], "en-us", seed=0)).numpy(), SAMPLE_RATE)
    data = tmp_path / "data"
    write_datadir(data, wav_scp={"spk-u0": str(path)}, texts={"text": {"spk-u0": PHRASES[0]}},
                  utt2spk={"spk-u0": "spk"})  # fmt: skip
    out = tmp_path / "robust.json"
    settings = ["decode.beam_size=1", "decode.nbest=1", "decode.max_len_a=0", "decode.max_len_b=2"]
    args = ["--model", str(exp), "--data", str(data), "--onsets", "0", "--levels", "--snrs"]
    assert R.main([*args, "--json", str(out), *settings]) == 0
    report = json.loads(out.read_text())
    assert report["decode_overrides"] == settings
    s2t = Speech2Text.from_dir(exp, decode_overrides=settings)
    assert report["conditions"]["onset 0 ms"]["hyps"] == [s2t(str(path))[0].text]
    assert len(s2t(str(path))[0].tokens) <= 2  # the settings took effect
    with pytest.raises(ValueError, match="beam_sise"):
        R.main(["decode.beam_sise=2", *args])
