"""Scale benchmark: a corpus N times the embedded one, through stages 3-6 and the start of
training, on this machine.

    python -m s2s.bench.scale --copies N [--source recipes/phrases/st1] [--work DIR]
        [--nj 2] [--workers 0 1 2] [--kill-dump] [--json out.json]

The source recipe's data dirs (stage 1 run there) are referenced N times by a generated
training data dir (ids and speakers prefixed c<k>-, the same audio files: N=100 gives 300,000
utterances, ~250 hours, without synthesising more speech); dev and test are the source's. A
recipe dir under --work (the source's recipe.yaml, no speed perturbation, no LM) is taken
through stage 3 (features), 4 (filtering), 5 (tokenizer), 6 (CMVN), each stage its own
process, then `s2s-train` (stage 7) for a few steps. Reported per stage: wall time,
throughput (utterances/s and x real time), peak RSS of the stage's largest process, disk
written. For training: the time from `s2s-train`'s start to its first batch, the dataset's
start-up and the loader's frames/s with each --workers count (its own process: peak RSS),
and the frames/s the trainer's step consumes with the recipe's model (tiny) and the paper's.

--kill-dump kills stage 3 half way through the training set (SIGKILL, the whole process
group) and runs it again: the rerun must redo only the unfinished shards, and since every
copy is the same audio, every copy's features must equal copy 0's, byte for byte.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# s2s.data.features.SHARD_UTTS (not imported: that module imports torch, which this driver
# must not: see run_measured; tests/test_scale_bench.py keeps the two equal)
SHARD_UTTS = 10_000
TRAIN_STEPS = 30  # s2s-train's steps in the training part (first batch, then the steady step)


# --- the corpus --------------------------------------------------------------------------------


def copy_datadir(src: Path, dst: Path, copies: int) -> int:
    """Writes dst: every utterance of src `copies` times, ids, speakers and recordings prefixed
    c<k>- (the order stays sorted). Streams line by line: memory does not grow with copies.
    Returns the utterance count."""
    dst.mkdir(parents=True, exist_ok=True)
    width = len(str(copies - 1))
    n = 0
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        lines = f.read_text(encoding="utf-8").splitlines()
        with open(dst / f.name, "w", encoding="utf-8") as out:
            for k in range(copies):
                pre = f"c{k:0{width}d}-"
                for line in lines:
                    if f.name == "spk2utt":  # speaker and every utterance
                        out.write(" ".join(pre + t for t in line.split()) + "\n")
                    elif f.name == "segments":  # utterance and recording
                        utt, rec, rest = line.split(maxsplit=2)
                        out.write(f"{pre}{utt} {pre}{rec} {rest}\n")
                    elif f.name == "utt2spk":
                        utt, spk = line.split(maxsplit=1)
                        out.write(f"{pre}{utt} {pre}{spk}\n")
                    else:
                        out.write(pre + line + "\n")
        if f.name == "utt2spk":
            n = copies * len(lines)
    return n


def make_work_recipe(source: Path, work: Path, copies: int) -> dict:
    """work/conf/recipe.yaml (the source's, its config paths made absolute, no speed
    perturbation, no LM) and work/data/{train,dev,test}. Returns the recipe config."""
    cfg = yaml.safe_load((source / "conf" / "recipe.yaml").read_text())
    for key in ("model_config", "train_config", "decode_config"):
        cfg[key] = str((source / cfg[key]).resolve())
    cfg["speed_perturb"] = []
    cfg.pop("lm_config", None)
    (work / "conf").mkdir(parents=True, exist_ok=True)
    (work / "conf" / "recipe.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    data = source / "data"
    sets = [cfg.get("train_set", "train"), cfg.get("valid_set", "dev"), *cfg.get("test_sets", [])]
    for name in sets:
        if not (data / name / "wav.scp").is_file():
            raise SystemExit(
                f"{data / name}: no data dir; run the source recipe's stage 1 first "
                f"(cd {source} && ./run.sh --stop_stage 1)"
            )
    # the stages' outputs of an earlier run go first: each stage's disk figure is what it wrote
    for old in [work / "dump", work / "exp", work / "data" / "token", *work.glob("data/*_filt")]:
        shutil.rmtree(old, ignore_errors=True)
    stamp = work / "data" / ".copies"
    if not (stamp.is_file() and stamp.read_text() == str(copies)):
        copy_datadir(data / sets[0], work / "data" / sets[0], copies)
        for name in sets[1:]:
            copy_datadir(data / name, work / "data" / name, 1)
        stamp.write_text(str(copies))
    return cfg


# --- measuring a process -----------------------------------------------------------------------


def disk_bytes(path: Path) -> int:
    """Bytes of the files under path (allocated blocks: what the disk gave)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):  # removed while we walk
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def run_measured(cmd: list[str], log: Path, kill_when=None) -> dict:
    """Runs cmd (its own process group), output to log. Returns wall seconds, the peak RSS of
    its largest process (MiB, from wait4: the process and its waited-for descendants) and its
    exit code. kill_when(): polled every second; True kills the whole group (SIGKILL).
    Linux carries the caller's own peak into the child's across exec, so the caller's peak is
    every child's floor: this module's driver imports no torch (about 20 MB)."""
    t = time.perf_counter()
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while kill_when is not None and p.poll() is None:
            if kill_when():
                os.killpg(p.pid, signal.SIGKILL)
                break
            time.sleep(1.0)
        _, status, usage = os.wait4(p.pid, 0)
    return {
        "wall_s": time.perf_counter() - t,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "rc": os.waitstatus_to_exitcode(status),
    }


