"""The GPU check's command (s2s.bench.gpu_check) in its dry run: tiny sizes on the CPU under
Triton's interpreter, so the command a GPU lease depends on cannot rot while none is lent; each
part's output checked; and the dry run in an environment of the GPU image's packages
(tools/gpu_image.py), where the imports a lent machine lacks would show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from s2s.bench.gpu_check import ROOT, SKIPPED_ON_CPU, TRAIN_VARIANTS, VERIFY, Part, Unproven, parts


def test_parts_most_important_first() -> None:
    names = [p.name for p in parts(dry_run=False)]
    assert names[0] == "pytest -m gpu" and names[1].startswith("kernels")
    assert any("tests/test_kernels.py" in a for a in parts(dry_run=False)[0].argv)


#: what the GPU image lacks and no wheel of the check brings (tools/gpu_image.py), and audio I/O
NOT_ON_IMAGE = ("jiwer", "rapidfuzz", "rouge_score", "espeakng_loader", "soundfile")
BLOCKER = f"""
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_ON_IMAGE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
sys.meta_path.insert(0, Absent())
"""


def test_train_step_builds_its_config_without_scorers_or_audio_io() -> None:
    """The training-step part imports the benchmark and builds the experiment config (whose
    train.monitor.metrics are validated) with jiwer, rouge-score and soundfile unimportable, as
    on the GPU image: a metric is named without its scorer. The blocker itself is shown to work
    (scoring WER does import jiwer)."""
    code = BLOCKER + (
        "from s2s.bench.train_step import build\n"
        "m = build('mtla:2', 'tiny')\n"
        "from s2s.metrics import compute\n"
        "try:\n    compute(['wer'], ['a'], ['a'])\n"
        "except ModuleNotFoundError as e:\n    print('blocked:', e.name)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "blocked: jiwer"


def dry_run(out: Path, python: str = sys.executable) -> tuple[subprocess.CompletedProcess, dict]:
    res = subprocess.run(
        [python, "-m", "s2s.bench.gpu_check", str(out), "--dry-run", "--budget", "600"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=700,
    )
    return res, json.loads((out / "results.json").read_text())


def test_dry_run_exercises_every_part(tmp_path) -> None:
    """Every part ran for real on the CPU and its output was read back: the kernels launched
    (interpreted) and matched the PyTorch path, every decode run and training row is there;
    the GPU tests, which cannot run, were collected and say "skipped on CPU", not "ok"."""
    out = tmp_path / "gpu"
    res, data = dry_run(out)
    status = {p["name"]: p["status"] for p in data["parts"]}
    assert res.returncode == 0, (status, res.stdout[-2000:], (out / "log.txt").read_text()[-3000:])
    assert data["dry_run"] and status == {
        "pytest -m gpu": SKIPPED_ON_CPU,
        **{p.name: "ok" for p in parts(dry_run=True)[1:]},
    }
    by_name = {p["name"]: p for p in data["parts"]}
    assert all(p["exercised"] for p in data["parts"])
    gpu_tests = by_name["pytest -m gpu"]["results"]
    assert gpu_tests["tests"] >= 7 and gpu_tests["skipped"] == gpu_tests["tests"]
    for dtype in ("float32", "bfloat16"):
        rows = by_name[f"kernels {dtype}"]["results"]["rows"]
        assert len(rows) == 4 and all(r["kernel_launches"] == 1 for r in rows)
        assert {r["dtype"] for r in rows} == {dtype} and max(r["rel_err"] for r in rows) < 1e-5
        runs = {r["run"] for r in by_name[f"decode {dtype}"]["results"]}
        assert {"mha naive", "mha naive torch", "mtla s=4 lean", "mtla s=4 lean torch"} <= runs
    for name in ("train step bf16 autocast", "train step bf16 compiled"):
        assert [r["variant"] for r in by_name[name]["results"]] == ["mha", "mtla:2"]
    assert "compiled (first step" in by_name["train step bf16 compiled"]["exercised"]
    captured = {r["run"]: r for r in by_name["decode graph-captured"]["results"]}
    assert sorted(captured) == ["mtla s=2 lean", "mtla s=2 lean cuda graphs"]
    assert captured["mtla s=2 lean cuda graphs"]["compile_s"] > 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"report.md", "results.json", "log.txt"} <= set(files)
    report = (out / "report.md").read_text()
    assert "decode float32" in report and "mtla s=2" in report
    assert "| pytest -m gpu | skipped on CPU |" in report


def part(name: str, results, dry: bool = True) -> Part:
    p = next(p for p in parts(dry_run=dry) if p.name == name)
    p.results = results
    return p


def kernel_row(**kw) -> dict:
    row = {"dtype": "float32", "rel_err": 1e-7, "kernel_launches": 1, "copy_fraction": 0.5}
    return row | kw


def test_verification_fails_outputs_that_prove_nothing() -> None:
    """Negative controls: what each part's check refuses although the command exited 0."""
    none = dict(tests=0, passed=0, skipped=0, failures=0, errors=0)
    some_skipped = dict(tests=7, passed=5, skipped=2, failures=0, errors=0)
    idle = [kernel_row(), kernel_row(kernel_launches=0)]
    train_rows = [{"variant": v, "step_s": 0.0} for v in TRAIN_VARIANTS]
    rows = [
        {"run": run, "prefix": prefix, "decode_s": 1.0, "peak_cache_mib": 1.0, "kernel_launches": 9}
        for run, prefix in part("decode float32", [], dry=False).expect
    ]
    cases = [
        (part("pytest -m gpu", none), True, "no GPU test collected"),
        (part("pytest -m gpu", some_skipped), False, "2 of 7 GPU tests skipped"),
        (part("kernels float32", {"rows": []}), True, "no rows"),
        (part("kernels float32", {"rows": idle}), True, "1 of 2 rows launched no kernel"),
        (part("kernels float32", {"rows": [kernel_row(rel_err=float("nan"))]}), True, "nan off"),
        (part("kernels bfloat16", {"rows": [kernel_row(dtype="bfloat16", rel_err=0.1)]}), True,
         r"1\.0e-01 off the PyTorch path \(> 0\.01\)"),
        (part("train step bf16 autocast", [{"variant": "mha", "step_s": 0.1}]), True, "wanted"),
        (part("train step bf16 autocast", train_rows), True, "no step time for mha, mtla:2"),
        (part("decode float32", rows[1:], dry=False), False, "missing runs: mha naive at 100"),
        (part("decode float32", rows, dry=False), False, "a PyTorch-path run launched kernels"),
        (part("decode float32", [r | {"kernel_launches": 0} for r in rows], dry=False), False,
         "10 runs with kernels on launched none"),
    ]  # fmt: skip
    eager = {"compiled": False, "compile_mode": None, "decode_s": 2.0, "cudagraph_skips": 0}
    graphs = {"compiled": True, "compile_mode": "reduce-overhead", "decode_s": 1.0}
    graphs |= {"compile_s": 60.0, "cudagraph_skips": 0}
    cap = []
    for run in ("mha lean", "mtla s=2 lean"):
        for prefix in (100, 300):
            cap += [eager | {"run": run, "prefix": prefix}]
            cap += [graphs | {"run": f"{run} cuda graphs", "prefix": prefix}]
    captured = part("decode graph-captured", cap, dry=False)
    assert VERIFY["captured"](captured, False)[0] == "ok"
    cases += [
        (part("decode graph-captured", cap[::2], dry=False), False, "no graph-captured run"),
        (part("decode graph-captured", cap[1:], dry=False), False,
         "mha lean cuda graphs at 100: no eager run beside it"),
        (part("decode graph-captured", cap[:3] + [cap[3] | {"cudagraph_skips": 1}], dry=False),
         False, "did not capture CUDA graphs for mha lean cuda graphs"),
        (part("decode graph-captured", [cap[0], cap[1] | {"compile_mode": "default"}], dry=False),
         False, "compiled without CUDA graphs"),
    ]  # fmt: skip
    for p, dry, message in cases:
        with pytest.raises(Unproven, match=message):
            VERIFY[p.kind](p, dry)
    rows = [r | {"kernel_launches": 0 if r["run"].endswith("torch") else 9} for r in rows]
    assert VERIFY["decode"](part("decode float32", rows, dry=False), False)[0] == "ok"


