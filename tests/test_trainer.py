"""Trainer, checkpoints, averaging, schedules and the training config on a toy model (CPU)."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers import ToyDataset, ToyModel, make_cfg, make_loader, text_experiment
from omegaconf import OmegaConf

from s2s.train.average import average_checkpoints, average_state_dicts, select_checkpoints
from s2s.train.checkpoint import (
    atomic_save,
    best_checkpoints,
    checkpoint_metrics,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from s2s.train.config import TrainConfig
from s2s.train.optim import lr_lambda
from s2s.train.trainer import Trainer, TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]


def make_trainer(exp: Path, cfg: TrainConfig, train_ds=None, seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    model = ToyModel()
    train_ds = train_ds or ToyDataset(24)
    return Trainer(
        model,
        cfg,
        exp,
        make_loader(train_ds, shuffle=True, seed=cfg.seed),
        make_loader(ToyDataset(8, seed=1), shuffle=False),
    )


def assert_same_training_state(a: Trainer, b: Trainer) -> None:
    for (k, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-6, msg=k)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for p in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(sa[p][name], sb[p][name], rtol=0, atol=1e-6)
    assert a.scheduler.state_dict() == b.scheduler.state_dict()
    assert (a.step, a.epoch, a.start) == (b.step, b.epoch, b.start)


# --- the loop -------------------------------------------------------------------------------


def test_batches_per_epoch_is_toy_sized():
    # The resume tests below stop mid-epoch only if an epoch holds several updates.
    loader = make_loader(ToyDataset(24), shuffle=True)
    assert len(loader) >= 5


def test_stop_at_max_steps_then_resume_equals_straight_run(tmp_path):
    k = 2  # mid-epoch: 3 updates per epoch with accum_grad=2
    straight = make_trainer(tmp_path / "straight", make_cfg(max_steps=2 * k))
    straight.fit()

    first = make_trainer(tmp_path / "resumed", make_cfg(max_steps=k))
    first.fit()
    assert first.step == k and 0 < first.start < len(first.train_loader)
    assert latest_checkpoint(tmp_path / "resumed" / "checkpoints").name == f"step_{k}.pt"
    second = make_trainer(tmp_path / "resumed", make_cfg(max_steps=2 * k), seed=123)
    second.fit()
    assert second.step == 2 * k
    assert_same_training_state(straight, second)
    assert second.module.updates.item() == 2 * k * 2  # buffers restored too (accum_grad=2)


def test_sigterm_writes_checkpoint_and_resume_equals_full_run(tmp_path):
    cfg = make_cfg(max_epochs=2)
    full = make_trainer(tmp_path / "full", cfg)
    full.fit()

    run = make_trainer(tmp_path / "run", cfg)
    inner = run.train_loader

    class StopAfter:  # asks for a stop when the 2nd epoch's 3rd batch is fetched
        batch_sampler = inner.batch_sampler

        def __len__(self):
            return len(inner)

        def __iter__(self):
            return self.stopping(iter(inner))  # iter() now: DataLoader draws its seed here

        @staticmethod
        def stopping(it):
            for i, b in enumerate(it):
                if run.epoch == 1 and i == 2:
                    os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends
                yield b

    run.train_loader = StopAfter()
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted):
        run.fit()
    assert signal.getsignal(signal.SIGTERM) == handler  # restored
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    # The trainer fetches one batch ahead: the request arrives while batch 2 (of the window
    # 1-2) is trained, so the checkpoint follows that window's update.
    assert ckpt["epoch"] == 1 and ckpt["sampler"]["start"] == 2 and ckpt["step"] == 4
    resumed = make_trainer(tmp_path / "run", cfg, seed=7)
    resumed.fit()
    assert_same_training_state(full, resumed)


def test_nan_batch_is_skipped_counted_and_named(tmp_path, caplog):
    ds = ToyDataset(24, poison=frozenset({"utt005"}))
    tr = make_trainer(tmp_path, make_cfg(accum_grad=1, max_epochs=2), train_ds=ds)
    with caplog.at_level(logging.WARNING, logger="s2s.train"):
        tr.fit()
    assert tr.bad_total == 2  # once per epoch
    assert tr.step == 2 * (len(tr.train_loader) - 1)
    assert "utt005" in caplog.text and "non-finite loss" in caplog.text
    assert all(torch.isfinite(p).all() for p in tr.module.parameters())
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["bad_batches"] == 2


def test_repeated_nan_batches_stop_with_a_clear_error(tmp_path):
    ds = ToyDataset(24, poison=frozenset(f"utt{i:03d}" for i in range(24)))
    tr = make_trainer(tmp_path, make_cfg(accum_grad=1, max_bad_batches=3), train_ds=ds)
    with pytest.raises(RuntimeError, match=r"3 consecutive batches with a non-finite loss.*utt"):
        tr.fit()
    assert tr.step == 0 and tr.bad_total == 3
    assert latest_checkpoint(tmp_path / "checkpoints") is None


def test_tensorboard_scalars_are_written_and_finite(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tr = make_trainer(tmp_path, make_cfg(max_epochs=2))
    metrics = tr.fit()
    assert set(metrics) == {"valid/loss", "valid/acc"}
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    want = {"train/loss", "train/acc", "train/lr", "train/grad_norm", "train/tokens_per_s"}
    want |= {"train/frames_per_s", "train/bad_batches", "valid/loss", "valid/acc"}
    assert want <= tags
    for tag in want:
        events = acc.Scalars(tag)
        assert events and all(math.isfinite(e.value) for e in events), tag
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == sorted(steps) and steps[-1] == tr.step
    assert len(acc.Scalars("valid/loss")) == 2  # once per epoch
    assert max(e.value for e in acc.Scalars("train/lr")) <= 1e-2 + 1e-9


class SlowDataset(ToyDataset):
    """Each item takes 20 ms to read: a loader the step waits on."""

    def __getitem__(self, i):
        time.sleep(0.02)
        return super().__getitem__(i)


def test_data_wait_share_and_first_batch_are_logged(tmp_path, caplog):
    """train/data_wait is the share of wall time spent waiting for batches: near 1 with a
    loader much slower than the toy step, and the first batch's time since start-up is logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tr = make_trainer(tmp_path, make_cfg(max_epochs=1, accum_grad=1), SlowDataset(24))
    with caplog.at_level(logging.INFO, logger="s2s.train"):
        tr.fit()
    assert re.search(r"first batch [0-9.]+ s after the process started", caplog.text)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    waits = [e.value for e in acc.Scalars("train/data_wait")]
    # (the wait is counted when it happens: fetching batch k + 1 before step k, to know
    # whether k is the epoch's last, puts the last interval's wait in the one before)
    assert all(0.0 <= w <= 1.0 for w in waits) and sum(waits) / len(waits) > 0.5, waits


