"""Training checkpoints: exp/<name>/checkpoints/step_<N>.pt, written atomically (found and
read by s2s.experiment.checkpoints, below both the trainer and the experiment loader).

A checkpoint is a dict: model, optimizer, scheduler, scaler (state dicts), rng (see
`rng_state`), sampler ({"epoch", "start", "seed"}: start = batches of that epoch already
consumed), step, epoch, metrics (validation metrics at that step, {} if none) and config.
`checkpoints/metrics.json` indexes the metrics of every checkpoint so pruning and averaging
do not have to load them; a checkpoint missing from it is read instead.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from s2s.experiment.checkpoints import (  # noqa: F401  (reading lives below the trainer)
    STEP_RE,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)

try:  # numpy is optional; its RNG is saved when present (data pipelines may use it)
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

INDEX = "metrics.json"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary file in the same directory, then os.replace: readers never
    see a partial file, and a failed save leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _atomic_write_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_index(ckpt_dir: Path) -> dict[str, dict]:
    path = ckpt_dir / INDEX
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RuntimeError(f"{path}: corrupt checkpoint index: {e}") from e


def save_checkpoint(ckpt_dir: str | Path, step: int, state: dict) -> Path:
    """Write state to ckpt_dir/step_<step>.pt and record state["metrics"] in the index."""
    ckpt_dir = Path(ckpt_dir)
    path = atomic_save(state, checkpoint_path(ckpt_dir, step))
    index = _read_index(ckpt_dir)
    index[path.name] = dict(state.get("metrics") or {})
    _atomic_write_text(json.dumps(index, indent=1, sort_keys=True), ckpt_dir / INDEX)
    return path


def checkpoint_metrics(ckpt_dir: str | Path) -> dict[Path, dict[str, float]]:
    """Metrics of every checkpoint in ckpt_dir (from the index, else from the file)."""
    ckpt_dir = Path(ckpt_dir)
    index = _read_index(ckpt_dir)
    out = {}
    for _, path in list_checkpoints(ckpt_dir):
        if path.name not in index:
            index[path.name] = dict(load_checkpoint(path).get("metrics") or {})
        out[path] = index[path.name]
    return out


def best_checkpoints(ckpt_dir: str | Path, metric: str, mode: str, n: int) -> list[Path]:
    """The n checkpoints with the best `metric` (mode "min" or "max"), best first; ties go to
    the later step. Checkpoints without that metric are never chosen."""
    scored = [
        (m[metric], int(STEP_RE.match(p.name).group(1)), p)
        for p, m in checkpoint_metrics(ckpt_dir).items()
        if metric in m and math.isfinite(m[metric])
    ]
    sign = 1.0 if mode == "min" else -1.0
    scored.sort(key=lambda t: (sign * t[0], -t[1]))
    return [p for _, _, p in scored[:n]]


def prune_checkpoints(
    ckpt_dir: str | Path, keep_last: int, keep_best: int, metric: str, mode: str
) -> list[Path]:
    """Delete every checkpoint that is neither among the `keep_last` newest nor among the
    `keep_best` best by `metric`. keep_last == 0 keeps everything. Returns what was deleted."""
    ckpt_dir = Path(ckpt_dir)
    if keep_last == 0:
        return []
    ckpts = [p for _, p in list_checkpoints(ckpt_dir)]
    keep = set(ckpts[-keep_last:])
    if keep_best:
        keep |= set(best_checkpoints(ckpt_dir, metric, mode, keep_best))
    removed = [p for p in ckpts if p not in keep]
    for p in removed:
        p.unlink(missing_ok=True)
    if removed:
        index = {k: v for k, v in _read_index(ckpt_dir).items() if (ckpt_dir / k).exists()}
        _atomic_write_text(json.dumps(index, indent=1, sort_keys=True), ckpt_dir / INDEX)
    return removed


# --- random number generators -------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG a training step can draw from (the current CUDA device only)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if np is not None:
        state["numpy"] = np.random.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if np is not None and "numpy" in state:
        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
