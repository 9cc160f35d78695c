"""Data dirs: round trip, validation errors that name file and line, subset/split/combine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BAD_AUDIO, write_audio, write_bad_audio

from s2s.data.datadir import (
    DataDirError,
    Problem,
    combine_datadirs,
    load_datadir,
    split_datadir,
    subset_datadir,
    validate_datadir,
    write_datadir,
)

UTTS = {"spkA-001": "hello world", "spkA-002": "good morning", "spkB-001": "wie geht's"}


def make(path: Path, segments: bool = False, utts: dict[str, str] = UTTS):
    utt2spk = {u: u.split("-")[0] for u in utts}
    texts = {"text": dict(utts), "text.de": {u: t.upper() for u, t in utts.items()}}
    if segments:
        wav = {"recA": "a.wav", "recB": "b.wav"}
        segs = {u: (f"rec{u[3]}", i * 1.5, i * 1.5 + 1.25) for i, u in enumerate(utts)}
        return write_datadir(path, wav, texts, utt2spk, segs)
    return write_datadir(path, {u: f"{u}.wav" for u in utts}, texts, utt2spk)


@pytest.mark.parametrize("segments", [False, True])
def test_round_trip(tmp_path: Path, segments: bool) -> None:
    dd = make(tmp_path / "d", segments)
    again = load_datadir(tmp_path / "d")
    assert again.utt_ids == sorted(UTTS)
    assert again.text("spkB-001") == "wie geht's"
    assert again.text("spkB-001", "text.de") == "WIE GEHT'S"
    assert again.spk2utt == {"spkA": ["spkA-001", "spkA-002"], "spkB": ["spkB-001"]}
    assert (tmp_path / "d" / "spk2utt").read_text().splitlines()[0] == "spkA spkA-001 spkA-002"
    if segments:
        assert again.audio_source("spkA-002") == ("a.wav", 1.5, 2.75)
    else:
        assert again.audio_source("spkA-002") == ("spkA-002.wav", 0.0, None)
    assert again.texts == dd.texts


def test_text_only(tmp_path: Path) -> None:
    dd = write_datadir(
        tmp_path / "t", None, {"text.src": {"a": "x y"}, "text.tgt": {"a": "z"}}, {"a": "a"}
    )
    assert dd.text_only and load_datadir(tmp_path / "t").texts["text.tgt"] == {"a": "z"}
    with pytest.raises(DataDirError, match="text-only"):
        dd.audio_source("a")


def _edit(path: Path, old: str, new: str) -> None:
    path.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))


@pytest.mark.parametrize(
    "file, old, new, pattern",
    [
        ("text", "good morning", "", r"text:2: transcript for 'spkA-002' is empty"),
        ("text", "spkB-001 wie", "spkB-009 wie", r"text:3: utterance 'spkB-009' is not in"),
        ("text.de", "spkA-001 HELLO WORLD\n", "", r"utt2spk:1: utterance 'spkA-001' has no"),
        ("utt2spk", "spkA-002 spkA\n", "", r"wav.scp:2: utterance 'spkA-002' is not in"),
        ("wav.scp", "spkA-001 spkA-001.wav", "spkA-001 sox x.wav |", r"wav.scp:1: piped"),
        ("text", "spkA-001 hello", "spkA-003 hello", r"text:2: not sorted"),
        ("text", "spkA-002 good", "spkA-001 good", r"text:2: duplicate key 'spkA-001'"),
        ("text", "hello", "hel\xfflo", None),  # replaced below with invalid UTF-8
        ("utt2spk", "spkA-002 spkA", "spkA-002 spkZ", r"utt2spk:3: speaker 'spkB'"),
        ("spk2utt", "spkB spkB-001", "spkB spkA-001", r"spk2utt:2: utterances of"),
        ("text", "\nspkA-002", "\n\nspkA-002", r"text:2: empty line"),
    ],
)
def test_validation_errors_name_file_and_line(
    tmp_path: Path, file: str, old: str, new: str, pattern: str | None
) -> None:
    make(tmp_path / "d")
    target = tmp_path / "d" / file
    if pattern is None:  # bytes that are not UTF-8
        target.write_bytes(target.read_bytes().replace(b"hello", b"hel\xfflo"))
        pattern = r"text:1: not valid UTF-8"
    else:
        _edit(target, old, new)
    with pytest.raises(DataDirError, match=pattern):
        load_datadir(tmp_path / "d")


def test_segment_errors(tmp_path: Path) -> None:
    make(tmp_path / "d", segments=True)
    seg = tmp_path / "d" / "segments"
    _edit(seg, "recA 1.5 2.75", "recA 2.75 1.5")
    with pytest.raises(DataDirError, match=r"segments:2: segment end 1.5 is not after"):
        load_datadir(tmp_path / "d")
    _edit(seg, "recA 2.75 1.5", "recC 1.5 2.75")
    with pytest.raises(DataDirError, match=r"segments:2: recording 'recC'"):
        load_datadir(tmp_path / "d")


def test_missing_audio_and_dir(tmp_path: Path) -> None:
    make(tmp_path / "d")
    with pytest.raises(DataDirError, match=r"wav.scp:1: audio file of 'spkA-001' not found"):
        load_datadir(tmp_path / "d", check_audio=True)
    with pytest.raises(DataDirError, match="not a directory"):
        load_datadir(tmp_path / "nope")
    (tmp_path / "d" / "utt2spk").unlink()
    with pytest.raises(DataDirError, match="utt2spk: missing"):
        load_datadir(tmp_path / "d")


def test_write_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match="line break"):
        write_datadir(tmp_path / "d", {"a": "a.wav"}, {"text": {"a": "x\ny"}}, {"a": "a"})
    with pytest.raises(DataDirError, match="whitespace"):
        write_datadir(tmp_path / "d", {"a b": "a.wav"}, {"text": {"a b": "x"}}, {"a b": "a"})


def test_subset_split_combine(tmp_path: Path) -> None:
    dd = make(tmp_path / "d", segments=True)
    sub = subset_datadir(dd, tmp_path / "s", ["spkB-001"])
    assert sub.utt_ids == ["spkB-001"] and set(sub.wav_scp) == {"recB"}
    with pytest.raises(DataDirError, match="no utterance 'x'"):
        subset_datadir(dd, tmp_path / "s2", ["x"])
    parts = split_datadir(dd, {str(tmp_path / "p1"): 2 / 3, str(tmp_path / "p2"): 1 / 3}, seed=1)
    ids = [u for p in parts.values() for u in p.utt_ids]
    assert sorted(ids) == dd.utt_ids and [len(p) for p in parts.values()] == [2, 1]
    again = split_datadir(dd, {str(tmp_path / "q1"): 2 / 3, str(tmp_path / "q2"): 1 / 3}, seed=1)
    assert [p.utt_ids for p in again.values()] == [p.utt_ids for p in parts.values()]
    both = combine_datadirs(list(parts.values()), tmp_path / "c")
    assert both.texts == dd.texts and both.segments == dd.segments
    with pytest.raises(DataDirError, match="also in"):
        combine_datadirs([dd, dd], tmp_path / "c2")


def _validate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """s2s-validate-data as a user runs it (through the interpreter: the shared test venv may
    predate the entry point; tests/test_entry_points.py pins that it is declared)."""
    cmd = [sys.executable, "-m", "s2s.cli.validate_data", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_validator_cli_reports_every_problem(tmp_path: Path) -> None:
    utts = {f"spkA-{i:03d}": f"sentence {i}" for i in range(1, 7)}
    make(tmp_path / "d", utts=utts)
    for u in list(utts)[:2]:  # two of six audio files exist (paths relative to the cwd)
        (tmp_path / f"{u}.wav").write_bytes(b"")
    ok = _validate("d", cwd=tmp_path)
    assert ok.returncode == 1
    assert ok.stderr.count("audio file of") == 4 and "wav.scp:3: audio file of 'spkA-003'" in (
        ok.stderr
    )
    assert _validate("--no-check-audio", "d", cwd=tmp_path).returncode == 0

    _edit(tmp_path / "d" / "text", "sentence 2", "")  # empty transcript
    _edit(tmp_path / "d" / "text", "sentence 4", "")
    _edit(tmp_path / "d" / "text.de", "spkA-005 SENTENCE 5\n", "")  # a missing transcript
    _edit(tmp_path / "d" / "utt2spk", "spkA-003 spkA", "spkA-003 spkA extra")
    r = _validate("--max-per-kind", "2", "d", str(tmp_path / "nope"), cwd=tmp_path)
    assert r.returncode == 1
    err = r.stderr.splitlines()
    assert "ERROR d/text:2: transcript for 'spkA-002' is empty" in err
    assert "ERROR d/text:4: transcript for 'spkA-004' is empty" in err
    assert "ERROR d/utt2spk:5: utterance 'spkA-005' has no transcript in d/text.de" in err
    assert "ERROR d/utt2spk:3: expected '<utt> <speaker>', got 'spkA extra'" in err
    assert sum("audio file of" in line for line in err) == 2  # 4 found, 2 shown
    assert (
        "d: 8 problems (bad utt2spk line: 1, empty value: 2, missing utterance: 1, "
        "audio not found: 4); 2 not shown (--max-per-kind 0 shows all)" in err
    )
    assert f"ERROR {tmp_path / 'nope'}: not a directory" in err  # the next dir is checked too
    assert r.stdout == ""

    help_ = _validate("--help", cwd=tmp_path)
    assert help_.returncode == 0 and "every problem" in help_.stdout


def test_validator_audio_reports_each_bad_file_once(tmp_path: Path) -> None:
    """--audio: the four bad files (corrupt RIFF header, text named .wav, 30 ms, missing) are
    four lines, each at its wav.scp line, among good files; segments are judged each."""
    utts = {f"spkA-{i:03d}": f"sentence {i}" for i in range(1, 7)}
    make(tmp_path / "d", utts=utts)
    bad = write_bad_audio(tmp_path / "bad")
    scp = tmp_path / "d" / "wav.scp"
    paths = [str(bad[k]) for k in BAD_AUDIO] + [f"good{i}.wav" for i in (5, 6)]
    for i, path in enumerate(paths, 1):
        _edit(scp, f"spkA-{i:03d}.wav", path)
    for i in (5, 6):
        write_audio(tmp_path / f"good{i}.wav", 0.5)
    r = _validate("--audio", "d", cwd=tmp_path)
    assert r.returncode == 1
    err = r.stderr.splitlines()
    assert len(err) == 5, err
    for i, (kind, (_, why)) in enumerate(BAD_AUDIO.items(), 1):
        if kind == "missing":  # the path check's own line
            start = f"ERROR d/wav.scp:{i}: audio file of 'spkA-{i:03d}' not found"
        else:
            start = f"ERROR d/wav.scp:{i}: audio of 'spkA-{i:03d}' ({bad[kind]}): "
        line = next(line for line in err if line.startswith(start))
        assert re.search(why, line), line
    assert err[4].startswith(
        "d: 4 problems (audio not found: 1, unreadable audio: 2, too short: 1)"
    )
    assert "too short: 1 frames < min_frames 10 (30 ms)" in r.stderr
    assert _validate("--audio", "--min-frames", "1", "d", cwd=tmp_path).stderr.count("ERROR") == 3

    # segments: each utterance judged from its recording's header
    make(tmp_path / "s", segments=True)
    write_audio(tmp_path / "a.wav", 3.0)
    write_audio(tmp_path / "b.wav", 0.5)
    ok = _validate("--audio", "s", cwd=tmp_path)
    assert ok.returncode == 1
    assert "ERROR s/segments:3: utterance 'spkB-001' ends at" in ok.stderr
    assert ok.stderr.count("ERROR") == 1


def test_datadir_is_a_library_module_only() -> None:
    """No import circle: the data dir module never imports the command line."""
    source = Path(validate_datadir.__code__.co_filename).read_text()
    assert "s2s.cli" not in source and "__main__" not in source


def test_validate_datadir_goes_on_past_bad_lines(tmp_path: Path) -> None:
    make(tmp_path / "d", segments=True)
    _edit(tmp_path / "d" / "segments", "recA 1.5 2.75", "recA 2.75 1.5")
    _edit(tmp_path / "d" / "text", "spkA-001 hello", "spkA-003 hello")
    problems = validate_datadir(tmp_path / "d", check_audio=False)
    kinds = ["not sorted", "bad segment", "unknown utterance", "missing utterance"]
    assert [p.kind for p in problems] == kinds  # files are read first, then cross-checked
    assert problems[1].message.endswith("segments:2: segment end 1.5 is not after its start 2.75")
    assert validate_datadir(tmp_path / "nope") == [
        Problem("not a directory", f"{tmp_path / 'nope'}: not a directory")
    ]
