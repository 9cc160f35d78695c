"""The GPU check's dry run in an environment of the GPU image's packages, on this CPU: what a
lent GPU machine carries, so that an import it lacks fails here and not on the lease
(docs/engine.md, "The GPU check").

The image: CPython 3.12 with the lock's packages (requirements/lock.txt) but ABSENT: torch
2.11, triton 3.6, torchaudio, sentencepiece, sacrebleu, tensorboard, onnx, onnxruntime,
matplotlib, pytest, hypothesis, numpy, pyyaml, tqdm, ... and no jiwer, omegaconf, soundfile,
espeakng-loader or rouge-score. `check` builds it with uv from uv's cache alone (no index),
shows that the absent packages cannot be imported there, then runs what the README has a
person run on the lent machine, `tools/gpu_check.sh run OUT 600 WHEELS` (which installs the
check's wheels), with `--dry-run`.

    python tools/gpu_image.py prepare                 # once, with network: fills the caches
    python tools/gpu_image.py check OUT [--env DIR]   # offline: the environment, the dry run

`prepare` installs the image once into a temporary environment, so that uv's cache holds every
wheel of it for CPython 3.12 (torch's among them), and downloads the check's wheels
(`tools/gpu_check.sh fetch`) into --wheels, by default ~/.cache/s2s/gpu-wheels. `check` exits
0 when every part of the dry run is "ok" or "skipped on CPU", 1 when one is not, and 3 when it
cannot build the environment offline (no CPython 3.12, set GPU_IMAGE_PYTHON; or a wheel not
in the caches: run `prepare`). tests/test_gpu_check.py runs `check` (slow) and skips on 3.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
#: not on the GPU image: the five packages s2s requires that the lent machines lack, with the
#: dependencies nothing else there needs (rapidfuzz: jiwer's; cffi, pycparser: soundfile's;
#: nltk and its own: rouge-score's), and tools of our own tests and development that the check
#: never runs
ABSENT = (
    *("jiwer", "rapidfuzz", "omegaconf", "soundfile", "cffi", "pycparser", "espeakng-loader"),
    *("rouge-score", "nltk", "click", "joblib", "cloudpickle", "defusedxml"),
    *("mtla", "onnxscript", "onnx-ir", "pytest-timeout", "ruff", "uv"),
)
#: the import names of the five, which must fail in the image
ABSENT_MODULES = ("jiwer", "rapidfuzz", "omegaconf", "soundfile", "espeakng_loader", "rouge_score")
CANNOT = 3  # exit status: the environment cannot be built here


def image_requirements(lock: str) -> list[str]:
    """The lock's requirement lines (environment markers kept, for uv to evaluate) of the
    packages the image carries: all but ABSENT."""
    return [
        line
        for line in lock.splitlines()
        if line and not line.startswith((" ", "#")) and line.split("==")[0] not in ABSENT
    ]


def find_python(uv: str) -> str | None:
    """A CPython 3.12: GPU_IMAGE_PYTHON, else what uv finds, else pyenv's."""
    if os.environ.get("GPU_IMAGE_PYTHON"):
        return os.environ["GPU_IMAGE_PYTHON"]
    res = subprocess.run(
        [uv, "python", "find", "3.12", "--no-python-downloads"], capture_output=True, text=True
    )
    if res.returncode == 0:
        return res.stdout.strip()
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(pyenv, "versions", "3.12.*", "bin", "python3.12")))
    return found[-1] if found else None


def find_uv() -> str | None:
    here = Path(sys.executable).with_name("uv")
    return str(here) if here.exists() else shutil.which("uv")


def build_env(env: Path, offline: bool) -> str:
    """Create the image's environment at env; its python, or SystemExit(CANNOT) with why."""
    uv = find_uv()
    python = uv and find_python(uv)
    if not uv or not python:
        print("gpu_image: needs uv and a CPython 3.12 (set GPU_IMAGE_PYTHON)", file=sys.stderr)
        raise SystemExit(CANNOT)
    reqs = Path(tempfile.mkstemp(suffix=".txt")[1])
    reqs.write_text("\n".join(image_requirements(LOCK.read_text())) + "\n")
    flags = ["--offline"] if offline else []
    for argv in (
        [uv, "venv", "--quiet", "--clear", "--python", python, *flags, str(env)],
        [uv, "pip", "install", "--quiet", "--no-deps", *flags, "--python", str(env / "bin/python")]
        + ["-r", str(reqs)],
    ):
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode:
            print(f"gpu_image: {' '.join(argv[:3])} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
            if offline:
                print("gpu_image: run `python tools/gpu_image.py prepare` once", file=sys.stderr)
            raise SystemExit(CANNOT)
    reqs.unlink()
    return str(env / "bin" / "python")


def clean_environ() -> dict[str, str]:
    """This process's environment without what would let the image see other packages."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TRITON_INTERPRET", "PIP_FIND_LINKS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"PYTHONNOUSERSITE": "1"}


def absent_importable(python: str, env: dict[str, str]) -> list[str]:
    """The ABSENT packages that the image's python can import (none, if it is the image)."""
    code = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {list(ABSENT_MODULES)!r} if importlib.util.find_spec(m)]))"
    )
    res = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    return json.loads(res.stdout) if res.returncode == 0 else [res.stderr]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    default_wheels = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    default_wheels = default_wheels / "s2s" / "gpu-wheels"
    pre = sub.add_parser("prepare", help="with network: fill uv's cache and the wheel folder")
    pre.add_argument("--wheels", type=Path, default=default_wheels)
    chk = sub.add_parser("check", help="offline: build the image, run the dry run in it")
    chk.add_argument("out", type=Path)
    chk.add_argument("--wheels", type=Path, default=default_wheels)
    chk.add_argument("--env", type=Path, help="where to build it (default: a temporary folder)")
    args = p.parse_args(argv)
    env_vars = clean_environ()
    if args.cmd == "prepare":
        with tempfile.TemporaryDirectory() as tmp:
            build_env(Path(tmp) / "image", offline=False)
        fetch = [str(ROOT / "tools" / "gpu_check.sh"), "fetch", str(args.wheels)]
        return subprocess.run(fetch, env=env_vars | {"PYTHON": sys.executable}).returncode
    if not list(args.wheels.glob("*.whl")):
        print(f"gpu_image: no wheels in {args.wheels}: run `prepare` once", file=sys.stderr)
        return CANNOT
    with tempfile.TemporaryDirectory() as tmp:
        env = args.env or Path(tmp) / "image"
        python = build_env(env, offline=True)
        if leaked := absent_importable(python, env_vars):
            print(f"gpu_image: the image must lack {leaked}", file=sys.stderr)
            return 1
        run = [str(ROOT / "tools" / "gpu_check.sh"), "run", str(args.out), "600", str(args.wheels)]
        extra = {"PYTHON": python, "GPU_CHECK_FLAGS": "--dry-run"}
        return subprocess.run(run, env=env_vars | extra).returncode


if __name__ == "__main__":
    raise SystemExit(main())
