"""The `train:` section of an experiment config: TrainConfig, its `monitor:` part
(MonitorConfig) and the parsed form of its `init_param` entries (InitParam).

Plain dataclasses that import nothing of s2s above them (s2s.metrics only, to check metric
names), so the experiment schema (s2s.experiment.config) can hold them while the trainer
(s2s.train), which reads them, sits above the schema. s2s.train.config, s2s.train.monitor and
s2s.train.init_param re-export them under their old names.

Steps count optimiser updates (one update = `accum_grad` batches). Learning-rate schedules
(see s2s.train.optim):

- ``inverse_sqrt`` (fairseq): linear warm-up from 0 to ``lr`` over ``warmup_steps``, then
  ``lr * sqrt(warmup_steps / step)``; ``lr`` is the peak.
- ``noam`` (ESPnet / "Attention is all you need"): ``lr * model_dim**-0.5 *
  min(step**-0.5, step * warmup_steps**-1.5)``; ``lr`` is then a scale factor (ESPnet's
  ``transformer-lr``, typically 1-10). With ``model_dim: 0`` the factor is chosen so that the
  peak (at ``warmup_steps``) equals ``lr``, which makes it the same curve as ``inverse_sqrt``.
- ``constant``: linear warm-up to ``lr``, then flat.
- ``cosine``: linear warm-up, then cosine decay to ``min_lr`` at the last step (``max_steps``,
  or ``max_epochs`` x updates per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEVICES = ("auto", "cpu", "cuda")
OPTIMS = ("adam", "adamw")
OPTIM_IMPLS = ("auto", "fused", "foreach", "for_loop")
SCHEDULERS = ("noam", "inverse_sqrt", "constant", "cosine")
AMPS = ("none", "auto", "bf16", "fp16")
MODES = ("min", "max")
AVERAGE_BY = ("best", "last")


@dataclass(frozen=True)
class InitParam:
    """One parsed `<source>:<src_key>:<dst_key>[:<exclude_keys>]` entry (s2s.train.init_param
    loads it)."""

    source: str
    src_key: str = ""
    dst_key: str = ""
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> InitParam:
        parts = spec.split(":")
        if not parts[0] or len(parts) > 4:
            raise ValueError(
                f"init_param {spec!r}: expected <source>:<src_key>:<dst_key>[:<exclude_keys>]"
            )
        parts += [""] * (4 - len(parts))
        exclude = tuple(e for e in parts[3].split(",") if e)
        return cls(parts[0], parts[1], parts[2], exclude)


@dataclass
class MonitorConfig:
    """enabled: the whole monitor (one key). metrics: scored on a greedy decode of the dev set
    at each validation ([] = no decode; the recipes set theirs). decode_utts: dev utterances
    decoded (0 = all). max_len_ratio: that decode stops at max_len_ratio x the longest
    reference + 5 tokens (an untrained model's runaway outputs would otherwise run to
    decode.max_len_b every time). images / merge_stats / grad_norms / frontend_stats: each
    part alone.
    images_every: the attention images at every images_every-th validation (the
    images_every-th first, counted from the process's start: a resumed run counts afresh):
    drawing them costs more than the dev decode at CPU sizes."""

    enabled: bool = True
    metrics: list[str] = field(default_factory=list)
    decode_utts: int = 0
    max_len_ratio: float = 1.5
    images: bool = True
    images_every: int = 1
    merge_stats: bool = True
    grad_norms: bool = True
    frontend_stats: bool = True

    def __post_init__(self) -> None:
        from s2s.metrics import parse_metric_names

        if self.metrics:
            parse_metric_names(list(self.metrics))  # an unknown metric fails before training
        if self.decode_utts < 0:
            raise ValueError(f"train.monitor.decode_utts must be >= 0, got {self.decode_utts}")
        if self.max_len_ratio <= 0:
            raise ValueError(f"train.monitor.max_len_ratio must be > 0, got {self.max_len_ratio}")
        if self.images_every < 1:
            raise ValueError(f"train.monitor.images_every must be >= 1, got {self.images_every}")


@dataclass
class TrainConfig:
    """How a model is trained.

    device: "auto" (CUDA when available), "cpu" or "cuda". seed: python/numpy/torch seed.
    valid_every_steps: 0 = validate once per epoch (at its end).
    checkpoint_every_steps: 0 = write a checkpoint after every validation.
    keep_last: newest checkpoints kept (0 = keep every checkpoint). keep_best: checkpoints with
    the best `best_metric` also kept (`best_mode` min or max).
    n_average / average_by: how many checkpoints (the best, or the last) stage 8 averages into
    model_avg.pt. init_param: ESPnet's `<source>:<src_key>:<dst_key>[:<exclude_keys>]`
    entries loaded at the start of a fresh run (never on resume; s2s.train.init_param).
    max_bad_batches: consecutive batches with a non-finite loss (or gradient)
    tolerated before training stops with an error.
    How fast a step runs (s2s.train.speed, docs/training.md): amp "none", "bf16", "fp16" or
    "auto" (bf16 where the device computes it natively, else none); optim_impl "auto" (the
    fused optimiser kernel where there is one), "fused", "foreach" or "for_loop"; compile:
    torch.compile the encoder's and decoder's layers; channels_last: 2-D convolutions (the
    speech frontend) in the NHWC layout oneDNN computes in.
    monitor: what TensorBoard shows besides the losses (dev-set scores of a greedy decode,
    attention maps, merge weights, per-projection gradient norms; s2s.train.monitor), off with
    `monitor.enabled: false`.
    """

    device: str = "auto"
    seed: int = 0
    optim: str = "adam"
    optim_impl: str = "auto"
    lr: float = 2e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-9
    weight_decay: float = 0.0
    scheduler: str = "inverse_sqrt"
    warmup_steps: int = 10000
    model_dim: int = 0  # noam only: d_model of the scale d**-0.5 (0 = peak lr is `lr`)
    min_lr: float = 0.0  # cosine's floor, and cooldown's end
    cooldown: float = 0.0  # the last fraction of the steps, lr falls linearly to min_lr
    max_epochs: int = 100
    max_steps: int = 0  # 0 = no cap
    accum_grad: int = 1
    grad_clip: float = 5.0  # 0 = no clipping (the norm is still logged)
    amp: str = "none"
    compile: bool = False
    channels_last: bool = True
    valid_every_steps: int = 0
    log_every_steps: int = 100
    checkpoint_every_steps: int = 0
    keep_last: int = 5
    keep_best: int = 10
    best_metric: str = "valid/loss"
    best_mode: str = "min"
    n_average: int = 10
    average_by: str = "best"
    max_bad_batches: int = 10
    init_param: list[str] = field(default_factory=list)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"train.{msg}")

        check(self.device in DEVICES, f"device {self.device!r} not in {DEVICES}")
        check(self.optim in OPTIMS, f"optim {self.optim!r} not in {OPTIMS}")
        check(
            self.optim_impl in OPTIM_IMPLS, f"optim_impl {self.optim_impl!r} not in {OPTIM_IMPLS}"
        )
        check(self.scheduler in SCHEDULERS, f"scheduler {self.scheduler!r} not in {SCHEDULERS}")
        check(self.amp in AMPS, f"amp {self.amp!r} not in {AMPS}")
        check(self.best_mode in MODES, f"best_mode {self.best_mode!r} not in {MODES}")
        check(self.average_by in AVERAGE_BY, f"average_by {self.average_by!r} not in {AVERAGE_BY}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(len(self.betas) == 2, f"betas must have two values, got {list(self.betas)}")
        check(all(0.0 <= b < 1.0 for b in self.betas), f"betas must be in [0, 1): {self.betas}")
        check(self.eps > 0, f"eps must be > 0, got {self.eps}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr}")
        check(0.0 <= self.cooldown < 1.0, f"cooldown must be in [0, 1), got {self.cooldown}")
        for name in (
            "warmup_steps",
            "model_dim",
            "max_steps",
            "valid_every_steps",
            "checkpoint_every_steps",
            "keep_last",
            "keep_best",
        ):
            check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_epochs", "accum_grad", "log_every_steps", "n_average", "max_bad_batches"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for spec in self.init_param:
            InitParam.parse(spec)  # a malformed entry fails before training starts
        check(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        check(
            "/" in self.best_metric,
            f"best_metric must look like 'valid/loss' or 'valid/acc', got {self.best_metric!r}",
        )
        # Averaging needs the checkpoints it averages to survive pruning.
        if self.keep_last:
            kept = self.keep_best if self.average_by == "best" else self.keep_last
            check(
                self.n_average <= kept,
                f"n_average={self.n_average} exceeds the {self.average_by} checkpoints kept "
                f"({'keep_best' if self.average_by == 'best' else 'keep_last'}={kept})",
            )
