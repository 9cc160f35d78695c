"""The training loop: accumulation, clipping, AMP, validation, checkpoints, resume, DDP.

The model is any nn.Module with `model(batch) -> dict` holding "loss" (scalar, mean over the
batch's target tokens), "n_tokens" and optionally "acc", "loss_att", "loss_ctc",
"loss_src_ctc" and "loss_cons". The batch has `.to(device)`, `.src_lens` (B,) and `.tgt_lens` (B,)
(throughput) and `.utt_ids` (warnings).
The train loader's `batch_sampler` follows the BucketBatchSampler contract:
`set_epoch(epoch, start)` (skip `start` batches, for mid-epoch resume), `state_dict()`,
`load_state_dict()`, `__len__`.

One "step" is one optimiser update. State changes only at step boundaries, so a checkpoint
(or an interrupt) at step N resumes exactly: `start` counts the batches of the epoch consumed
by the first N steps, and every RNG is restored.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2s.train import distributed as D
from s2s.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from s2s.train.config import TrainConfig
from s2s.train.init_param import initialise
from s2s.train.monitor import TrainingMonitor
from s2s.train.optim import LRScheduler, build_optimizer, lr_lambda
from s2s.train.speed import autocast, compile_layers, compile_options, prepare_onednn, resolve_amp
from s2s.train.tb_logger import TBLogger, format_metrics

log = logging.getLogger("s2s.train")

# Per-token scalars of the model's output dict that are averaged (token-weighted) and logged.
LOGGED = ("loss", "acc", "loss_att", "loss_ctc", "loss_src_ctc", "loss_cons")


class TrainingInterrupted(Exception):
    """Raised by Trainer.fit after an interrupt (SIGINT/SIGTERM) once the checkpoint is saved."""


def _lookahead(it: Iterable) -> Iterator[tuple[Any, bool]]:
    """(item, is_last) pairs, so the last batch of an epoch closes its accumulation window
    without trusting a sampler's __len__ after a mid-epoch resume."""
    it = iter(it)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc), None where that cannot be read."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _rng_neutral_iter(loader: Iterable) -> Iterator:
    """iter(loader) without consuming the global torch RNG (DataLoader draws a base seed when
    an iterator is created; a resumed run creates one at a different point than a straight
    run, which would shift every later dropout mask)."""
    state = torch.get_rng_state()
    it = iter(loader)
    torch.set_rng_state(state)
    return it


