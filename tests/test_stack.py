"""A mismatched torch/torchaudio pair is one clear line, from `import s2s` and from pytest.

The mismatch is simulated, not installed: a fake ``torchaudio-<v>.dist-info`` placed first on
``PYTHONPATH`` is what ``importlib.metadata`` finds, exactly as after ``pip install
torchaudio==<v>`` into an environment with another torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from s2s._stack import StackMismatchError, _release, check_torch_stack

REPO = Path(__file__).resolve().parents[1]
MISMATCHED = "2.11.1" if _release(metadata.version("torch")) != "2.11.1" else "2.11.0"


def _fake_torchaudio(root: Path, version: str) -> dict[str, str]:
    info = root / f"torchaudio-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchaudio\nVersion: {version}\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_installed_stack_matches() -> None:
    check_torch_stack()  # the locked stack itself passes
    assert _release(metadata.version("torch")) == _release(metadata.version("torchaudio"))


def test_release_ignores_local_build_tags() -> None:
    assert _release("2.11.0+cu130") == _release("2.11.0+cpu") == "2.11.0"


def test_mismatch_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"torch": "2.11.0+cu130", "torchaudio": "2.11.1"}
    monkeypatch.setattr(metadata, "version", versions.__getitem__)
    with pytest.raises(StackMismatchError, match=r"torch 2\.11\.0\+cu130 and torchaudio 2\.11\.1"):
        check_torch_stack()


def test_import_s2s_says_one_line(tmp_path: Path) -> None:
    env = _fake_torchaudio(tmp_path, MISMATCHED)
    proc = subprocess.run(
        [sys.executable, "-c", "import s2s"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("s2s._stack.StackMismatchError: s2s: torch ")
    assert f"torchaudio {MISMATCHED} do not belong together" in last
    assert f"pip install torchaudio=={_release(metadata.version('torch'))}" in last


def test_pytest_stops_with_one_line(tmp_path: Path) -> None:
    """The suite itself: no collection errors, one line naming both versions, non-zero exit."""
    env = _fake_torchaudio(tmp_path / "site", MISMATCHED)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert f"torchaudio {MISMATCHED} do not belong together" in out
    assert "error" not in out.lower().replace("stackmismatcherror", ""), out


def test_onnx_extra_stays_optional() -> None:
    """Training, decoding with PyTorch and reading a bundle's manifest never import onnx,
    onnxruntime or onnxscript; decoding a bundle without onnxruntime says what it needs."""
    code = (
        "import sys\n"
        "for m in ('onnx', 'onnxruntime', 'onnxscript'): sys.modules[m] = None\n"
        "import s2s, s2s.train.trainer, s2s.cli.train, s2s.cli.decode, s2s.cli.export\n"
        "from s2s.decode.inference import Speech2Text\n"
        "from s2s.export.bundle import read_bundle, is_bundle\n"
        "assert s2s.cli.export.main(['nowhere', 'out']) == 2\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "needs the onnx extra" in run.stderr
