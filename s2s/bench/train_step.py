"""Training-step benchmark: how fast the trainer's own step (s2s.train.trainer.Trainer.train_step:
forward, loss, backward, clipping, the optimiser) runs, and how close it gets to the machine.

Real batches (an experiment's step, one row per optimisation, all in one run):

    python -m s2s.bench.train_step --exp recipes/phrases/st1/exp/tiny_mtla_s2_cross_demo
        [--batches 40] [--rounds 3] [--rows eager-fp32 fused buckets compile bf16 bf16-compile]
        [--threads N] [--json out.json]

(the demo's experiment dir is written by `./run.sh --stage 1 --stop_stage 6` and the start of
stage 7 for `--attention mtla --tag demo` in recipes/phrases/st1.)

takes the experiment's config.yaml (model, data settings with SpecAugment, training settings)
and its training set. Each row is that config with a few settings changed (ROWS); every row
trains a model of its own from the same seed on the first --batches batches of epoch 0, the
same utterances for every row (length buckets pad them further, so rows are compared by
throughput: real, unpadded, frames per second; speed-up is over the first row, and over
eager-fp32 too where that row is not the first). A warm-up pass over the batches (compile time
included, reported) comes first; then --rounds rounds, every row in turn in each, so a drift
of the machine's speed reaches every row alike; figures are medians over rounds. FLOPs per
step are counted with torch's FlopCounterMode (attention included), and the same run measures
the machine's float32 (and bfloat16) matmul rate, 2048 x 2048 x 2048, as the yardstick:
GFLOP/s and its share of that rate (float32 as torch computes it, MKL's, and as oneDNN does:
MKL runs its AVX2 code on AMD CPUs, half of what an AVX-512 one does). On a CPU that does not
compute bfloat16 natively (no AMX, no AVX512-BF16: where `train.amp=auto` trains in float32)
the bfloat16 yardstick and the default bf16 rows are left out: bfloat16 is emulated there (a
2048^3 product took about a minute on a Zen 3 EPYC, 0.29 GFLOP/s against 124-156 in float32);
named in --rows, they run.

The row `filed` is the phrases demo's step as issue 32 measured it (commit 6853428): eager-fp32
with the 4x frontend and Adam without weight decay, as the recipe then trained (today's code,
so every speed-up since that is not a setting is in it too: the ratio understates the gain).
Put it first for the ratios against it (a speech experiment only: it sets the frontend):

    python -m s2s.bench.train_step --exp ... --rows filed eager-fp32 fused channels-last \
        buckets compile bf16 bf16-compile

Random batches (every decoder variant at the paper's size; the GPU check's part 4):

    python -m s2s.bench.train_step [--size paper|tiny] [--batch 8] [--frames 1200]
        [--tokens 60] [--device cuda] [--amp] [--compile] [--variants mha mla mtla:2 ...]

The figure the paper's claim rests on is the ratio to MHA measured in the same run (MTLA's
hyper-network and stride-aware mask must not make training much slower). Times are medians
(CUDA events on GPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from s2s.bench.attention import DEFAULT_VARIANTS, median_time
from s2s.data.dataset import Batch
from s2s.experiment import build_model, load_experiment_config
from s2s.train.speed import autocast, cpu_has_native_bf16, resolve_amp

REPO = Path(__file__).resolve().parents[2]
SIZES = {  # model YAML and the overrides that make it small (tests, CPU smoke runs)
    "paper": [],
    "tiny": [
        "model.encoder.d_model=64",
        "model.encoder.n_layers=2",
        "model.encoder.n_heads=4",
        "model.encoder.ffn_dim=128",
        "model.decoder.d_model=64",
        "model.decoder.n_layers=2",
        "model.decoder.n_heads=4",
        "model.decoder.ffn_dim=128",
    ],
}
VOCAB = 8000  # the paper's SentencePiece unigram size

# Real-batch rows: settings over the experiment's own. "eager-fp32" is the step as it ran before
# any of these options existed (float32, the parameter-at-a-time Adam, NCHW convolutions,
# batches padded to their longest item, no compile); each later row adds one thing. "filed" is
# the demo's step when issue 32 measured it (6853428): the recipe then subsampled 4x and
# trained with Adam without weight decay (the 6x frontend and AdamW came with BENCHMARKS §31-32).
_FUSED = ["train.amp=none", "train.optim_impl=fused", "train.compile=false"]
_NO_BUCKETS = ["data.bucket_frames=0", "data.bucket_tokens=0"]
_BUCKETS = ["data.bucket_frames=64", "data.bucket_tokens=8", "data.bucket_when=always"]
_FAST = [*_FUSED, "train.channels_last=true", *_BUCKETS]  # every option but compile, fp32
_EAGER = [*_FUSED, "train.optim_impl=for_loop", "train.channels_last=false", *_NO_BUCKETS]
_FILED = ["model.encoder.subsampling=conv2d4", "train.optim=adam", "train.weight_decay=0.0"]
ROWS: dict[str, list[str]] = {
    "filed": [*_EAGER, *_FILED],
    "eager-fp32": _EAGER,
    "fused": [*_FUSED, "train.channels_last=false", *_NO_BUCKETS],
    "channels-last": [*_FUSED, "train.channels_last=true", *_NO_BUCKETS],
    "buckets": _FAST,
    "compile": [*_FAST, "train.compile=true"],
    "bf16": [*_FAST, "train.amp=bf16"],
    "bf16-compile": [*_FAST, "train.amp=bf16", "train.compile=true"],
    "bf16-no-buckets": [*_FUSED, "train.channels_last=true", *_NO_BUCKETS, "train.amp=bf16"],
}
DEFAULT_ROWS = [
    "eager-fp32",
    "fused",
    "channels-last",
    "buckets",
    "compile",
    "bf16",
    "bf16-compile",
]


def default_rows(native_bf16: bool) -> list[str]:
    """DEFAULT_ROWS, less those that train in bf16 where the CPU has no native bfloat16."""
    return [r for r in DEFAULT_ROWS if native_bf16 or "train.amp=bf16" not in ROWS[r]]


# --- FLOPs and the yardstick ----------------------------------------------------------------


def flop_counter():
    """torch's FlopCounterMode, with PyTorch's CPU flash attention (forward and backward)
    counted as its other attention kernels are (torch 2.11 leaves the CPU ones out)."""
    from torch.utils import flop_counter as fc

    def forward(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """The machine's dense matmul rate now, as torch computes it (what a Linear calls): an
    n x n x n product, median of `repeats`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return _rate(lambda: a @ b, n, repeats)


