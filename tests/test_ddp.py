"""Two-process data-parallel training on gloo (CPU), launched through torchrun.

Run as a script, this file is the torchrun worker: it trains the toy model of helpers.py
in a shared exp dir and writes what each rank saw to rank<r>.pt.
"""

from __future__ import annotations

import faulthandler
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
LAUNCH_TIMEOUT = 240  # s, a whole torchrun run of launch (restarts included)
STACKS_AFTER = 150  # s: a worker still alive by then prints every thread's stack to stderr


def worker(exp: Path, options: dict) -> None:
    """options: "cfg" (make_cfg overrides), "kill_at" (rank 1 dies right after that update,
    in the first attempt only: torchrun's restart must resume it), "stale" (in the restarted
    attempt rank 1 sees the oldest checkpoint as the latest, as a lagging shared file system
    might show it)."""
    # a worker runs for seconds: one still alive long after has hung; its stacks (and where
    # the other worker is, when it hangs too) land in the output launch shows on a timeout
    faulthandler.dump_traceback_later(STACKS_AFTER, exit=False)
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
    kill_at = options.get("kill_at")
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if kill_at and first_attempt and info.rank == 1:
        after_step = T.Trainer._after_step

        def dying(self):
            stop = after_step(self)
            if self.step == kill_at:
                os._exit(3)  # a worker lost mid-run, no checkpoint of its own, no goodbye
            return stop

        T.Trainer._after_step = dying
    if options.get("stale") and not first_attempt and info.rank == 1:
        from s2s.experiment.checkpoints import list_checkpoints

        T.latest_checkpoint = lambda ckpt_dir: list_checkpoints(ckpt_dir)[0][1]
    torch.manual_seed(info.rank)  # different inits: DDP must broadcast rank 0's
    model = ToyModel()
    cfg = make_cfg(**{"max_epochs": 2, "accum_grad": 2, **options.get("cfg", {})})
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
            "attempt": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        },
        exp / f"rank{info.rank}.pt",
    )
    D.cleanup(meet_first=True)


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


