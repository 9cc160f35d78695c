"""Checkpoint averaging (stage 8): exp/<name>/model_avg.pt from the best (or last) n."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from s2s.train.checkpoint import (
    atomic_save,
    best_checkpoints,
    list_checkpoints,
    load_checkpoint,
)
from s2s.train.config import TrainConfig


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors (accumulated in float64, cast back);
    integer/bool tensors (e.g. BatchNorm's num_batches_tracked) are taken from the last."""
    if not states:
        raise ValueError("nothing to average")
    keys = list(states[-1])
    for i, s in enumerate(states):
        if list(s) != keys:
            missing = set(keys) ^ set(s)
            raise ValueError(f"state dict {i} has different keys: {sorted(missing)[:5]}")
    out = {}
    for k in keys:
        last = states[-1][k]
        if torch.is_floating_point(last):
            acc = torch.zeros_like(last, dtype=torch.float64)
            for s in states:
                acc += s[k].to(acc.dtype)
            out[k] = (acc / len(states)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def select_checkpoints(ckpt_dir: str | Path, cfg: TrainConfig) -> list[Path]:
    """The checkpoints averaging uses: the `n_average` best by `best_metric`, or the last
    `n_average` (average_by), sorted by step so integer buffers come from the newest."""
    ckpt_dir = Path(ckpt_dir)
    if cfg.average_by == "best":
        paths = best_checkpoints(ckpt_dir, cfg.best_metric, cfg.best_mode, cfg.n_average)
        if not paths:  # no validation metrics recorded: fall back to the newest
            paths = [p for _, p in list_checkpoints(ckpt_dir)[-cfg.n_average :]]
    else:
        paths = [p for _, p in list_checkpoints(ckpt_dir)[-cfg.n_average :]]
    if not paths:
        raise FileNotFoundError(f"no checkpoints to average in {ckpt_dir}")
    steps = {p: s for s, p in list_checkpoints(ckpt_dir)}
    return sorted(paths, key=lambda p: steps[p])


def average_checkpoints(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Average the models of `paths` into `out` ({"model": state_dict, "averaged": [names]},
    which s2s.experiment.load_model_weights reads)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("nothing to average")
    # Streamed: one checkpoint in memory at a time, plus the float64 running sums.
    sums: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for i, path in enumerate(paths):
        state = load_checkpoint(path)["model"]
        if i and list(state) != list(last):
            diff = sorted(set(state) ^ set(last))[:5]
            raise ValueError(f"{path}: model keys differ from {paths[0].name}: {diff}")
        for k, v in state.items():
            if torch.is_floating_point(v):
                sums[k] = sums[k] + v.double() if k in sums else v.double()
        last = state
    avg = {
        k: (sums[k] / len(paths)).to(v.dtype) if k in sums else v.clone() for k, v in last.items()
    }
    return atomic_save({"model": avg, "averaged": [p.name for p in paths]}, out)