def recipe_cmd(work: Path, stage: int, nj: int, extra: list[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "s2s.cli.recipe",
        "--recipe-dir",
        str(work),
        "--stage",
        str(stage),
        "--stop_stage",
        str(stage),
        "--nj",
        str(nj),
        "--use_lm",
        "false",
        *extra,
    ]


# --- the parts run in their own process (--part) -----------------------------------------------


def part_loader(exp: Path, workers: int, seconds: float) -> dict:
    """The training dataset's start-up and the loader's frames/s with `workers` workers."""
    from s2s import experiment as X

    t = time.perf_counter()
    cfg = X.load_experiment_config([exp / "config.yaml"], [f"data.num_workers={workers}"])
    tokenizer = X.load_tokenizer(cfg.data.tokenizer)
    dataset = X.build_dataset(cfg, "train", tokenizer, train=True)
    loader = X.build_loader(cfg, dataset, shuffle=True)
    loader.batch_sampler.set_epoch(0)
    startup = time.perf_counter() - t
    t = time.perf_counter()
    frames = batches = 0
    first = None
    for batch in loader:
        if first is None:
            first = time.perf_counter() - t
            t = time.perf_counter()  # the steady rate: workers started, first batch out
            continue
        frames += int(batch.src_lens.sum())
        batches += 1
        if time.perf_counter() - t > seconds:
            break
    elapsed = time.perf_counter() - t
    return {
        "workers": workers,
        "dataset_startup_s": startup,
        "first_batch_s": first,
        "frames_per_s": frames / elapsed,
        "batches": batches,
        "utterances": len(dataset),
    }


def part_step(exp: Path, size: str, batches: int) -> dict:
    """Frames/s the trainer's step consumes on real batches with the experiment's model
    ("tiny") or the paper's model ("paper": conf/model/paper.yaml, the same decoder
    attention), the experiment's training settings otherwise."""
    import tempfile

    import torch
    from omegaconf import OmegaConf

    from s2s import experiment as X
    from s2s.train.speed import resolve_amp
    from s2s.train.trainer import Trainer

    base = OmegaConf.load(exp / "config.yaml")
    if size == "paper":
        paper = OmegaConf.load(REPO / "conf" / "model" / "paper.yaml")
        att = base.model.decoder.attention
        base.model.encoder = paper.model.encoder
        base.model.decoder = OmegaConf.merge(paper.model.decoder, {"attention": att})
    # beside the experiment's config.yaml: its tokenizer and CMVN paths are relative to it
    cfg_path = exp / f"config.scale_{size}.yaml"
    OmegaConf.save(base, cfg_path)
    cfg = X.load_experiment_config([cfg_path], ["train.device=cpu", "data.num_workers=0"])
    tokenizer = X.load_tokenizer(cfg.data.tokenizer)
    dataset = X.build_dataset(cfg, "train", tokenizer, train=True)
    amp = resolve_amp(cfg.train.amp, torch.device("cpu"))
    loader = X.build_loader(cfg, dataset, shuffle=True, amp=amp)
    loader.batch_sampler.set_epoch(0)
    data = []
    for batch in loader:
        data.append(batch)
        if len(data) == batches + 1:
            break
    torch.manual_seed(0)
    model = X.build_model(cfg, tokenizer.vocab_size)
    tmp = tempfile.TemporaryDirectory(prefix="s2s-scale-")
    trainer = Trainer(model, cfg.train, tmp.name, loader, device="cpu")
    trainer.train_step(data[0])  # warm-up: kernels built
    times, frames = [], 0
    for batch in data[1:]:
        t = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - t)
        frames += int(batch.src_lens.sum())
    return {
        "size": size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s": statistics.median(times),
        "frames_per_s": frames / sum(times),
        "batches": len(times),
    }