def launch(exp: Path, flags: list[str], options: dict | None = None, wait: bool = True):
    """torchrun FLAGS this file EXP OPTIONS: the finished process (wait) or the running one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", *flags, str(Path(__file__).resolve())]
    cmd += [str(exp), json.dumps(options or {})]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
    popen = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        out, err = popen.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM, not subprocess.run's SIGKILL: torchrun then stops its workers (SIGKILL after
        # 30 s) instead of leaving them, in sessions of their own, waiting on a peer for the
        # gloo timeout (30 min); and the output, with the hung workers' stacks, is shown
        popen.terminate()
        try:
            out, err = popen.communicate(timeout=60)
        except subprocess.TimeoutExpired as e:
            popen.kill()
            out, err = (x.decode(errors="replace") if isinstance(x, bytes) else x or ""
                        for x in (e.stdout, e.stderr))  # fmt: skip
        pytest.fail(f"torchrun still running after {LAUNCH_TIMEOUT} s\n{out[-3000:]}{err[-12000:]}")
    proc = subprocess.CompletedProcess(cmd, popen.returncode, out, err)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EVERY_STEP = {"cfg": {"checkpoint_every_steps": 1, "max_epochs": 5}}  # one update an epoch


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> dict:
    """The reference: one node, two processes, a checkpoint after every update (5 of them)."""
    exp = tmp_path_factory.mktemp("one_node") / "exp"
    launch(exp, ["--standalone", "--nproc_per_node=2"], EVERY_STEP)
    return torch.load(exp / "rank0.pt", weights_only=False)


def assert_same_model(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] > 0
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], rtol=0, atol=0, msg=k)


def test_two_nodes_of_one_process_train_as_one_node_of_two(one_node, tmp_path) -> None:
    """Two torchrun agents on this machine as two "nodes" (c10d rendezvous on localhost, one
    process each), as run.sh --num_nodes 2 --rdzv_endpoint launches them: the same weights,
    to the bit, as one node with two processes."""
    from s2s.recipe.stages import RunOptions, torchrun_args

    exp = tmp_path / "exp"
    opts = RunOptions(num_nodes=2, rdzv_endpoint=f"localhost:{free_port()}")
    flags = torchrun_args(opts, "two_nodes")
    nodes = [launch(exp, flags, EVERY_STEP, wait=False) for _ in range(2)]
    outs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outs)
    ranks = [torch.load(exp / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert_same_model(ranks[0], ranks[1])
    assert_same_model(ranks[0], one_node)


def test_a_worker_killed_mid_run_is_restarted_and_resumes(one_node, tmp_path) -> None:
    """Rank 1 dies after update 3; torchrun (--max_restarts 1, from run.sh's --max_restarts)
    restarts both workers, the trainer resumes from the last checkpoint, and the run ends with
    the reference's weights and step count: no update lost or applied twice."""
    from s2s.recipe.stages import RunOptions, torchrun_args

    exp = tmp_path / "exp"
    flags = torchrun_args(RunOptions(max_restarts=1), "restart")
    assert flags == ["--standalone", "--nproc_per_node=1", "--max_restarts=1"]
    flags[1] = "--nproc_per_node=2"  # two processes, as --ngpu 2 would give
    proc = launch(exp, flags, {**EVERY_STEP, "kill_at": 3})
    r0 = torch.load(exp / "rank0.pt", weights_only=False)
    assert r0["attempt"] == 1, proc.stderr[-3000:]  # the second attempt finished the run
    # it resumed: its first checkpoint is past step 1 (one of 2-4: rank 0 saves update 3
    # unless torchrun stops it first), and it wrote every later one
    assert 1 < r0["saves"][0] <= 4 and r0["saves"][:-1] == list(range(r0["saves"][0], 6))
    assert_same_model(r0, one_node)


def test_a_restarted_rank_that_sees_an_older_checkpoint_resumes_from_rank_0s(
    one_node, tmp_path
) -> None:
    """As above, but after the restart rank 1 lists the oldest checkpoint as the latest: every
    rank loads rank 0's choice, so the run still ends with the reference's weights (a rank on
    another step would wait in collectives the others never reach)."""
    from s2s.recipe.stages import RunOptions, torchrun_args

    exp = tmp_path / "exp"
    flags = torchrun_args(RunOptions(max_restarts=1), "stale")
    flags[1] = "--nproc_per_node=2"
    proc = launch(exp, flags, {**EVERY_STEP, "kill_at": 3, "stale": True})
    r0 = torch.load(exp / "rank0.pt", weights_only=False)
    assert r0["attempt"] == 1, proc.stderr[-3000:]
    assert r0["saves"][0] > 2  # resumed past the oldest checkpoint (step 1)
    assert_same_model(r0, one_node)


def test_torchrun_flags_from_the_recipe_options() -> None:
    from s2s.recipe.stages import RunOptions, torchrun_args

    assert torchrun_args(RunOptions(), "x") == []
    assert torchrun_args(RunOptions(ngpu=4), "x") == ["--standalone", "--nproc_per_node=4"]
    static = RunOptions(ngpu=8, num_nodes=2, node_rank=1, master_addr="n0", master_port=2950)
    assert torchrun_args(static, "x") == [
        "--nproc_per_node=8", "--nnodes=2", "--node_rank=1", "--master_addr=n0",
        "--master_port=2950",
    ]  # fmt: skip
    rdzv = RunOptions(num_nodes=3, rdzv_endpoint="n0:29400", max_restarts=2)
    assert torchrun_args(rdzv, "mustc") == [
        "--nproc_per_node=1", "--nnodes=3", "--rdzv_backend=c10d", "--rdzv_endpoint=n0:29400",
        "--rdzv_id=mustc", "--max_restarts=2",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="needs --master_addr"):
        RunOptions(num_nodes=2)
    with pytest.raises(ValueError, match="0 <= node_rank < num_nodes"):
        RunOptions(num_nodes=2, node_rank=2, master_addr="n0")


def test_run_sh_refuses_bad_node_flags(tmp_path, capsys) -> None:
    from helpers import copy_recipe

    from s2s.cli.recipe import main as recipe_main

    root = copy_recipe(tmp_path, "phrases/st1", {})
    assert recipe_main(["--recipe-dir", str(root), "--num_nodes", "2"]) == 2
    assert "--num_nodes > 1 needs --master_addr" in capsys.readouterr().err


if __name__ == "__main__":
    worker(Path(sys.argv[1]), json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