def test_training_reduces_the_loss(tmp_path):
    tr = make_trainer(tmp_path, make_cfg(max_epochs=1, accum_grad=1))
    before = tr.validate()["valid/loss"]
    after = make_trainer(tmp_path / "b", make_cfg(max_epochs=15, accum_grad=1)).fit()
    assert after["valid/loss"] < before


def test_checkpoint_cadence_and_pruning_in_training(tmp_path):
    cfg = make_cfg(max_epochs=4, accum_grad=1, keep_last=1, keep_best=1, n_average=1)
    tr = make_trainer(tmp_path, cfg)
    tr.fit()
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert 1 <= len(ckpts) <= 2 and ckpts[-1][0] == tr.step
    metrics = checkpoint_metrics(tmp_path / "checkpoints")
    assert all("valid/loss" in m for m in metrics.values())
    ckpt = load_checkpoint(ckpts[-1][1])
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "rng", "sampler", "step"}
    assert ckpt["sampler"] == {"epoch": 4, "start": 0, "seed": 0}


# --- checkpoints ------------------------------------------------------------------------------


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom")


def test_atomic_save_leaves_no_partial_file(tmp_path):
    path = tmp_path / "step_1.pt"
    atomic_save({"a": torch.ones(3)}, path)
    big = {"a": torch.randn(10000), "z": Unpicklable()}  # fails after writing the tensor part
    with pytest.raises(RuntimeError, match="boom"):
        atomic_save(big, path)
    assert [p.name for p in tmp_path.iterdir()] == ["step_1.pt"]
    torch.testing.assert_close(torch.load(path)["a"], torch.ones(3))
    with pytest.raises(RuntimeError, match="boom"):
        atomic_save(big, tmp_path / "step_2.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["step_1.pt"]
    assert latest_checkpoint(tmp_path).name == "step_1.pt"


def _fake(ckpt_dir: Path, losses: dict[int, float | None]) -> None:
    for step, loss in losses.items():
        m = {} if loss is None else {"valid/loss": loss, "valid/acc": 1 - loss}
        save_checkpoint(ckpt_dir, step, {"model": {}, "metrics": m})


def test_latest_checkpoint_orders_numerically(tmp_path):
    assert latest_checkpoint(tmp_path / "none") is None
    _fake(tmp_path, {9: 1.0, 10: 1.0, 100: None})
    (tmp_path / "step_x.pt").write_text("")
    assert latest_checkpoint(tmp_path).name == "step_100.pt"


def test_keep_last_and_keep_best_pruning(tmp_path):
    _fake(tmp_path, {1: 0.9, 2: 0.3, 3: 0.5, 4: 0.2, 5: 0.8, 6: None, 7: 0.7})
    assert [p.name for p in best_checkpoints(tmp_path, "valid/loss", "min", 2)] == [
        "step_4.pt",
        "step_2.pt",
    ]
    assert [p.name for p in best_checkpoints(tmp_path, "valid/acc", "max", 1)] == ["step_4.pt"]
    removed = prune_checkpoints(tmp_path, keep_last=2, keep_best=2, metric="valid/loss", mode="min")
    assert sorted(p.name for p in removed) == ["step_1.pt", "step_3.pt", "step_5.pt"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4, 6, 7]
    assert set(p.name for p in checkpoint_metrics(tmp_path)) == {
        "step_2.pt",
        "step_4.pt",
        "step_6.pt",
        "step_7.pt",
    }
    assert prune_checkpoints(tmp_path, 0, 0, "valid/loss", "min") == []  # keep_last 0: keep all


def test_checkpoint_metrics_fall_back_to_the_file(tmp_path):
    _fake(tmp_path, {1: 0.4, 2: 0.1})
    (tmp_path / "metrics.json").unlink()
    assert best_checkpoints(tmp_path, "valid/loss", "min", 1)[0].name == "step_2.pt"


# --- averaging --------------------------------------------------------------------------------


def test_averaging_equals_the_manual_mean(tmp_path):
    states, losses = [], {1: 0.5, 2: 0.1, 3: 0.3, 4: 0.9}
    for step, loss in losses.items():
        torch.manual_seed(step)
        m = ToyModel()
        m.updates.fill_(step * 10)
        states.append(m.state_dict())
        save_checkpoint(
            tmp_path / "checkpoints",
            step,
            {"model": m.state_dict(), "metrics": {"valid/loss": loss}},
        )
    cfg = make_cfg(n_average=3, keep_best=3)
    paths = select_checkpoints(tmp_path / "checkpoints", cfg)
    assert [p.name for p in paths] == ["step_1.pt", "step_2.pt", "step_3.pt"]  # by step
    out = average_checkpoints(paths, tmp_path / "model_avg.pt")
    avg = torch.load(out)["model"]
    for k, v in avg.items():
        if k == "updates":
            assert v.dtype == torch.long and v.item() == 30  # the newest of the averaged
        else:
            torch.testing.assert_close(v, (states[0][k] + states[1][k] + states[2][k]) / 3)
    assert average_state_dicts(states[:1])["rnn.weight_ih_l0"].equal(states[0]["rnn.weight_ih_l0"])
    last = select_checkpoints(tmp_path / "checkpoints", make_cfg(n_average=2, average_by="last"))
    assert [p.name for p in last] == ["step_3.pt", "step_4.pt"]
    # experiment.load_model_weights reads {"model": ...}
    ToyModel().load_state_dict(avg)


# --- schedules ----------------------------------------------------------------------------------


def test_schedules():
    f = lr_lambda(TrainConfig(scheduler="inverse_sqrt", lr=2e-3, warmup_steps=100))
    assert f(50) == pytest.approx(1e-3) and f(100) == pytest.approx(2e-3)
    assert f(400) == pytest.approx(1e-3)
    g = lr_lambda(TrainConfig(scheduler="noam", lr=2e-3, warmup_steps=100))
    assert g(100) == pytest.approx(2e-3) and g(400) == pytest.approx(1e-3)
    h = lr_lambda(TrainConfig(scheduler="noam", lr=5.0, warmup_steps=100, model_dim=256))
    assert h(100) == pytest.approx(5.0 * 256**-0.5 * 100**-0.5)
    c = lr_lambda(TrainConfig(scheduler="cosine", lr=1.0, warmup_steps=10, min_lr=0.1), 110)
    assert c(10) == pytest.approx(1.0) and c(60) == pytest.approx(0.55) and c(110) == 0.1
    with pytest.raises(ValueError, match="cosine"):
        lr_lambda(TrainConfig(scheduler="cosine", warmup_steps=10), 5)


def test_cooldown_ends_any_schedule_with_a_linear_fall():
    cfg = TrainConfig(scheduler="inverse_sqrt", lr=2e-3, warmup_steps=100, cooldown=0.5)
    base, cooled = (
        lr_lambda(TrainConfig(scheduler="inverse_sqrt", lr=2e-3, warmup_steps=100)),
        lr_lambda(cfg, 800),
    )
    # untouched up to 400 (the last half of 800 steps cools), then linear to min_lr
    assert all(cooled(s) == base(s) for s in range(1, 401))
    rates = [cooled(s) for s in range(400, 801)]
    assert all(a > b > 0 for a, b in zip(rates, rates[1:], strict=False))
    assert cooled(600) == pytest.approx(base(400) * 201 / 401)
    assert cooled(800) == pytest.approx(base(400) / 401)  # the last step still learns
    assert cooled(801) == 0.0  # past the estimate: min_lr
    floor = lr_lambda(
        TrainConfig(scheduler="constant", lr=1.0, warmup_steps=0, cooldown=0.1, min_lr=0.2), 100
    )
    assert floor(90) == 1.0 and floor(101) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="cooldown"):
        lr_lambda(cfg, 50)
    with pytest.raises(ValueError, match="cooldown"):
        TrainConfig(cooldown=1.0)


