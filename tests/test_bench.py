"""The attention micro-benchmark runs end to end and reports consistent figures."""

from __future__ import annotations

import json

import pytest

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
    assert set(rows) == {
        *("mha", "mqa", "gqa", "mla", "mtla s=2", "mtla s=3", "mtla s=4"),
        *("mfa", "mfa_kr", "mlra", "gla", "gta"),
    }
    assert rows["mha"]["step_vs_mha"] == 1.0 and rows["mha"]["cache_vs_mha"] == 1.0
    assert rows["mha"]["cache_elems_per_token"] == 2 * 32
    assert rows["mla"]["cache_elems_per_token"] == 16 + 4
    assert rows["mtla s=4"]["cache_elems_per_token"] == (16 + 4) / 4
    assert rows["mfa"]["cache_elems_per_token"] == 2 * (2 * 8)  # [k ; v], C = 2 d_h
    assert rows["gta"]["cache_elems_per_token"] == 2 * 8 + 4  # 2 tied heads + d_h / 2
    assert all(r["forward_s"] > 0 and r["step_s"] > 0 for r in rows.values())
    assert "mtla s=3" in capsys.readouterr().out


def test_decode_bench_runs_every_engine(tmp_path) -> None:
    """Every run of the side-by-side table, at two prefix lengths, with the plot; the lean
    engine's peak cache is exactly what the layout implies."""
    from s2s.bench.decode import main as decode_main

    out, png = tmp_path / "decode.json", tmp_path / "decode.png"
    argv = ["--size", "tiny", "--batch", "1", "--beam", "2", "--prefix", "5", "8"]
    argv += ["--steps", "3", "--repeats", "1", "--json", str(out), "--plot", str(png)]
    assert decode_main(argv) == 0
    rows = {(r["run"], r["prefix"]): r for r in json.loads(out.read_text())}
    runs = {"mha naive", "mtla s=2 naive", "mtla s=2 authors", "mha lean", "mtla s=4 lean"}
    assert runs <= {run for run, _ in rows}
    assert rows["mha naive", 5]["speedup"] == 1.0 and rows["mha naive", 5]["memory_reduction"] == 1
    assert png.stat().st_size > 0
    assert all(r["kernel_launches"] == 0 for r in rows.values())  # CPU: the PyTorch path

    # tiny: 2 layers, d = 64 (4 heads of 16), r = 32, d_r = 8; 1 utterance x beam 2; BOS and up
    # to 3 tokens fed. Lean: completed prefix slots once, own slots per hypothesis + owner table.
    def lean_bytes(slot_elems: int, stride: int, prefix: int) -> int:
        shared = prefix // stride
        own = -(-(prefix + 4) // stride) - shared
        return 2 * (shared * slot_elems * 4 + 2 * own * (slot_elems * 4 + 8))

    for prefix in (5, 8):
        assert rows["mha lean", prefix]["peak_cache_mib"] * 2**20 == lean_bytes(128, 1, prefix)
        assert rows["mtla s=4 lean", prefix]["peak_cache_mib"] * 2**20 == lean_bytes(40, 4, prefix)
        lean, naive = rows["mtla s=2 lean", prefix], rows["mtla s=2 naive", prefix]
        assert (
            lean["peak_cache_mib"]
            < naive["peak_cache_mib"]
            < rows["mha naive", prefix]["peak_cache_mib"]
        )


def test_train_step_bench_every_variant(tmp_path) -> None:
    """The whole model's training step per variant from conf/ (tiny size): every requested
    variant gets a row, ratios are to MHA."""
    from s2s.bench.train_step import main as train_main

    out = tmp_path / "train.json"
    argv = ["--size", "tiny", "--batch", "2", "--frames", "40", "--tokens", "5"]
    argv += ["--repeats", "1", "--device", "cpu", "--variants", "mha", "mtla:3"]
    assert train_main([*argv, "--json", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"mha", "mtla:3"} and rows["mha"]["ratio"] == 1.0
    assert all(r["step_s"] > 0 for r in rows.values())


@pytest.mark.gpu
def test_kernel_bench_on_gpu(tmp_path) -> None:
    """kernels.bench at a small size: every row's kernel agrees with the PyTorch path."""
    from kernels.bench import main as kernel_main

    out = tmp_path / "kernels.json"
    argv = ["--batch", "2", "--beam", "5", "--slots", "100", "--json", str(out)]
    assert kernel_main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and all(r["rel_err"] < 1e-5 for r in rows)
    assert all(r["kernel_launches"] == 1 for r in rows)
