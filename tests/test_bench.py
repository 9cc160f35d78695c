"""The attention micro-benchmark runs end to end and reports consistent figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

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


@pytest.mark.parametrize("amp", [False, True])
def test_train_step_bench_every_variant(tmp_path, monkeypatch, amp) -> None:
    """The whole model's training step per variant from conf/ (tiny size): each row times its
    own variant's model (its parameter count; MTLA's stride reaches the attention), every
    timed step ran forward (in bfloat16 under --amp, float32 without), backward and the
    optimiser (the weights moved), and the ratios are to MHA's time."""
    from s2s.bench import train_step as T

    built, build_model = {}, T.build

    def build(spec: str, size: str):
        model = build_model(spec, size)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        dtypes = []
        model.decoder.output.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        built[spec] = (model, start, dtypes)
        return model

    monkeypatch.setattr(T, "build", build)
    out = tmp_path / "train.json"
    argv = ["--size", "tiny", "--batch", "2", "--frames", "40", "--tokens", "5"]
    argv += ["--repeats", "2", "--device", "cpu", "--variants", "mha", "mtla:3"]
    assert T.main([*argv, *(["--amp"] if amp else []), "--json", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"mha", "mtla:3"} == set(built)
    for spec, (model, start, dtypes) in built.items():
        assert rows[spec]["params_m"] == sum(p.numel() for p in model.parameters()) / 1e6
        assert dtypes == [torch.bfloat16 if amp else torch.float32] * 3  # warm-up + 2 repeats
        moved = [k for k, v in model.state_dict().items() if not torch.equal(v, start[k])]
        assert "decoder.output.weight" in moved or "decoder.embed.weight" in moved
        assert rows[spec]["ratio"] == rows[spec]["step_s"] / rows["mha"]["step_s"] > 0
    assert built["mtla:3"][0].decoder.layers[0].self_attn.stride == 3
    assert rows["mtla:3"]["params_m"] != rows["mha"]["params_m"]


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


def _audio_datadir(root: Path, n: int) -> None:
    """root/data: n utterances u0.. of 0.4, 0.6, ... s of audio, transcript "a"."""
    from helpers import write_audio

    from s2s.data.datadir import write_datadir

    wavs = {f"u{i}": root / f"u{i}.wav" for i in range(n)}
    for i, path in enumerate(wavs.values()):
        write_audio(path, 0.4 + 0.2 * i, seed=i)
    write_datadir(root / "data", {u: str(p) for u, p in wavs.items()},
                  {"text": dict.fromkeys(wavs, "a")}, {u: u for u in wavs})  # fmt: skip


@pytest.mark.parametrize("before", ["5935c32", "HEAD"])
def test_decode_data_bench_compares_a_revision(tmp_path, capsys, before: str) -> None:
    """A data dir decoded with joint CTC by the current search and by the one of a git
    revision (5935c32, before the scorer interface, when that commit is here; HEAD, whose
    weighted set comes from its own scorer_set.py), same batches: times per part, and every
    n-best list the same (the scores to float32 rounding: the CTC prefix scorer now sums psi
    over time in one logsumexp)."""
    import subprocess

    from helpers import make_exp

    from s2s.bench.decode_data import main as bench_main

    # 5935c32: the last commit whose beam_search took lm= and ctc_log_probs=
    found = subprocess.run(["git", "cat-file", "-e", f"{before}^{{commit}}"], capture_output=True)
    rev = before if found.returncode == 0 else "HEAD"
    if subprocess.run(["git", "rev-parse", rev], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: no revision to compare with")
    exp = make_exp(tmp_path, ctc=0.3)
    _audio_datadir(tmp_path, 5)
    out = tmp_path / "bench.json"
    argv = ["--model", str(exp), "--data", str(tmp_path / "data"), "--compare", rev]
    assert bench_main([*argv, "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["decode"]["ctc_weight"] == 0.3
    assert [r["run"] for r in report["rows"]] == ["current", rev]
    for r in report["rows"]:
        assert r["utterances"] == 5 and r["decoder_s"] > 0 and r["ctc_s"] > 0
        parts = r["encoder_s"] + r["decoder_s"] + r["ctc_s"] + r["search_s"]
        assert parts == pytest.approx(r["seconds"])
    assert report["same"]["nbest"] == 5 and report["same"]["max_score_diff"] < 1e-6
    assert "same n-best tokens: 5/5" in capsys.readouterr().out
    if before == "HEAD":  # settings from the trailing overrides; several encodings refused
        views = ["decode.encoder_views=2", "decode.views_merge=scores"]
        assert bench_main([*argv[:4], "--repeats", "0", *views]) == 2
        assert "add decode.encoder_views=1" in capsys.readouterr().err
        argv = [*argv[:4], "--repeats", "1", "--json", str(out), "decode.beam_size=2"]
        assert bench_main([*argv, "decode.encoder_views=2"]) == 0
        report = json.loads(out.read_text())["decode"]
        assert report["beam_size"] == 2 and report["encoder_views"] == 2


@pytest.fixture
def aot_eager_compile(monkeypatch):
    """decode.compile through aot_eager (capture and functionalisation, no code generation):
    the benchmarks' compiled rows in seconds; a fresh compile cache before and after."""
    import functools

    import s2s.decode.compiled as C

    def compiled(backend, mode):
        return torch.compile(C._scored_step, fullgraph=True, dynamic=False, backend="aot_eager")

    monkeypatch.setattr(C, "_compiled", functools.cache(compiled))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_decode_bench_compiled_rows(tmp_path, aot_eager_compile) -> None:
    """--compile adds a compiled row after each lean run (none for the naive engine), with the
    graphs its warm-up compiled and their seconds; at these sizes no shape is padded, so its
    peak cache is the eager row's."""
    from s2s.bench.decode import main as decode_main

    out = tmp_path / "decode.json"
    argv = ["--size", "tiny", "--batch", "1", "--beam", "2", "--prefix", "5", "--steps", "3"]
    argv += ["--repeats", "1", "--runs", "mha:naive", "mha", "mtla:2", "--compile"]
    assert decode_main([*argv, "--json", str(out)]) == 0
    rows = {r["run"]: r for r in json.loads(out.read_text())}
    assert list(rows) == [
        "mha naive", "mha lean", "mha lean compiled", "mtla s=2 lean", "mtla s=2 lean compiled",
    ]  # fmt: skip
    for name in ("mha", "mtla s=2"):
        eager, comp = rows[f"{name} lean"], rows[f"{name} lean compiled"]
        assert comp["graphs"] == 1 and comp["compile_s"] > 0 and eager["graphs"] == 0
        assert comp["peak_cache_mib"] == eager["peak_cache_mib"]
        assert "repaid_after_utterances" in comp


def test_decode_data_bench_compiled_run(tmp_path, capsys, aot_eager_compile) -> None:
    """--compile: a "compiled" run beside the current one over the same batches, its compile
    time apart, and the comparison of their n-best lists reported (not asserted equal: this
    model is float32, where the compiled step's other summation order may flip a near-tie;
    tests/test_compiled_decode.py compares in float64)."""
    from helpers import make_exp

    from s2s.bench.decode_data import main as bench_main

    exp = make_exp(tmp_path, ctc=0.3)
    _audio_datadir(tmp_path, 4)
    out = tmp_path / "bench.json"
    argv = ["--model", str(exp), "--data", str(tmp_path / "data"), "--compile"]
    assert bench_main([*argv, "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["run"] for r in report["rows"]] == ["current", "compiled"]
    assert report["rows"][1]["decoder_s"] > 0 and report["compile_s"] > 0
    assert "repaid_after_utterances" in report
    assert 0 <= report["same_compiled"]["nbest"] <= 4
    assert "compiled: " in capsys.readouterr().out
