"""Two-process data-parallel training on gloo (CPU), launched through torchrun.

Run as a script, this file is the torchrun worker: it trains the toy model of helpers.py
in a shared exp dir and writes what each rank saw to rank<r>.pt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import text_experiment

HERE = Path(__file__).resolve().parent
POISON = "utt005"  # one NaN utterance: only one rank sees it, both must skip together


def worker(exp: Path) -> None:
    sys.path.insert(0, str(HERE))
    from helpers import ToyDataset, ToyModel, make_cfg, make_loader

    import s2s.train.trainer as T
    from s2s.train import distributed as D

    info = D.env_info()
    assert info.world_size == 2
    D.init_distributed(torch.device("cpu"), info)
    saves = []
    real_save = T.save_checkpoint

    def recording_save(ckpt_dir, step, state):
        saves.append(step)
        return real_save(ckpt_dir, step, state)

    T.save_checkpoint = recording_save
    torch.manual_seed(info.rank)  # different inits: DDP must broadcast rank 0's
    model = ToyModel()
    cfg = make_cfg(max_epochs=2, accum_grad=2)
    train = ToyDataset(24, poison=frozenset({POISON}))
    tr = T.Trainer(
        model,
        cfg,
        exp,
        make_loader(train, shuffle=True, rank=info.rank, world=2),
        make_loader(ToyDataset(8, seed=1), shuffle=False, rank=info.rank, world=2),
        device="cpu",
        dist_info=info,
    )
    metrics = tr.fit()
    torch.save(
        {
            "model": tr.module.state_dict(),
            "saves": saves,
            "step": tr.step,
            "bad": tr.bad_total,
            "metrics": metrics,
            "utts": sorted(u for b in tr.train_loader for u in b.utt_ids),
        },
        exp / f"rank{info.rank}.pt",
    )
    D.cleanup()


def test_two_ranks_on_gloo_end_identical_and_only_rank0_saves(tmp_path):
    exp = tmp_path / "exp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(Path(__file__).resolve()), str(exp)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(exp / "rank0.pt", weights_only=False)
    r1 = torch.load(exp / "rank1.pt", weights_only=False)
    for k, v in r0["model"].items():
        torch.testing.assert_close(v, r1["model"][k], rtol=0, atol=0, msg=k)
    assert r0["step"] == r1["step"] > 0
    assert r0["bad"] == r1["bad"] == 2  # the poisoned batch, once per epoch, skipped on both
    assert (POISON in r0["utts"]) != (POISON in r1["utts"])
    assert r0["metrics"] == r1["metrics"] and "valid/loss" in r0["metrics"]
    assert r0["saves"] and r1["saves"] == []
    ckpts = sorted(p.name for p in (exp / "checkpoints").glob("*.pt"))
    assert set(ckpts) == {f"step_{s}.pt" for s in r0["saves"]}  # keep_last 0: none pruned
    last = torch.load(exp / "checkpoints" / f"step_{r0['step']}.pt", weights_only=False)
    for k, v in last["model"].items():
        torch.testing.assert_close(v, r0["model"][k], rtol=0, atol=0)
    assert len(last["rng"]) == 2 and last["world_size"] == 2
    index = json.loads((exp / "checkpoints" / "metrics.json").read_text())
    assert set(index) == set(ckpts)


@pytest.mark.parametrize("attention, arrangement", [("mtla", "prefix"), ("mha", "cross")])
def test_s2s_train_under_torchrun_with_the_real_model(
    tmp_path: Path, attention: str, arrangement: str
) -> None:
    """s2s-train itself under torchrun (2 gloo processes): trains, validates, writes one set of
    checkpoints from rank 0, and averages."""
    conf = HERE.parent / "conf"
    overrides = text_experiment(tmp_path, 40, 6, 200) + [
        "train.max_epochs=2",
        "train.n_average=2",
        f"model.decoder.attention.type={attention}",
        f"model.decoder.arrangement={arrangement}",
    ]
    exp = tmp_path / "exp"
    args = [
        "-m",
        "s2s.cli.train",
        "--config",
        str(conf / "model" / "tiny_text.yaml"),
        "--config",
        str(conf / "train" / "tiny_cpu.yaml"),
        "--exp-dir",
        str(exp),
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*torchrun, *args], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpts = sorted((exp / "checkpoints").glob("step_*.pt"))
    assert len(ckpts) == 2  # one per epoch, from rank 0 only
    last = torch.load(ckpts[-1], weights_only=False)
    assert last["world_size"] == 2 and "valid/loss" in last["metrics"]
    assert any((exp / "tensorboard").rglob("events.out.tfevents.*"))
    avg = subprocess.run(
        [
            sys.executable,
            "-m",
            "s2s.cli.train",
            "--config",
            str(exp / "config.yaml"),
            "--exp-dir",
            str(exp),
            "--average-only",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert avg.returncode == 0, avg.stderr[-2000:]
    assert (exp / "model_avg.pt").is_file()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