@pytest.mark.slow
def test_dry_run_on_the_gpu_image(tmp_path) -> None:
    """tools/gpu_image.py check: a CPython 3.12 environment of exactly the GPU image's packages
    (no jiwer, omegaconf, soundfile, espeakng-loader, rouge-score), built from uv's cache
    without an index, the check's wheels installed by tools/gpu_check.sh as on a lent machine,
    and the dry run there: every part as in the development environment, the training step
    included (it died on `import jiwer` there before). Skips where the environment cannot be
    built offline (no CPython 3.12, or `python tools/gpu_image.py prepare` never ran)."""
    out = tmp_path / "gpu"
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_image.py"), "check", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if res.returncode == 3:
        pytest.skip("no GPU image environment here: " + " ".join(res.stderr.split())[-300:])
    data = json.loads((out / "results.json").read_text())
    status = {p["name"]: p["status"] for p in data["parts"]}
    assert res.returncode == 0, (status, res.stderr[-2000:], (out / "log.txt").read_text()[-3000:])
    assert data["python"].startswith("3.12.") and data["torch"].startswith("2.11.")
    assert data["triton"].startswith("3.6.") and data["dry_run"]
    assert status == {
        "pytest -m gpu": SKIPPED_ON_CPU,
        **{p.name: "ok" for p in parts(dry_run=True)[1:]},
    }
