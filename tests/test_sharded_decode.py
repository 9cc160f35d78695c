"""Decoding split across processes: s2s-decode --data --shard K/N and merge_shards give the
one-process decode dir (same hypotheses, in the data dir's order), and refuse what would mix
runs; recipe stage 9 decodes in --nj shards (tests/test_recipes.py runs it with --nj 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_exp, write_audio

from s2s.cli.decode import main as decode_main
from s2s.data.datadir import write_datadir
from s2s.decode.decode_dir import merge_shards


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("shards")
    exp = make_exp(root)
    wavs = {}
    for i in range(7):  # 7 utterances: shards of 3, 2 and 2 for N = 3
        wavs[f"spk-u{i}"] = root / f"u{i}.wav"
        write_audio(wavs[f"spk-u{i}"], 0.3 + 0.15 * (i % 4), seed=i)
    write_datadir(root / "data", {u: str(p) for u, p in wavs.items()},
                  {"text": dict.fromkeys(wavs, "a b")}, dict.fromkeys(wavs, "spk"))  # fmt: skip
    one = root / "one"
    assert decode_main(["--model", str(exp), "--data", str(root / "data"), "--out", str(one)]) == 0
    return exp, root / "data", one


def decode_shards(exp: Path, data: Path, out: Path, n: int) -> list[Path]:
    parts = [out / f"split{n}" / str(k) for k in range(1, n + 1)]
    for k, part in enumerate(parts, 1):
        argv = ["--model", str(exp), "--data", str(data), "--out", str(part)]
        assert decode_main([*argv, "--shard", f"{k}/{n}"]) == 0
    return parts


@pytest.mark.parametrize("n", [2, 3])
def test_shards_merged_are_the_one_process_decode(setup, tmp_path: Path, n: int) -> None:
    exp, data, one = setup
    parts = decode_shards(exp, data, tmp_path, n)
    order = [line.split()[0] for line in (one / "hyp.txt").read_text().splitlines()]
    for k, part in enumerate(parts):  # shard K holds utterances K-1, K-1+N, ...
        held = [line.split()[0] for line in (part / "hyp.txt").read_text().splitlines()]
        assert held == order[k::n]
    summary = merge_shards(parts, data, tmp_path)
    for name in ("hyp.txt", "ref.txt", "decode.yaml"):
        assert (tmp_path / name).read_text() == (one / name).read_text(), name
    got = [line.split() for line in (tmp_path / "nbest.txt").read_text().splitlines()]
    want = [line.split() for line in (one / "nbest.txt").read_text().splitlines()]
    assert [g[:2] + g[4:] for g in got] == [w[:2] + w[4:] for w in want]  # utt, rank, text
    for g, w in zip(got, want):
        assert float(g[2]) == pytest.approx(float(w[2]), abs=2e-4)
    stats = [json.loads((p / "stats.json").read_text()) for p in parts]
    assert summary["utterances"] == 7 == sum(s["utterances"] for s in stats)
    assert summary["wall_time_s"] == max(s["wall_time_s"] for s in stats)
    assert summary["shards"] == n
    assert json.loads((tmp_path / "stats.json").read_text()) == summary


def test_merge_refuses_missing_shards_and_mixed_settings(setup, tmp_path: Path) -> None:
    exp, data, _ = setup
    parts = decode_shards(exp, data, tmp_path / "a", 2)
    with pytest.raises(ValueError, match=r"3 utterances of .* are in no shard"):
        merge_shards(parts[:1], data, tmp_path / "merged")
    other = tmp_path / "b" / "split2" / "2"
    argv = ["--model", str(exp), "--data", str(data), "--out", str(other), "decode.beam_size=4"]
    assert decode_main([*argv, "--shard", "2/2"]) == 0
    with pytest.raises(ValueError, match="decoded with other settings"):
        merge_shards([parts[0], other], data, tmp_path / "merged")
    merge_shards(parts, data, tmp_path / "merged")
    (tmp_path / "merged" / "decode.yaml").write_text("decode: {beam_size: 9}\n")
    with pytest.raises(ValueError, match="holds a decoding run with other settings"):
        merge_shards(parts, data, tmp_path / "merged")


@pytest.mark.parametrize("shard", ["0/2", "3/2", "x", "1/0"])
def test_bad_shards_are_usage_errors(setup, tmp_path: Path, shard: str, capsys) -> None:
    exp, data, _ = setup
    argv = ["--model", str(exp), "--data", str(data), "--out", str(tmp_path), "--shard", shard]
    assert decode_main(argv) == 2
    assert "--shard K/N (1 <= K <= N) goes with --data" in capsys.readouterr().err
