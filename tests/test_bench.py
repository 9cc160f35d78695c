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