# --- config -----------------------------------------------------------------------------------


def test_config_typo_and_bad_values_are_errors():
    schema = OmegaConf.structured(TrainConfig)
    with pytest.raises(Exception, match="lrr"):
        OmegaConf.merge(schema, {"lrr": 1.0})
    with pytest.raises(ValueError, match="scheduler"):
        TrainConfig(scheduler="linear")
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="n_average"):
        TrainConfig(n_average=5, keep_best=2)
    with pytest.raises(ValueError, match="best_metric"):
        TrainConfig(best_metric="loss")


def test_experiment_config_rejects_a_train_typo(tmp_path):
    from s2s.experiment import load_experiment_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  warmpu_steps: 10\n")
    with pytest.raises(ValueError, match="warmpu_steps"):
        load_experiment_config([bad])
    with pytest.raises(ValueError, match="train.optim"):
        load_experiment_config([], ["train.optim=sgd"])


@pytest.mark.parametrize("name", ["tiny_cpu", "small", "paper"])
def test_conf_train_files_validate(name):
    raw = OmegaConf.load(ROOT / "conf" / "train" / f"{name}.yaml")
    assert set(raw) == {"train"}
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), raw.train))
    assert isinstance(cfg, TrainConfig)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_print_config_and_average_only(tmp_path, capsys):
    from s2s.cli.train import main

    conf = str(ROOT / "conf" / "train" / "tiny_cpu.yaml")
    assert main(["--config", conf, "--print-config", "train.lr=0.5"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    warmup = OmegaConf.load(conf).train.warmup_steps  # from the file, lr from the override
    assert printed.train.lr == 0.5 and printed.train.warmup_steps == warmup != 10000
    assert main(["--config", conf, "train.lrr=1", "--print-config"]) == 2
    assert "lrr" in capsys.readouterr().err

    exp = tmp_path / "exp"
    for step, loss in {1: 0.5, 2: 0.2, 3: 0.4}.items():
        torch.manual_seed(step)
        save_checkpoint(
            exp / "checkpoints",
            step,
            {"model": ToyModel().state_dict(), "metrics": {"valid/loss": loss}},
        )
    args = ["--config", conf, "--exp-dir", str(exp), "--average-only", "train.n_average=2"]
    assert main(args) == 0
    assert torch.load(exp / "model_avg.pt")["averaged"] == ["step_2.pt", "step_3.pt"]


def test_cli_trains_resumes_and_averages_a_text_experiment(tmp_path):
    """s2s-train end to end on a tiny text-to-text experiment (real tokenizer, dataset,
    sampler and Seq2SeqModel): train 1 epoch, rerun to 2 (resumes), average, load."""
    from s2s.cli.train import main
    from s2s.experiment import (
        build_model,
        load_experiment_config,
        load_model_weights,
        load_tokenizer,
    )

    exp = tmp_path / "exp"
    args = [
        "--config", str(ROOT / "conf" / "model" / "tiny_text.yaml"),
        "--config", str(ROOT / "conf" / "train" / "tiny_cpu.yaml"),
        "--exp-dir", str(exp),
        *text_experiment(tmp_path, 60, 8, 300), "train.n_average=2",
    ]  # fmt: skip
    root = logging.getLogger("s2s")
    handlers = list(root.handlers)
    try:
        assert main([*args, "train.max_epochs=1"]) == 0
        one = [s for s, _ in list_checkpoints(exp / "checkpoints")]
        assert main([*args, "train.max_epochs=2"]) == 0
        assert "resumed from" in (exp / "logs" / "trainer.log").read_text()
        two = [s for s, _ in list_checkpoints(exp / "checkpoints")]
        assert len(one) == 1 and len(two) == 2 and two[1] == 2 * two[0]
        assert (
            main(["--config", str(exp / "config.yaml"), "--exp-dir", str(exp), "--average-only"])
            == 0
        )
    finally:
        for h in root.handlers[len(handlers) :]:
            root.removeHandler(h)
            h.close()
    assert OmegaConf.load(exp / "config.yaml").data.tokenizer == "tokenizer.model"
    cfg = load_experiment_config([exp / "config.yaml"])
    assert Path(cfg.data.tokenizer) == exp / "tokenizer.model"
    model = build_model(cfg, load_tokenizer(cfg.data.tokenizer).vocab_size)
    assert load_model_weights(model, exp) == exp / "model_avg.pt"


@pytest.mark.parametrize(
    "amp, dtype", [("none", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_amp_on_cpu_trains_with_finite_losses(tmp_path, amp, dtype):
    """Autocast ran: every training and validation forward's Linear computed in the amp dtype
    (float32 without amp, the negative control), while the weights stayed float32."""
    tr = make_trainer(tmp_path, make_cfg(max_epochs=2, amp=amp, accum_grad=1))
    computed = {True: set(), False: set()}  # training forward? -> the Linear's output dtypes
    tr.module.out.register_forward_hook(
        lambda m, i, out: computed[tr.module.training].add(out.dtype)
    )
    metrics = tr.fit()
    assert tr.step > 0 and math.isfinite(metrics["valid/loss"])
    assert computed == {True: {dtype}, False: {dtype}}
    assert all(p.dtype == torch.float32 for p in tr.module.parameters())  # master weights
    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["scaler"]
    assert bool(state) == (amp == "fp16")  # GradScaler state only when it is enabled


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_cuda_training_logs_gpu_memory(tmp_path, amp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg(device="cuda", max_epochs=2, amp=amp)
    tr = make_trainer(tmp_path, cfg)
    assert tr.device.type == "cuda"
    metrics = tr.fit()
    assert math.isfinite(metrics["valid/loss"])
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert acc.Scalars("train/gpu_mem_gib")[-1].value > 0
    resumed = make_trainer(tmp_path, make_cfg(device="cuda", max_epochs=3, amp=amp))
    assert resumed.fit() and resumed.step > tr.step
