"""Reading an experiment's weights: its checkpoints (exp/<name>/checkpoints/step_<N>.pt,
written by s2s.train.checkpoint) and its averaged model (exp/<name>/model_avg.pt).

Below both the loader (s2s.experiment.load) and the trainer (resuming, averaging,
init_param): the one place that knows the checkpoint file names, which file holds an
experiment's weights, and how each kind is read.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

STEP_RE = re.compile(r"^step_(\d+)\.pt$")
AVERAGED = "model_avg.pt"  # what averaging and s2s-pack write: tensors only


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{step}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every step_<N>.pt in ckpt_dir, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    out = []
    for p in ckpt_dir.iterdir():
        m = STEP_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ckpt_dir, or None."""
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1][1] if ckpts else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A trainer checkpoint, unpickled in full (it holds RNG and optimiser state): only for
    training runs you trust. RuntimeError naming the file when it cannot be read."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise RuntimeError(f"cannot read checkpoint {path}: {e}") from e


def weights_candidates(exp_dir: str | Path) -> list[Path]:
    """Where an experiment's weights may be, in order: model_avg.pt, then its latest
    checkpoint (when it has one)."""
    exp_dir = Path(exp_dir)
    latest = latest_checkpoint(exp_dir / "checkpoints")
    return [exp_dir / AVERAGED, *([latest] if latest is not None else [])]


def find_weights(exp_dir: str | Path) -> Path | None:
    """The file that holds an experiment's weights: model_avg.pt, else its latest checkpoint;
    None when it has neither."""
    return next((p for p in weights_candidates(exp_dir) if p.is_file()), None)


def load_weights_only(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a weights file ({"model": state_dict, ...} or a bare state dict), read
    with torch.load(weights_only=True): tensors and plain containers, never code. ValueError
    naming the file for anything else (a pickled object, a damaged file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for objects; RuntimeError/EOFError for damage
        raise ValueError(f"{path}: not a weights-only file (tensors only): {e}") from e
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    return state


def read_state_dict(path: str | Path, weights_only: bool) -> dict[str, torch.Tensor]:
    """The model state dict in `path`: read weights-only (load_weights_only), or unpickled in
    full (a trainer checkpoint, which also holds RNG and optimiser state: only from training
    runs you trust)."""
    if weights_only:
        return load_weights_only(path)
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    return state