# --- the driver ------------------------------------------------------------------------------


def stage_rows(args: argparse.Namespace, work: Path, logs: Path, cfg: dict) -> list[dict]:
    """Stages 3-6, each its own process, with wall time, throughput, peak RSS, disk written."""
    train = cfg.get("train_set", "train")
    n_train = count_lines(work / "data" / train / "wav.scp")
    rows = []
    for stage, name in ((3, "features"), (4, "filtering"), (5, "tokenizer"), (6, "cmvn")):
        before = disk_bytes(work)
        kill_when, killed = None, None
        if stage == 3 and args.kill_dump:
            dump = work / "dump" / train

            def kill_when(dump: Path = dump) -> bool:  # half the training set's shards done
                done = len(list(dump.glob("feats.*.done"))) if dump.is_dir() else 0
                return done >= max(1, -(-n_train // SHARD_UTTS) // 2)

            killed = run_measured(
                recipe_cmd(work, 3, args.nj), logs / "stage3.killed.log", kill_when
            )
            killed["shards_kept"] = len(list(dump.glob("feats.*.done")))
        r = run_measured(recipe_cmd(work, stage, args.nj), logs / f"stage{stage}.log")
        if r["rc"] != 0:
            raise SystemExit(f"stage {stage} failed: see {logs / f'stage{stage}.log'}")
        r |= {"stage": stage, "name": name, "disk_mib": (disk_bytes(work) - before) / 2**20}
        if killed is not None:
            # the stage's figures are for the whole work: the killed run's and the rerun's
            r["killed_run"] = killed
            r["rerun_wall_s"] = r["wall_s"]
            r["wall_s"] += killed["wall_s"]
            r["peak_rss_mib"] = max(r["peak_rss_mib"], killed["peak_rss_mib"])
            log_text = (logs / "stage3.log").read_text()
            m = re.search(
                r"(\d+) of (\d+) shards \((\d+) utterances\) finished by an earlier", log_text
            )
            r["rerun_kept_shards"] = int(m.group(1)) if m else 0
            # in a process of its own: reading the dump would grow this one's RSS, which
            # every later child would report as its own peak (Linux keeps it across exec)
            same = part(work / "dump" / train, logs, "identical", str(args.copies))
            r["copies_identical"] = same["identical"]
        rows.append(r)
    audio_s = corpus_seconds(work / "dump" / train)
    n_all = sum(count_lines(work / "data" / s / "wav.scp") for s in [train, *other_sets(cfg)])
    for r in rows:
        n = n_all if r["stage"] in (3, 4) else n_train
        r["utts"] = n
        r["utts_per_s"] = n / r["wall_s"]
        r["x_real_time"] = audio_s / r["wall_s"] if r["stage"] in (3, 6) else None
    return rows


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def other_sets(cfg: dict) -> list[str]:
    return [cfg.get("valid_set", "dev"), *cfg.get("test_sets", [])]


def corpus_seconds(dump: Path) -> float:
    """Seconds of audio in a dump, from its frame count (10 ms frames)."""
    return json.loads((dump / "feats.json").read_text())["num_frames"] / 100.0


def copies_identical(dump: Path, copies: int) -> bool:
    """Whether every copy's features equal copy 0's (the same audio), byte for byte."""
    from s2s.data.features import FeatureReader

    reader = FeatureReader(dump)
    width = len(str(copies - 1))
    first = f"c{0:0{width}d}-"
    for utt in reader:
        if not utt.startswith(first):
            continue
        ref = reader.array(utt).tobytes()
        for k in range(1, copies):
            if reader.array(f"c{k:0{width}d}-" + utt[len(first) :]).tobytes() != ref:
                return False
    return True


def training_rows(args: argparse.Namespace, work: Path, logs: Path) -> dict:
    """s2s-train (stage 7) for TRAIN_STEPS steps: its first batch; then the loader and the step
    in processes of their own."""
    extra = [f"train.max_steps={TRAIN_STEPS}", "train.log_every_steps=10", "--tag", "scale"]
    r = run_measured(recipe_cmd(work, 7, 1, extra), logs / "stage7.log")
    exp = next((work / "exp").glob("*_scale"))
    text = (exp / "logs" / "trainer.log").read_text()
    m = re.search(r"first batch ([0-9.]+) s after the process started", text)
    out = {
        "train_wall_s": r["wall_s"],
        "train_peak_rss_mib": r["peak_rss_mib"],
        "first_batch_s": float(m.group(1)) if m else None,
        "data_wait": [float(x) for x in re.findall(r"data_wait[=: ]+([0-9.]+)", text)],
        "loader": [],
        "step": [],
    }
    for w in args.workers:
        out["loader"].append(part(exp, logs, "loader", str(w)))
    for size in ("tiny", "paper"):
        out["step"].append(part(exp, logs, "step", size))
    return out


def part(exp: Path, logs: Path, name: str, arg: str) -> dict:
    cmd = [sys.executable, "-m", "s2s.bench.scale", "--part", name, arg, "--exp", str(exp)]
    out = logs / f"{name}_{arg}.json"
    r = run_measured([*cmd, "--json", str(out)], logs / f"{name}_{arg}.log")
    if r["rc"] != 0:
        raise SystemExit(f"{name} {arg} failed: see {logs / f'{name}_{arg}.log'}")
    return json.loads(out.read_text()) | {"peak_rss_mib": r["peak_rss_mib"]}


def print_report(res: dict) -> None:
    print(
        f"# copies={res['copies']}: {res['train_utts']} training utterances, "
        f"{res['train_hours']:.1f} h; nj={res['nj']}; {res['cpu']}"
    )
    print("| stage | wall s | utt/s | x real time | peak RSS MiB | disk MiB |")
    print("|---|---|---|---|---|---|")
    for r in res["stages"]:
        xrt = "" if r["x_real_time"] is None else f"{r['x_real_time']:.0f}"
        print(
            f"| {r['stage']} {r['name']} | {r['wall_s']:.1f} | {r['utts_per_s']:.0f} | {xrt} | "
            f"{r['peak_rss_mib']:.0f} | {r['disk_mib']:.0f} |"
        )
    t = res["training"]
    print(
        f"training: first batch {t['first_batch_s']} s after s2s-train started; peak RSS "
        f"{t['train_peak_rss_mib']:.0f} MiB; data_wait {t['data_wait']}"
    )
    for r in t["loader"]:
        print(
            f"loader, {r['workers']} workers: dataset start-up {r['dataset_startup_s']:.1f} s, "
            f"first batch {r['first_batch_s']:.2f} s, {r['frames_per_s']:.0f} frames/s, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    for r in t["step"]:
        print(
            f"step, {r['size']} model ({r['params_m']:.1f} M): {r['step_s'] * 1e3:.0f} ms, "
            f"consumes {r['frames_per_s']:.0f} frames/s"
        )
    killed = next((r for r in res["stages"] if "killed_run" in r), None)
    if killed:
        print(
            f"dump killed after {killed['killed_run']['wall_s']:.0f} s with "
            f"{killed['killed_run']['shards_kept']} shards finished; the rerun kept "
            f"{killed['rerun_kept_shards']} and took {killed['rerun_wall_s']:.0f} s (the "
            f"stage's row is both runs); every copy's features equal copy 0's: "
            f"{killed['copies_identical']}"
        )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} CPUs"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--source", type=Path, default=REPO / "recipes" / "phrases" / "st1")
    p.add_argument("--work", type=Path, default=None, help="default: scale/copies<N>")
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--loader-seconds", type=float, default=20.0)
    p.add_argument("--step-batches", type=int, default=5)
    p.add_argument("--kill-dump", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--part", nargs=2, metavar=("NAME", "ARG"), help=argparse.SUPPRESS)
    p.add_argument("--exp", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.part:  # one measured part in this process
        name, arg = args.part
        if name == "identical":
            res = {"identical": copies_identical(args.exp, int(arg))}
        elif name == "loader":
            res = part_loader(args.exp, int(arg), args.loader_seconds)
        else:
            res = part_step(args.exp, arg, args.step_batches)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        return 0

    if args.copies < 1:
        p.error("--copies must be >= 1")
    work = (args.work or Path("scale") / f"copies{args.copies}").resolve()
    logs = work / "bench_logs"
    logs.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    cfg = make_work_recipe(args.source.resolve(), work, args.copies)
    make_s = time.perf_counter() - t
    stages = stage_rows(args, work, logs, cfg)
    train = cfg.get("train_set", "train")
    res = {
        "copies": args.copies,
        "nj": args.nj,
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "make_datadir_s": make_s,
        "train_utts": count_lines(work / "data" / train / "wav.scp"),
        "train_hours": corpus_seconds(work / "dump" / train) / 3600,
        "stages": stages,
        "training": training_rows(args, work, logs),
    }
    print_report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