class Trainer:
    """Trains `model` on `train_loader`, validating on `valid_loader`, inside `exp_dir`
    (checkpoints/, tensorboard/). `config` (a plain dict) is stored in each checkpoint.
    `monitor` adds dev-set scores, attention maps and gradient norms to the logs (rank 0)."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        exp_dir: str | Path,
        train_loader: Iterable,
        valid_loader: Iterable | None = None,
        *,
        device: torch.device | str | None = None,
        dist_info: D.DistInfo | None = None,
        config: dict | None = None,
        monitor: TrainingMonitor | None = None,
    ) -> None:
        self.cfg = cfg
        self.monitor = monitor
        self._part_norms: dict[str, float] = {}  # monitor.grad_scalars of the step to log
        self.info = dist_info or D.env_info()
        self.device = torch.device(device) if device else D.resolve_device(cfg.device, self.info)
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.sampler = getattr(train_loader, "batch_sampler", None)
        self.config = config or {"train": asdict(cfg)}

        prepare_onednn()
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.module = model.to(self.device, memory_format=layout)
        if cfg.compile:  # in place: the state dict's keys and every caller see the same module
            compile_layers(self.module)
        self.model = D.wrap_model(self.module, self.device, self.info)
        self.optimizer = build_optimizer(self.module, cfg)
        per_epoch = math.ceil(len(train_loader) / cfg.accum_grad)  # type: ignore[arg-type]
        total = cfg.max_steps or cfg.max_epochs * per_epoch
        self.scheduler = LRScheduler(self.optimizer, lr_lambda(cfg, total))
        self.amp = resolve_amp(cfg.amp, self.device)  # "none", "bf16" or "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

        self.step = 0  # optimiser updates done
        self.epoch = 0  # current epoch (0-based)
        self.start = 0  # batches of the current epoch consumed by those updates
        self.bad_total = 0  # batches skipped for a non-finite loss or gradient, ever
        self.bad_streak = 0  # ... in a row
        self.valid_metrics: dict[str, float] = {}
        self.valid_step = -1  # step at which valid_metrics were computed
        self.saved_at: tuple[int, int, int] | None = None  # (step, epoch, start) of last save
        self._stop = False
        self._stats: defaultdict[str, float] = defaultdict(float)  # since the last log
        self._first_batch_logged = False
        self.tb = TBLogger(self.exp_dir / "tensorboard", enabled=self.info.is_main)

    # --- public -------------------------------------------------------------------------
    def train_step(self, batch) -> bool:
        """One optimiser update on one batch, exactly as training runs it (forward, backward,
        clipping, the optimiser, the schedule; accum_grad is not applied): what
        s2s.bench.train_step times. False when the batch was skipped (non-finite)."""
        self.model.train()
        try:
            if not self._forward_backward(batch, sync=True, consumed=self.start):
                return False
            return self._optimizer_step()
        finally:
            self.optimizer.zero_grad(set_to_none=True)

    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and raise TrainingInterrupted."""
        self._stop = True

    def fit(self, resume: bool = True) -> dict[str, float]:
        """Train until max_epochs / max_steps, resuming from the latest checkpoint first;
        a fresh run first loads cfg.init_param (a resumed one has them in its checkpoint).
        Returns the last validation metrics."""
        if not (resume and self.resume()) and self.cfg.init_param and self.step == 0:
            initialise(self.module, list(self.cfg.init_param))
        handlers = self._install_signal_handlers()
        try:
            self._fit()
        except KeyboardInterrupt:  # no handler installed (not the main thread)
            self._stop = True
        finally:
            self._restore_signal_handlers(handlers)
            self.tb.flush()
        if self._stop:
            self.save()
            log.info("interrupted at step %d: checkpoint written, rerun to resume", self.step)
            self.tb.close()
            raise TrainingInterrupted(f"training interrupted at step {self.step}")
        # The final checkpoint carries validation metrics (averaging ranks by them).
        validated = False
        if self.valid_step != self.step and self.valid_loader is not None:
            self._validate_and_log()
            validated = True
        if validated or self.saved_at != (self.step, self.epoch, self.start):
            self.save()
        self.tb.close()
        log.info("training done: step %d, epoch %d", self.step, self.epoch)
        return dict(self.valid_metrics)

    def resume(self, path: str | Path | None = None) -> Path | None:
        """Load `path`, or the latest checkpoint of exp_dir, if any; return what was loaded.
        Every rank loads rank 0's choice: one that saw another latest file (a shared file
        system's lag) would resume at another step and wait in collectives the others never
        reach."""
        path = Path(path) if path else latest_checkpoint(self.ckpt_dir)
        path = D.all_gather_object(path)[0]
        if path is None:
            return None
        state = load_checkpoint(path)
        try:
            self.module.load_state_dict(state["model"])
        except RuntimeError as e:
            raise RuntimeError(
                f"{path}: this checkpoint does not fit the model the config builds (was the model "
                f"config changed? train into a new experiment dir, e.g. with --tag): {e}"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.start = int(state["sampler"]["start"])
        self.bad_total = int(state.get("bad_batches", 0))
        self.valid_metrics = dict(state.get("metrics") or {})
        self.valid_step = self.step if self.valid_metrics else -1
        rngs = state["rng"]
        # Each rank continues its own streams; a different world size reuses rank 0's.
        mine = rngs[self.info.rank] if len(rngs) == self.info.world_size else rngs[0]
        set_rng_state(mine)
        if self.sampler is not None and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])
        self.saved_at = (self.step, self.epoch, self.start)
        log.info("resumed from %s (step %d, epoch %d, batch %d)", path, *self.saved_at)
        return path

    def save(self) -> Path | None:
        """Checkpoint the current step (every rank must call it: RNG states are gathered);
        rank 0 writes and prunes. Returns the path on rank 0."""
        rngs = D.all_gather_object(rng_state())
        path = None
        if self.info.is_main:
            sampler_state = {"seed": self.cfg.seed}
            if self.sampler is not None and hasattr(self.sampler, "state_dict"):
                sampler_state.update(self.sampler.state_dict())
            sampler_state.update(epoch=self.epoch, start=self.start)
            state = {
                "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rngs,
                "sampler": sampler_state,
                "step": self.step,
                "epoch": self.epoch,
                "bad_batches": self.bad_total,
                "metrics": dict(self.valid_metrics) if self.valid_step == self.step else {},
                "config": self.config,
                "world_size": self.info.world_size,
            }
            path = save_checkpoint(self.ckpt_dir, self.step, state)
            c = self.cfg
            removed = prune_checkpoints(
                self.ckpt_dir, c.keep_last, c.keep_best, c.best_metric, c.best_mode
            )
            log.info("saved %s%s", path, f" (pruned {len(removed)})" if removed else "")
        self.saved_at = (self.step, self.epoch, self.start)
        D.barrier()
        return path

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Token-weighted means of LOGGED over the validation set (summed over ranks)."""
        if self.valid_loader is None:
            return {}
        was_training = self.module.training
        self.module.eval()
        # [n_tokens, then per key: sum of value * n_tokens, tokens that reported it]
        sums = torch.zeros(1 + 2 * len(LOGGED), dtype=torch.float64)
        for batch in _rng_neutral_iter(self.valid_loader):
            batch = batch.to(self.device)
            with self._autocast():
                out = self.module(batch)
            n = float(out["n_tokens"])
            sums[0] += n
            for i, k in enumerate(LOGGED):
                if k in out:
                    sums[1 + 2 * i] += float(out[k]) * n
                    sums[2 + 2 * i] += n
        self.module.train(was_training)
        sums = D.all_reduce_sum(sums.to(self._reduce_device())).cpu()
        metrics = {}
        for i, k in enumerate(LOGGED):
            if sums[2 + 2 * i] > 0:
                metrics[f"valid/{k}"] = float(sums[1 + 2 * i] / sums[2 + 2 * i])
        if any(not math.isfinite(v) for v in metrics.values()):
            log.warning("non-finite validation metrics at step %d: %s", self.step, metrics)
        return metrics

    # --- the loop -------------------------------------------------------------------------
    def _fit(self) -> None:
        cfg = self.cfg
        self.model.train()
        if self._done():
            return
        while self.epoch < cfg.max_epochs:
            if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.epoch, self.start)
            self._stats = defaultdict(float)
            self._t0 = time.time()
            if self._train_epoch():
                return
            self.epoch += 1
            self.start = 0
            if cfg.valid_every_steps == 0 and self.valid_loader is not None:
                self._validate_and_log()
            if cfg.checkpoint_every_steps == 0:
                self.save()
            if self._stop:
                return

    def _train_epoch(self) -> bool:
        """One pass over the rest of the epoch; True when training must end now."""
        cfg = self.cfg
        consumed = self.start
        in_window = 0  # batches of the current accumulation window seen
        window_bad = False
        for batch, is_last in _lookahead(self._timed(_rng_neutral_iter(self.train_loader))):
            consumed += 1
            in_window += 1
            closes = in_window == cfg.accum_grad or is_last
            if not window_bad:
                window_bad = not self._forward_backward(batch, sync=closes, consumed=consumed)
            if not closes:
                continue
            stepped = False if window_bad else self._optimizer_step()
            self.optimizer.zero_grad(set_to_none=True)
            in_window, window_bad = 0, False
            self.start = consumed
            if stepped:
                self.bad_streak = 0
                if self._after_step():
                    return True
            if self._sync_stop():
                return True
        return False

    def _timed(self, batches: Iterator) -> Iterator:
        """The loader's batches, adding the time spent waiting for each to stats["data_s"];
        the first one of the run is logged with the time since the process started."""
        while True:
            t = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self._stats["data_s"] += time.perf_counter() - t
            if not self._first_batch_logged:
                self._first_batch_logged = True
                age = process_age()
                if age is not None and self.info.is_main:
                    log.info("first batch %.1f s after the process started", age)
            yield batch

    def _forward_backward(self, batch, sync: bool, consumed: int) -> bool:
        """Forward + backward of one batch (loss scaled by 1/accum_grad). False, with nothing
        accumulated, when the loss is non-finite on any rank."""
        batch = batch.to(self.device)
        no_sync = getattr(self.model, "no_sync", None)
        ctx = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with ctx:
            with self._autocast(), compile_options():
                out = self.model(batch)
            loss = out["loss"]
            bad_here = not bool(torch.isfinite(loss.detach()).all())
            flag = torch.tensor([float(bad_here)], device=self._reduce_device())
            if D.all_reduce_sum(flag).item() > 0:  # every rank skips together
                self._bad_batch(batch, consumed, bad_here, "loss")
                return False
            self.scaler.scale(loss / self.cfg.accum_grad).backward()
        n = float(out["n_tokens"])
        s = self._stats
        s["n_tokens"] += n
        for k in LOGGED:
            if k in out:
                s[k] += float(out[k].detach()) * n
                s[f"{k}#n"] += n
        s["frames"] += float(batch.src_lens.sum())
        s["tokens"] += float(batch.tgt_lens.sum())
        return True

    def _optimizer_step(self) -> bool:
        """Unscale, clip, step. False (no update) on a non-finite gradient norm."""
        self.scaler.unscale_(self.optimizer)
        if self.monitor is not None and (self.step + 1) % self.cfg.log_every_steps == 0:
            self._part_norms = self.monitor.grad_scalars(self.module)  # before clipping
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm))
        if self.scaler.is_enabled():
            # fp16: an overflow is routine; GradScaler skips the update and lowers the scale.
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale:
                return False
        else:
            if not math.isfinite(norm):  # DDP grads are all-reduced: every rank agrees
                self._bad_batch(None, self.start, True, "gradient norm")
                return False
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self._stats["grad_norm"] += norm
        self._stats["updates"] += 1
        return True

    def _after_step(self) -> bool:
        """Logging, validation, checkpointing after update `self.step`; True to stop."""
        cfg = self.cfg
        if self.step % cfg.log_every_steps == 0:
            self._log_train()
        validated = False
        if cfg.valid_every_steps and self.step % cfg.valid_every_steps == 0:
            self._validate_and_log()
            validated = True
        if (cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0) or (
            cfg.checkpoint_every_steps == 0 and validated
        ):
            self.save()
        return self._done()

    def _done(self) -> bool:
        return bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps

    def _sync_stop(self) -> bool:
        """Whether any rank was asked to stop (all ranks must leave at the same step)."""
        if not self.info.enabled:
            return self._stop
        flag = torch.tensor([float(self._stop)], device=self._reduce_device())
        self._stop = D.all_reduce_sum(flag).item() > 0
        return self._stop

    def _bad_batch(self, batch, consumed: int, local: bool, what: str) -> None:
        self.bad_total += 1
        self.bad_streak += 1
        self.optimizer.zero_grad(set_to_none=True)
        utts = getattr(batch, "utt_ids", None) if batch is not None else None
        where = f"epoch {self.epoch}, batch {consumed}, after step {self.step}"
        if local:
            shown = f"; utts {list(utts[:10])}{' ...' if len(utts) > 10 else ''}" if utts else ""
            log.warning("non-finite %s at %s: batch skipped%s", what, where, shown)
        self.tb.scalars({"train/bad_batches": self.bad_total}, self.step)
        if self.bad_streak >= self.cfg.max_bad_batches:
            raise RuntimeError(
                f"{self.bad_streak} consecutive batches with a non-finite {what} (last at "
                f"{where}{f', utts {list(utts[:10])}' if utts and local else ''}); stopping. "
                "Check the data and features, or lower train.lr / raise train.warmup_steps; "
                "the last checkpoint is intact (train.max_bad_batches sets the tolerance)."
            )

    # --- logging ------------------------------------------------------------------------
    def _log_train(self) -> None:
        s = self._stats
        keys = ["n_tokens", "frames", "tokens", "grad_norm", "updates", "data_s"]
        keys += [k for key in LOGGED for k in (key, f"{key}#n")]
        vec = torch.tensor([s.get(k, 0.0) for k in keys], dtype=torch.float64)
        vec = D.all_reduce_sum(vec.to(self._reduce_device())).cpu()
        tot = dict(zip(keys, vec.tolist()))
        elapsed = max(time.time() - self._t0, 1e-9)
        values = {f"train/{k}": tot[k] / tot[f"{k}#n"] for k in LOGGED if tot.get(f"{k}#n", 0) > 0}
        values["train/lr"] = self.scheduler.get_last_lr()
        if tot["updates"] > 0:
            # Each rank computed the same (all-reduced) norm: average over ranks and updates.
            values["train/grad_norm"] = tot["grad_norm"] / tot["updates"]
        values["train/frames_per_s"] = tot["frames"] / elapsed
        values["train/tokens_per_s"] = tot["tokens"] / elapsed
        # the share of the time the step waited for the loader (data.num_workers raises it
        # from 0 when it is not near 0)
        values["train/data_wait"] = tot["data_s"] / self.info.world_size / elapsed
        values["train/bad_batches"] = self.bad_total

        values["train/epoch"] = self.epoch
        if self.scaler.is_enabled():
            values["train/loss_scale"] = self.scaler.get_scale()
        if self.device.type == "cuda":
            values["train/gpu_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.tb.scalars(values | self._part_norms, self.step)  # the parts: TensorBoard only
        self._part_norms = {}
        if self.info.is_main:
            log.info("step %d epoch %d %s", self.step, self.epoch, format_metrics(values))
        self._stats = defaultdict(float)
        self._t0 = time.time()

    def _validate_and_log(self) -> None:
        t0 = time.time()
        self.valid_metrics = self.validate()
        if self.monitor is not None and self.info.is_main:
            self.valid_metrics |= self.monitor.on_validate(self.module, self.step, self.tb)
        if hasattr(self, "_t0"):  # keep validation time out of the training throughput
            self._t0 += time.time() - t0
        self.valid_step = self.step
        self.tb.scalars(self.valid_metrics, self.step)
        self.tb.flush()
        if self.info.is_main:
            log.info(
                "valid step %d epoch %d %s",
                self.step,
                self.epoch,
                format_metrics(self.valid_metrics),
            )

    # --- helpers ------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, self.amp)

    def _reduce_device(self) -> torch.device:
        # nccl reduces CUDA tensors only; gloo CPU tensors.
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}

        def handler(signum, frame):
            log.warning("signal %d: stopping after this step (again to abort)", signum)
            self.request_stop()
            for sig, h in old.items():  # a second signal acts immediately
                signal.signal(sig, h)

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        return old

    @staticmethod
    def _restore_signal_handlers(old: dict) -> None:
        for sig, h in old.items():
            signal.signal(sig, h)
