"""Beam-search decoding benchmark per attention variant and engine, side by side in one run (the
paper's speed/memory comparison, docs/paper.md, on random weights).

Every run decodes exactly `--steps` tokens per hypothesis (EOS is held back until then), so the
work is the same and only the attention and the cache handling differ. Engines:
- `lean`: ours (docs/engine.md): the frames' slots once per utterance, own parts allocated
  once for the longest output, ancestry reordering, cascade attention;
- `naive`: every hypothesis holds its whole cache, frames included, and reordering copies it
  (index_select per layer per step): what fairseq and the authors' code do;
- `authors`: the MTLA authors' own module (PyPI `mtla`, mtla/MTLA.py) in every layer, in the
  same decoder and search (s2s/bench/authors.py); skipped when `mtla` is not installed.

On CUDA the lean and naive engines' decode steps run the Triton kernels (kernels/) unless
`--kernels off`; `--kernels both` adds every such run again on the PyTorch path ("... torch"),
measured in the same process. `--compile` adds every lean run again with its step compiled
(`decode.compile`, s2s.decode.compiled: "... compiled"), right after its eager row; its compile
time (the calls that compiled a graph, in the warm-up search) is reported apart, with the
utterances it takes to repay it against the eager row. `--compile-mode reduce-overhead` makes
those rows graph-captured ("... cuda graphs": on CUDA the compiled step is also captured as a
CUDA graph and replayed; the row counts the graphs inductor declined to capture,
`cudagraph_skips`, every one on the CPU). Reported per run: decode time (median
of repeats), the peak bytes the self-attention caches allocated during the search (CPU and GPU
alike), on CUDA torch's peak allocated memory, and the kernel launches of one search (0 on the
PyTorch path: the GPU check reads them to know the kernels ran); ratios are to MHA in the
naive engine, measured in the same run.

    python -m s2s.bench.decode [--size paper|tiny] [--arrangement prefix|cross|prompt]
        [--batch 4] [--beam 50] [--prefix 100 300] [--steps 60] [--device cuda]
        [--dtype float32|bfloat16] [--kernels auto|off|both] [--compile]
        [--compile-mode default|reduce-overhead] [--compile-gemm auto|mkl|onednn]
        [--runs mha:naive mtla:2:naive mtla:2:authors mha mqa gqa mla mtla:2 mtla:3 mtla:4
                mfa mfa_kr mlra gla gta]
        [--plot decode.png] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from kernels.launch import counting
from s2s.attention import sweep_config
from s2s.bench.attention import DEFAULT_VARIANTS
from s2s.bench.authors import AuthorsAttention, load_authors_mtla
from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.decode.compiled import COMPILE_STATS
from s2s.decode.scorer_set import search_scorers
from s2s.decode.scorers import DecoderScorer
from s2s.experiment.decode_config import COMPILE_GEMMS, COMPILE_MODES
from s2s.models.decoder import ARRANGEMENTS, Decoder, DecoderConfig

SIZES = {  # decoder sizes: (layers, d_model, heads, ffn, latent r, rope d_r)
    "paper": (9, 512, 8, 2048, 256, 32),
    "tiny": (2, 64, 4, 128, 32, 8),
}
BOS, EOS, VOCAB = 2, 3, 1000
DEFAULT_RUNS = ("mha:naive", "mtla:2:naive", "mtla:2:authors", *DEFAULT_VARIANTS)
#: the suffix of a compiled row's name, per decode.compile_mode
COMPILED_LABEL = {"default": " compiled", "reduce-overhead": " cuda graphs"}
PAPER = {  # docs/paper.md: MuST-C tst-COMMON, beam 50, RTX 6000 Ada: speed-up, memory reduction
    "mha": (1.00, 1.00),
    "mqa": (1.67, 6.07),
    "gqa": (1.48, 3.51),
    "mla": (2.90, 3.68),
    "mtla s=2": (4.29, 6.58),
    "mtla s=3": (5.34, 8.28),
    "mtla s=4": (5.78, 9.71),
}


def parse_run(spec: str) -> tuple[str, int, str]:
    """'mtla:3' -> ("mtla", 3, "lean"); 'mha:naive' -> ("mha", 1, "naive");
    'mtla:2:authors' -> ("mtla", 2, "authors")."""
    name, *rest = spec.split(":")
    strides = [int(p) for p in rest if p.isdigit()]
    engines = [p for p in rest if not p.isdigit()]
    stride = strides[0] if strides else (2 if name == "mtla" else 1)
    engine = engines[0] if engines else "lean"
    if engine not in ("lean", "naive", "authors"):
        raise ValueError(f"run {spec!r}: engine {engine!r} not in lean, naive, authors")
    if engine == "authors" and name != "mtla":
        raise ValueError(f"run {spec!r}: the authors' module is MTLA")
    return name, stride, engine


def build(name: str, stride: int, size: str, arrangement: str, authors=None) -> Decoder:
    layers, d, h, ffn, r, dr = SIZES[size]
    cfg = DecoderConfig(
        n_layers=layers,
        d_model=d,
        n_heads=h,
        ffn_dim=ffn,
        dropout=0.0,
        arrangement=arrangement,
        attention=sweep_config(name, stride=stride, latent_dim=r, rope_dim=dr),
    )
    dec = Decoder(cfg, VOCAB, memory_dim=d)
    if authors is not None:  # their attention in every layer, the rest of the decoder ours
        for layer in dec.layers:
            layer.self_attn = AuthorsAttention(authors, d, h, d // h, r, dr, stride)
    return dec.eval()


def label(name: str, stride: int) -> str:
    return f"mtla s={stride}" if name == "mtla" else name


def bench(
    spec: str,
    prefix: int,
    args: argparse.Namespace,
    authors,
    kernels: bool = True,
    compiled: bool = False,
) -> dict | None:
    name, stride, engine = parse_run(spec)
    if engine == "authors" and authors is None:
        return None
    if engine == "authors" and args.arrangement != "prefix":
        return None  # their module is the prefix (cross self-attention) arrangement's
    device = torch.device(args.device)
    torch.manual_seed(0)
    dec = build(name, stride, args.size, args.arrangement, authors if engine == "authors" else None)
    dtype = getattr(torch, args.dtype)
    dec = dec.to(device, dtype)
    d = dec.cfg.d_model
    memory = torch.randn(args.batch, prefix, d, device=device, dtype=dtype)
    lens = torch.full((args.batch,), prefix, device=device)
    cfg = BeamSearchConfig(
        beam_size=args.beam,
        max_len_b=args.steps,
        min_len=args.steps,
        kernels=kernels,
        compile=compiled,
        compile_mode=args.compile_mode,
        compile_gemm=args.compile_gemm,
    )
    times, peak_gpu, peak_cache = [], None, 0
    compiled_before = dict(COMPILE_STATS)
    for _ in range(args.repeats + 1):  # the first run warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        stats: dict = {}
        t0 = time.perf_counter()
        with counting() as launched:
            beam_search(
                search_scorers(cfg, DecoderScorer(dec)),
                memory,
                lens,
                cfg,
                bos_id=BOS,
                eos_id=EOS,
                engine="naive" if engine == "authors" else engine,
                stats=stats,
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak_gpu = torch.cuda.max_memory_allocated() / 2**20
        times.append(time.perf_counter() - t0)
        peak_cache = stats["peak_cache_bytes"]
    seconds = statistics.median(times[1:])
    torch_path = not kernels and args.kernels == "both"
    return {
        "run": f"{label(name, stride)} {engine}"
        + (" torch" if torch_path else "")
        + (COMPILED_LABEL[args.compile_mode] if compiled else ""),
        "compiled": compiled,
        "compile_mode": args.compile_mode if compiled else None,
        "compile_s": COMPILE_STATS["seconds"] - compiled_before["seconds"],
        "graphs": int(COMPILE_STATS["graphs"] - compiled_before["graphs"]),
        "cudagraph_skips": int(
            COMPILE_STATS["cudagraph_skips"] - compiled_before["cudagraph_skips"]
        ),
        "variant": label(name, stride),
        "engine": engine,
        "prefix": prefix,
        "decode_s": seconds,
        "hyp_steps_per_s": args.batch * args.beam * args.steps / seconds,
        "cache_bytes_per_token": dec.cache_bytes_per_token(),
        "peak_cache_mib": peak_cache / 2**20,
        "peak_gpu_mib": peak_gpu,
        "kernel_launches": sum(launched.values()),
    }


def report(rows: list[dict], args: argparse.Namespace, prefix: int) -> None:
    rows = [r for r in rows if r["prefix"] == prefix]
    ref = next((r for r in rows if r["run"] == "mha naive"), rows[0])
    print(
        f"\n# {args.size} decoder, {args.arrangement}, B={args.batch} beam={args.beam} "
        f"prefix={prefix} steps={args.steps} on {args.device} {args.dtype} kernels "
        f"{args.kernels}; ratios to '{ref['run']}'"
    )
    print(
        f"{'run':<27}{'decode s':>10}{'speed-up':>10}{'peak cache MiB':>16}{'reduction':>11}"
        f"{'GPU peak MiB':>14}{'paper':>14}{'compile s':>11}{'repaid after':>14}"
    )
    for r in rows:
        r["speedup"] = ref["decode_s"] / r["decode_s"]
        r["memory_reduction"] = ref["peak_cache_mib"] / r["peak_cache_mib"]
        paper = PAPER.get(r["variant"]) if r["engine"] == "lean" else None
        gpu = "n/a" if r["peak_gpu_mib"] is None else format(r["peak_gpu_mib"], ".1f")
        compile_s = repaid = ""
        if r["compiled"]:
            eager_run = r["run"].removesuffix(COMPILED_LABEL[r["compile_mode"]])
            eager = next(e for e in rows if e["run"] == eager_run)
            r["repaid_after_utterances"] = repaid_after(
                r["compile_s"], eager["decode_s"] / args.batch, r["decode_s"] / args.batch
            )
            compile_s = f"{r['compile_s']:.1f}"
            n = r["repaid_after_utterances"]
            repaid = "never" if n is None else f"{n} utt"
        print(
            f"{r['run']:<27}{r['decode_s']:>10.3f}{r['speedup']:>10.2f}"
            f"{r['peak_cache_mib']:>16.2f}{r['memory_reduction']:>11.2f}{gpu:>14}"
            f"{'' if paper is None else f'{paper[0]:.2f}x {paper[1]:.2f}x':>14}"
            f"{compile_s:>11}{repaid:>14}"
        )


def repaid_after(compile_s: float, eager_per_utt: float, compiled_per_utt: float) -> int | None:
    """Utterances after which a compiled decode, compile time included, has caught up with
    eager: compile_s over the seconds it saves per utterance (None: it saves none)."""
    saved = eager_per_utt - compiled_per_utt
    return None if saved <= 0 else math.ceil(compile_s / saved)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for run in dict.fromkeys(r["run"] for r in rows):
        pts = sorted(
            (r["prefix"], r["decode_s"], r["peak_cache_mib"]) for r in rows if r["run"] == run
        )
        xs = [p[0] for p in pts]
        style = "--" if "naive" in run or "authors" in run else "-"
        ax_t.plot(xs, [p[1] for p in pts], style, marker="o", label=run)
        ax_m.plot(xs, [p[2] for p in pts], style, marker="o", label=run)
    ax_t.set(xlabel="prefix frames", ylabel="decode time (s)", title="beam-search decode time")
    ax_m.set(xlabel="prefix frames", ylabel="peak cache (MiB)", title="self-attention cache")
    ax_m.set_yscale("log")
    ax_m.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS))
    p.add_argument("--size", choices=sorted(SIZES), default="paper")
    p.add_argument("--arrangement", choices=ARRANGEMENTS, default="prefix")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--beam", type=int, default=50)
    p.add_argument("--prefix", type=int, nargs="+", default=[100, 300], help="frames/utterance")
    p.add_argument("--steps", type=int, default=60, help="tokens decoded per hypothesis")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--kernels", choices=["auto", "off", "both"], default="auto")
    p.add_argument("--compile", action="store_true", help="each lean run also compiled")
    p.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default="default",
        help="reduce-overhead: the compiled step also captured as a CUDA graph (on CUDA)",
    )
    p.add_argument(
        "--compile-gemm",
        choices=COMPILE_GEMMS,
        default="auto",
        help="decode.compile_gemm: whose packed GEMM the compiled CPU rows' Linears use",
    )
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--plot", help="a PNG of time and peak cache memory against prefix length")
    args = p.parse_args(argv)
    authors = load_authors_mtla()
    rows = []
    for prefix in args.prefix:
        for spec in args.runs:
            modes = [True, False] if args.kernels == "both" else [args.kernels == "auto"]
            if parse_run(spec)[2] == "authors":
                modes = modes[:1]  # their module has no kernels to switch
            for kernels in modes:
                lean = parse_run(spec)[2] == "lean"
                for compiled in (False, True) if args.compile and lean else (False,):
                    row = bench(spec, prefix, args, authors, kernels, compiled)
                    if row is not None:
                        rows.append(row)
        report(rows, args, prefix)
    print("\n(paper: speed-up, memory reduction vs MHA; MuST-C, beam 50, RTX 6000 Ada)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
