"""The scale benchmark's own parts (python -m s2s.bench.scale): the generated corpus of N
copies, and the measurement of a process's peak memory and of a killed run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from s2s.bench.scale import copy_datadir
from s2s.data.datadir import load_datadir, write_datadir


def test_copies_are_a_valid_sorted_data_dir_of_the_same_audio(tmp_path: Path) -> None:
    utts = {"spk1-a": ("rec1", 0.0, 1.0), "spk1-b": ("rec1", 1.0, 2.5), "spk2-a": ("rec2", 0, 1)}
    src = write_datadir(
        tmp_path / "src",
        {"rec1": "/audio/rec1.wav", "rec2": "/audio/rec2.wav"},
        {"text": {u: f"words of {u}" for u in utts}, "text.de": {u: f"Wörter {u}" for u in utts}},
        {u: u.split("-")[0] for u in utts},
        segments=utts,
    )
    n = copy_datadir(src.path, tmp_path / "x12", 12)
    dd = load_datadir(tmp_path / "x12")  # validates: sorted, every file consistent
    assert n == len(dd.utt_ids) == 36
    assert dd.utt_ids[:3] == ["c00-spk1-a", "c00-spk1-b", "c00-spk2-a"]
    for k in (0, 7, 11):
        for u in utts:
            copy = f"c{k:02d}-{u}"
            assert dd.texts["text.de"][copy] == src.texts["text.de"][u]
            rec, start, end = dd.segments[copy]
            assert dd.audio_source(copy) == (src.audio_source(u)[0], start, end)
            assert rec == f"c{k:02d}-{src.segments[u][0]}"
    assert sorted(dd.spk2utt) == [f"c{k:02d}-spk{s}" for k in range(12) for s in (1, 2)]


def test_peak_memory_is_the_child_s_own_and_a_killed_group_is_reported(tmp_path: Path) -> None:
    """Measured from a driver as light as the benchmark's (no torch imported: Linux carries the
    caller's peak into the child's across exec, so a heavy caller would be every child's floor)."""
    grow = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    sleeper = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); time.sleep(60)"
    )
    driver = f"""
import json, sys, time
from pathlib import Path
from s2s.bench.scale import run_measured
assert "torch" not in sys.modules
out = {{}}
out["grow"] = run_measured([sys.executable, "-c", {grow!r}], Path({str(tmp_path)!r}) / "g.log")
out["small"] = run_measured([sys.executable, "-c", "pass"], Path({str(tmp_path)!r}) / "s.log")
t = time.perf_counter()
out["killed"] = run_measured(
    [sys.executable, "-c", {sleeper!r}], Path({str(tmp_path)!r}) / "k.log", lambda: True
)
out["killed"]["wall"] = time.perf_counter() - t
print(json.dumps(out))
"""
    res = json.loads(
        subprocess.run(
            [sys.executable, "-c", driver], capture_output=True, text=True, check=True
        ).stdout
    )
    assert res["grow"]["rc"] == 0 and res["grow"]["peak_rss_mib"] >= 300
    assert res["small"]["peak_rss_mib"] < 100  # its own, not the sibling's or the caller's
    # a parent with a child of its own: the whole group is killed at once
    assert res["killed"]["rc"] == -9 and res["killed"]["wall"] < 30


@pytest.mark.parametrize("copies", [1, 100])
def test_copy_ids_keep_their_order(tmp_path: Path, copies: int) -> None:
    src = write_datadir(tmp_path / "s", {"u": "/a.wav"}, {"text": {"u": "x"}}, {"u": "u"})
    copy_datadir(src.path, tmp_path / "c", copies)
    ids = load_datadir(tmp_path / "c").utt_ids
    assert ids == sorted(ids) and len(ids) == copies


def test_the_driver_s_shard_size_is_the_dump_s() -> None:
    from s2s.bench import scale
    from s2s.data import features

    assert scale.SHARD_UTTS == features.SHARD_UTTS