def onednn_fp32_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The same float32 product computed by oneDNN (`mkldnn._linear_pointwise`). torch's float32
    matmul is MKL's, which runs its AVX2 code on AMD CPUs: on an AVX-512 one oneDNN's is about
    2x faster (BENCHMARKS.md §38), so a share of torch's rate overstates how close a step
    comes to the machine there."""
    a, w = torch.randn(n, n), torch.randn(n, n)
    return _rate(lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""), n, repeats)


def _rate(product, n: int, repeats: int) -> float:
    product()  # warm-up: oneDNN/MKL build their kernels
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        product()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


# --- real batches ------------------------------------------------------------------------------


class Row:
    """One optimisation setting: its own config, model, trainer and batches."""

    def __init__(
        self, name: str, exp: Path, overrides: list[str], dataset, vocab: int, n_batches: int
    ) -> None:
        from s2s import experiment as X
        from s2s.train.trainer import Trainer

        self.name, self.overrides = name, overrides
        cfg = load_experiment_config([exp / "config.yaml"], [*overrides, "train.device=cpu"])
        # The same seed, the same initial weights; then seeded again, so that every row
        # augments its utterances alike (SpecAugment and the time shift draw from torch's
        # global generator), whatever its model's initialisation drew (the filed row's frontend
        # has other shapes); its buckets may group them differently.
        torch.manual_seed(cfg.train.seed)
        model = X.build_model(cfg, vocab)
        amp = resolve_amp(cfg.train.amp, torch.device("cpu"))
        loader = X.build_loader(cfg, dataset, shuffle=True, amp=amp)
        loader.batch_sampler.set_epoch(0)
        torch.manual_seed(cfg.train.seed)
        self.batches: list[Batch] = []
        for batch in loader:
            self.batches.append(batch)
            if len(self.batches) == n_batches:
                break
        self.tmp = tempfile.TemporaryDirectory(prefix="s2s-train-step-")
        self.trainer = Trainer(model, cfg.train, self.tmp.name, loader, device="cpu")
        self.amp = self.trainer.amp
        self.frames = sum(int(b.src_lens.sum()) for b in self.batches)
        self.times: list[list[float]] = []  # per round, per batch
        self.warmup_s = 0.0
        self.flops = 0

    def run(self) -> list[float]:
        times = []
        for batch in self.batches:
            t = time.perf_counter()
            self.trainer.train_step(batch)
            times.append(time.perf_counter() - t)
        return times

    def count_flops(self) -> None:
        """FLOPs of forward and backward over every batch (counted once per batch shape: they
        depend on shapes only); the optimiser's elementwise work is not counted."""
        per_shape: dict[tuple, int] = {}
        module = self.trainer.module
        for batch in self.batches:
            key = (tuple(batch.src.shape), tuple(batch.tgt.shape))
            if key not in per_shape:
                with flop_counter() as counter, autocast(self.trainer.device, self.amp):
                    module(batch)["loss"].backward()
                module.zero_grad(set_to_none=True)
                per_shape[key] = counter.get_total_flops()
            self.flops += per_shape[key]

    def summary(self, matmul: dict[str, float]) -> dict:
        rounds = [sum(t) for t in self.times]
        total = statistics.median(rounds)
        steps = len(self.batches)
        gflops = self.flops / total / 1e9
        return {
            "row": self.name,
            "overrides": self.overrides,
            "amp": self.amp,
            "batches": steps,
            "step_ms": 1e3 * statistics.median([x for t in self.times for x in t]),
            "frames_per_s": self.frames / total,
            "gflop_per_step": self.flops / steps / 1e9,
            "gflops": gflops,
            "matmul_share_fp32": gflops / matmul["float32"],
            "matmul_share_bf16": gflops / matmul["bfloat16"] if "bfloat16" in matmul else None,
            "matmul_share_fp32_onednn": gflops / matmul["float32-onednn"]
            if "float32-onednn" in matmul
            else None,
            "compile_s": max(0.0, self.warmup_s - total),
            "round_s": rounds,
            "batch_shapes": sorted({(*b.src.shape[:2], b.tgt.shape[1]) for b in self.batches}),
        }


