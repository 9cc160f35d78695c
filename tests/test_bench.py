"""The attention micro-benchmark runs end to end and reports consistent figures."""

from __future__ import annotations

import json

from s2s.bench.attention import main


def test_bench_runs_and_reports_ratios(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = [
        "--batch",
        "2",
        "--length",
        "8",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--d-model",
        "32",
        "--heads",
        "4",
        "--latent",
        "16",
        "--rope-dim",
        "4",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"mha", "mqa", "gqa", "mla", "mtla s=2", "mtla s=3", "mtla s=4"}
    assert rows["mha"]["step_vs_mha"] == 1.0 and rows["mha"]["cache_vs_mha"] == 1.0
    assert rows["mha"]["cache_elems_per_token"] == 2 * 32
    assert rows["mla"]["cache_elems_per_token"] == 16 + 4
    assert rows["mtla s=4"]["cache_elems_per_token"] == (16 + 4) / 4
    assert all(r["forward_s"] > 0 and r["step_s"] > 0 for r in rows.values())
    assert "mtla s=3" in capsys.readouterr().out


def test_decode_bench_runs_every_variant(tmp_path) -> None:
    from s2s.bench.decode import main as decode_main

    out = tmp_path / "decode.json"
    argv = [
        "--size",
        "tiny",
        "--batch",
        "1",
        "--beam",
        "2",
        "--prefix",
        "5",
        "--steps",
        "3",
        "--repeats",
        "1",
        "--json",
        str(out),
    ]
    assert decode_main(argv) == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert rows["mha"]["speedup_vs_mha"] == 1.0
    # prefix 5 + 3 decoded tokens, 2 layers, 2 hypotheses: MHA keeps 8 tokens, MTLA s=4 2 slots
    assert rows["mha"]["cache_mib_at_end"] * 2**20 == 2 * 2 * 8 * (2 * 64) * 4
    assert rows["mtla s=4"]["cache_mib_at_end"] * 2**20 == 2 * 2 * 2 * (32 + 8) * 4
    assert rows["mtla s=2"]["cache_reduction_vs_mha"] == 1024 / 160
