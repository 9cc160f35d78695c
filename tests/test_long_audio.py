"""Long recordings: s2s-decode and Speech2Text.transcribe on a file assembled from synthesised
utterances and silences. Segments must fall in the known silences around each utterance, and
each segment's text must be exactly what decoding that stretch of audio alone gives (the model
is untrained: nothing here depends on what it would learn)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf
import torch
from helpers import make_exp

from s2s.cli.decode import main as decode_main
from s2s.data.vad import VadConfig, speech_spans
from s2s.decode.inference import Speech2Text
from s2s.synth.tts import SAMPLE_RATE, synthesize

PHRASES = ["good morning", "the red cup is on the table", "we like the small bird"]
GAPS_S = [0.6, 1.2, 1.0, 0.8]  # before, between and after the utterances


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[tuple[int, int]]]:
    """(experiment, talk.wav, [start, end) samples of each utterance's speech)."""
    root = tmp_path_factory.mktemp("long")
    pieces, speech, at = [], [], 0
    for i, phrase in enumerate(PHRASES):
        gap = torch.zeros(int(GAPS_S[i] * SAMPLE_RATE))
        wave = synthesize(phrase, "en-us", seed=i) * 0.5
        loud = (wave.abs() > 0.01).nonzero()  # espeak's own edges are quiet, not zero
        at += gap.numel()
        speech.append((at + int(loud[0]), at + int(loud[-1]) + 1))
        pieces += [gap, wave]
        at += wave.numel()
    pieces.append(torch.zeros(int(GAPS_S[-1] * SAMPLE_RATE)))
    path = root / "talk.wav"
    sf.write(path, torch.cat(pieces).numpy(), SAMPLE_RATE, subtype="FLOAT")
    return make_exp(root), path, speech


def test_cli_prints_one_line_per_segment_inside_the_silences(talk, capsys) -> None:
    exp, wav, speech = talk
    # auto: the file is longer than --max-segment, so it is segmented
    args = ["--model", str(exp), "--format", "json", "--max-segment", "3", str(wav)]
    assert decode_main(args) == 0
    segs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(segs) == len(PHRASES)
    sr = SAMPLE_RATE
    for i, (seg, (a, b)) in enumerate(zip(segs, speech)):
        assert seg["input"] == str(wav)
        assert seg["start"] * sr <= a and b <= seg["end"] * sr  # the utterance is inside
        prev_end = speech[i - 1][1] if i else 0
        next_start = speech[i + 1][0] if i + 1 < len(speech) else float("inf")
        assert prev_end < seg["start"] * sr and seg["end"] * sr < next_start  # in the silences
        assert seg["end"] - seg["start"] <= 3.0

    wave, _ = sf.read(wav, dtype="float32")
    s2t = Speech2Text.from_dir(exp)
    for seg in segs:  # each text is the decoding of that stretch alone
        a, b = round(seg["start"] * sr), round(seg["end"] * sr)
        alone = s2t(torch.from_numpy(wave[a:b]), sr)
        assert [h["text"] for h in seg["nbest"]] == [r.text for r in alone]
        for h, r in zip(seg["nbest"], alone):  # batched with the others: padding moves floats
            assert h["score"] == pytest.approx(r.score, abs=1e-4)

    assert decode_main(["--model", str(exp), str(wav)]) == 0  # 20 s default: whole file
    assert capsys.readouterr().out.count("\n") == 1
    assert decode_main(["--model", str(exp), "--segment", "on", str(wav)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1:3] for line in lines] == [
        [f"{s['start']:.2f}", f"{s['end']:.2f}"] for s in segs
    ]


def test_subtitles_and_the_python_api_agree(talk, capsys) -> None:
    exp, wav, _ = talk
    segments = Speech2Text.from_dir(exp).transcribe(wav)
    assert len(segments) == len(PHRASES)
    assert decode_main(["--model", str(exp), "--format", "srt", str(wav)]) == 0
    srt = capsys.readouterr().out
    cues = re.findall(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.*)\n", srt)
    assert [int(c[0]) for c in cues] == [1, 2, 3]
    assert [c[3] for c in cues] == [s.text for s in segments]
    clock = lambda t: f"00:00:{int(t):02d},{round(t * 1000) % 1000:03d}"  # noqa: E731
    assert [c[1:3] for c in cues] == [(clock(s.start), clock(s.end)) for s in segments]
    assert decode_main(["--model", str(exp), "--format", "vtt", str(wav)]) == 0
    vtt = capsys.readouterr().out
    assert vtt.startswith("WEBVTT\n\n00:00:00.") and vtt.count(" --> ") == 3
    assert decode_main(["--model", str(exp), "--format", "srt", str(wav), str(wav)]) == 2
    assert "takes one audio file" in capsys.readouterr().err


def test_long_speech_is_cut_at_the_maximum_length() -> None:
    """A 25 s stretch of speech-level frames with a 20 s cap: every piece at most 20 s, the
    pieces tiling the stretch; silence alone gives no segment."""
    energy = torch.full((3000,), -50.0)  # digital silence
    energy[200:2700] = 90.0 + torch.linspace(0, 1, 2500)
    spans = speech_spans(energy, 0.01, VadConfig(max_segment_s=20.0, pad_s=0.0))
    assert spans[0][0] == 200 and spans[-1][1] == 2700 and len(spans) == 2
    assert all(b - a <= 2000 for a, b in spans) and spans[0][1] == spans[1][0]
    assert speech_spans(torch.full((500,), -50.0), 0.01, VadConfig()) == []
    assert speech_spans(torch.full((500,), 49.0), 0.01, VadConfig()) == []  # dither noise


def test_digital_silence_does_not_make_quiet_pauses_speech() -> None:
    """Utterances (speech-level frames) parted by pauses of quiet room noise (69 dB: white
    noise at -70 dBFS) split at every pause, and still do when a tenth of the recording is
    digital silence (-50 dB), which once set the background below the pauses' level so that
    they passed for speech and the utterances merged into one segment."""
    rng = torch.Generator().manual_seed(0)
    bursts, pause = 12, 60
    energy = []
    for _ in range(bursts):
        energy += [torch.full((pause,), 69.0), 95.0 + 10 * torch.rand(150, generator=rng)]
    room = torch.cat([*energy, torch.full((pause,), 69.0)])
    want = speech_spans(room, 0.01, VadConfig())
    assert len(want) == bursts
    silent = torch.full((room.numel() // 9,), -50.0)  # a tenth of the whole
    spans = speech_spans(torch.cat([silent, room]), 0.01, VadConfig())
    assert [(a - silent.numel(), b - silent.numel()) for a, b in spans] == want