def bench_experiment(args: argparse.Namespace) -> list[dict]:
    from s2s import experiment as X

    exp = Path(args.exp)
    cfg = load_experiment_config([exp / "config.yaml"])
    tokenizer = X.load_tokenizer(cfg.data.tokenizer)
    dataset = X.build_dataset(cfg, "train", tokenizer, train=True)
    vocab = tokenizer.vocab_size
    native_bf16 = cpu_has_native_bf16()
    names = args.rows or default_rows(native_bf16)
    if not args.rows and not native_bf16:
        print("# no native bfloat16 on this CPU (AMX, AVX512-BF16): the bf16 rows left out")
    rows = [Row(name, exp, ROWS[name], dataset, vocab, args.batches) for name in names]
    for row in rows:  # warm-up, compile included
        t = time.perf_counter()
        row.run()
        row.warmup_s = time.perf_counter() - t
        print(f"# {row.name}: warm-up pass {row.warmup_s:.1f} s", flush=True)
    # The yardsticks: float32 as torch computes it and as oneDNN does; bfloat16 where some row
    # computes in it and the CPU does so natively.
    yardsticks = {"float32": functools.partial(matmul_gflops, torch.float32)}
    if native_bf16 and any(row.amp == "bf16" for row in rows):
        yardsticks["bfloat16"] = functools.partial(matmul_gflops, torch.bfloat16)
    if torch.backends.mkldnn.is_available():
        yardsticks["float32-onednn"] = onednn_fp32_gflops
    matmul: dict[str, list[float]] = {name: [] for name in yardsticks}
    for _ in range(args.rounds):
        for row in rows:
            row.times.append(row.run())
        for name, rate in yardsticks.items():
            matmul[name].append(rate())
    rates = {k: statistics.median(v) for k, v in matmul.items()}
    for row in rows:
        row.count_flops()
    out = [row.summary(rates) for row in rows]
    base = out[0]["frames_per_s"]
    eager = next((r["frames_per_s"] for r in out if r["row"] == "eager-fp32"), None)
    for r in out:
        r["speedup"] = r["frames_per_s"] / base
        r["speedup_eager_fp32"] = None if eager is None else r["frames_per_s"] / eager
    two = eager is not None and out[0]["row"] != "eager-fp32"
    yardstick = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items())
    print(
        f"# {exp.name}: {args.batches} batches of epoch 0 per row, {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads; matmul 2048^3: {yardstick}"
    )
    head = ["row", "amp", "step ms", "frames/s", "speed-up"] + ["over eager-fp32"] * two
    head += ["GFLOP/step", "GFLOP/s"]
    head += ["of fp32 mm", "of oneDNN fp32", "of bf16 mm", "compile s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))

    def share(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    for r in out:
        cells = [
            r["row"],
            r["amp"],
            f"{r['step_ms']:.1f}",
            f"{r['frames_per_s']:.0f}",
            f"{r['speedup']:.2f}",
            *([f"{r['speedup_eager_fp32']:.2f}"] if two else []),
            f"{r['gflop_per_step']:.2f}",
            f"{r['gflops']:.0f}",
            f"{100 * r['matmul_share_fp32']:.0f}%",
            share(r["matmul_share_fp32_onednn"]),
            share(r["matmul_share_bf16"]),
            f"{r['compile_s']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    for r in out:
        r["matmul_gflops"] = rates
    return out


# --- random batches --------------------------------------------------------------------------


def build(spec: str, size: str):
    name, _, stride = spec.partition(":")
    overrides = list(SIZES[size])
    if stride:
        overrides.append(f"model.decoder.attention.stride={stride}")
    cfg = load_experiment_config(
        [REPO / "conf/model/paper.yaml", REPO / f"conf/attention/{name}.yaml"], overrides
    )
    return build_model(cfg, VOCAB)


def random_batch(args: argparse.Namespace, device: torch.device) -> Batch:
    """Features (B, T, 80) and targets (B, L) with lengths from 3/4 to all of the maximum."""
    g = torch.Generator().manual_seed(0)
    B = args.batch
    src_lens = torch.randint(args.frames * 3 // 4, args.frames + 1, (B,), generator=g)
    tgt_lens = torch.randint(args.tokens * 3 // 4, args.tokens + 1, (B,), generator=g)
    src_lens[0], tgt_lens[0] = args.frames, args.tokens
    return Batch(
        utt_ids=[f"utt{i}" for i in range(B)],
        src=torch.randn(B, args.frames, 80, generator=g).to(device),
        src_lens=src_lens.to(device),
        tgt=torch.randint(4, VOCAB, (B, args.tokens), generator=g).to(device),
        tgt_lens=tgt_lens.to(device),
    )


def bench_variant(spec: str, args: argparse.Namespace) -> dict:
    from s2s.train.config import TrainConfig
    from s2s.train.trainer import Trainer

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(spec, args.size).to(device).train()
    batch = random_batch(args, device)
    cfg = TrainConfig(
        device=device.type,
        lr=1e-4,
        scheduler="constant",
        warmup_steps=0,
        amp="bf16" if args.amp else "none",
        compile=args.compile,
        optim_impl=args.optim_impl,
    )
    first: list[float] = []  # the first step's time: it compiles, when asked

    def step() -> None:
        t = time.perf_counter()
        trainer.train_step(batch)
        if not first:
            first.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory(prefix="s2s-train-step-") as tmp:
        trainer = Trainer(model, cfg, tmp, [batch], device=device)
        seconds = median_time(step, device, args.repeats)
    return {
        "variant": spec,
        "step_s": seconds,
        "first_step_s": first[0],
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def bench_variants(args: argparse.Namespace) -> list[dict]:
    rows = [bench_variant(spec, args) for spec in args.variants]
    ref = next((r for r in rows if r["variant"] == "mha"), rows[0])
    opts = [" bf16 autocast" if args.amp else "", " compiled" if args.compile else ""]
    print(
        f"# {args.size} model, B={args.batch} frames={args.frames} tokens={args.tokens} on "
        f"{args.device}{''.join(opts)}; ratios to {ref['variant']}"
    )
    print(f"{'variant':<10}{'params M':>10}{'step ms':>10}{'vs ' + ref['variant']:>10}")
    for r in rows:
        r["ratio"] = r["step_s"] / ref["step_s"]
        ms = r["step_s"] * 1e3
        print(f"{r['variant']:<10}{r['params_m']:>10.1f}{ms:>10.1f}{r['ratio']:>10.2f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--exp", help="an experiment dir: its config and training batches (rows)")
    p.add_argument(
        "--rows", nargs="+", choices=list(ROWS), help="default: DEFAULT_ROWS (bf16 where native)"
    )
    p.add_argument("--batches", type=int, default=40, help="batches of epoch 0 per row")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: its default)")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    p.add_argument("--size", choices=sorted(SIZES), default="paper")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=1200, help="input frames (before subsampling)")
    p.add_argument("--tokens", type=int, default=60, help="target tokens per utterance")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (the trainer's amp)")
    p.add_argument("--compile", action="store_true", help="train.compile (regional)")
    p.add_argument("--optim-impl", default="auto", help="train.optim_impl")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench_experiment(args) if args.exp else bench_variants(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
