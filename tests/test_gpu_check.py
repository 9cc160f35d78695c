"""The GPU check's command (s2s.bench.gpu_check) in its dry run: tiny sizes on the CPU under
Triton's interpreter, so the command a GPU lease depends on cannot rot while none is lent."""

from __future__ import annotations

import json
import subprocess
import sys

from s2s.bench.gpu_check import ROOT, parts


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


def test_dry_run_writes_report(tmp_path) -> None:
    out = tmp_path / "gpu"
    res = subprocess.run(
        [sys.executable, "-m", "s2s.bench.gpu_check", str(out), "--dry-run", "--budget", "600"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=700,
    )
    data = json.loads((out / "results.json").read_text())
    status = {p["name"]: p["status"] for p in data["parts"]}
    assert res.returncode == 0, (status, res.stdout[-2000:], (out / "log.txt").read_text()[-3000:])
    assert data["dry_run"] and all(s == "ok" for s in status.values())
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"report.md", "results.json", "log.txt"} <= set(files)
    report = (out / "report.md").read_text()
    assert "decode float32" in report and "mtla s=2" in report
