"""Optimiser and learning-rate schedules (formulas in s2s.train.config)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from s2s.train.config import TrainConfig
from s2s.train.speed import optimizer_impl


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters, run as cfg.optim_impl says. AdamW decays
    only matrices (dim >= 2): biases and norm gains are left alone, the usual transformer
    recipe."""
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    kw = dict(
        lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **optimizer_impl(cfg.optim_impl, device)
    )
    if cfg.optim == "adam":
        return torch.optim.Adam(params, weight_decay=cfg.weight_decay, **kw)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], **kw)


def lr_lambda(cfg: TrainConfig, total_steps: int = 0) -> Callable[[int], float]:
    """The learning rate at optimiser step `step` (1-based: the rate used by the step-th
    update). total_steps: the last step, needed by the cosine schedule and a cooldown.

    `cfg.cooldown` > 0 ends any schedule with a linear fall to `min_lr` over that fraction of
    the steps (warmup-stable-decay, arXiv 2405.18392): a run of known length ends annealed
    instead of at the schedule's last rate."""
    fn = _schedule(cfg, total_steps)
    if cfg.cooldown <= 0:
        return fn
    if total_steps <= cfg.warmup_steps:
        raise ValueError(
            f"a cooldown needs more total steps ({total_steps}) than warmup_steps"
            f" ({cfg.warmup_steps})"
        )
    begin = max(cfg.warmup_steps, round(total_steps * (1.0 - cfg.cooldown)))
    length = total_steps - begin
    if length <= 0:
        return fn

    def cooled(s: int) -> float:
        if s <= begin:
            return fn(s)
        # near 1 just after the cooldown starts, 1 / (length + 1) at the last step (which
        # still learns), 0 past it (an epoch with more batches than the estimate)
        left = max(0.0, (total_steps - s + 1) / (length + 1))
        return cfg.min_lr + (fn(begin) - cfg.min_lr) * left

    return cooled


def _schedule(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    w = cfg.warmup_steps
    base = cfg.lr

    def warm(step: int) -> float:
        return min(1.0, step / w) if w > 0 else 1.0

    if cfg.scheduler == "inverse_sqrt":
        return lambda s: base * (warm(s) if s <= w else math.sqrt(w / s))
    if cfg.scheduler == "noam":
        w1 = max(w, 1)
        scale = cfg.model_dim**-0.5 if cfg.model_dim else w1**0.5
        return lambda s: base * scale * min(max(s, 1) ** -0.5, max(s, 1) * w1**-1.5)
    if cfg.scheduler == "constant":
        return lambda s: base * warm(s)
    if cfg.scheduler == "cosine":
        if total_steps <= w:
            raise ValueError(
                f"cosine schedule needs more total steps ({total_steps}) than warmup_steps ({w})"
            )

        def cosine(s: int) -> float:
            if s <= w:
                return base * warm(s)
            frac = min(1.0, (s - w) / (total_steps - w))
            return cfg.min_lr + 0.5 * (base - cfg.min_lr) * (1 + math.cos(math.pi * frac))

        return cosine
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}")


class LRScheduler:
    """Sets every param group's lr from `fn(step)`; its state is just the step count, so a
    resumed run continues the curve exactly (no closures pickled)."""

    def __init__(self, optimizer: torch.optim.Optimizer, fn: Callable[[int], float]) -> None:
        self.optimizer, self.fn, self.step_count = optimizer, fn, 0
        self._apply()

    def _apply(self) -> None:
        # The lr of the *next* update (1-based), so the first update already warms up.
        lr = self.fn(self.step_count + 1)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> float:
        """The lr the next optimiser update uses."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
