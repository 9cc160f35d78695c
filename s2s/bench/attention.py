"""Micro-benchmark of decoder self-attention variants, side by side in one run.

Per variant: parameters, cache elements and bytes per token (per layer), the parallel
(training) forward time over (B, T, d), and the per-step decode time with T tokens cached.
Times are medians; they are reported as ratios to MHA measured in the same run, since a
timing only means something against another taken on the same machine at the same time.

    python -m s2s.bench.attention [--batch 8] [--length 256] [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from s2s.attention import VARIANTS, AttentionConfig, build_attention, sweep_config

# Every registered variant, MTLA at the paper's three strides (what both benchmarks and the
# training-step benchmark run by default).
DEFAULT_VARIANTS = tuple(
    spec for v in VARIANTS for spec in (("mtla:2", "mtla:3", "mtla:4") if v == "mtla" else (v,))
)


def parse_variant(spec: str, **sizes) -> AttentionConfig:
    """'mtla:3' -> the mtla config with stride 3; `sizes` (d_model, latent_dim, ...) where the
    variant uses them."""
    name, _, stride = spec.partition(":")
    return sweep_config(name, **sizes, **({"stride": int(stride)} if stride else {}))


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of fn() in seconds (CUDA events on GPU), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_variant(
    cfg: AttentionConfig,
    batch: int,
    length: int,
    steps: int,
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, float | str | int]:
    m = build_attention(cfg).to(device=device, dtype=dtype).eval()
    x = torch.randn(batch, length, cfg.d_model, device=device, dtype=dtype)
    new = torch.randn(batch, 1, cfg.d_model, device=device, dtype=dtype)
    with torch.inference_mode():
        fwd = median_time(lambda: m(x), device, repeats)
        cache = m.new_cache(batch, capacity=length + steps * repeats + steps + 1)
        m(x, cache=cache)

        def decode() -> None:
            for _ in range(steps):
                m.step(new, cache)

        step = median_time(decode, device, repeats) / steps
    elems = m.cache_elements_per_token()
    name = cfg.type if cfg.type != "mtla" else f"mtla s={cfg.stride}"
    return {
        "variant": name,
        "params": sum(p.numel() for p in m.parameters()),
        "cache_elems_per_token": elems,
        "cache_bytes_per_token": elems * torch.finfo(dtype).bits / 8,
        "forward_s": fwd,
        "step_s": step,
    }


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sizes = dict(
        d_model=args.d_model,
        n_heads=args.heads,
        head_dim=args.d_model // args.heads,
        latent_dim=args.latent,
        rope_dim=args.rope_dim,
    )
    rows = [
        bench_variant(
            parse_variant(v, **sizes),
            args.batch,
            args.length,
            args.steps,
            args.repeats,
            device,
            dtype,
        )
        for v in args.variants
    ]
    ref = next((r for r in rows if r["variant"] == "mha"), rows[0])
    for r in rows:
        r["forward_vs_mha"] = r["forward_s"] / ref["forward_s"]
        r["step_vs_mha"] = r["step_s"] / ref["step_s"]
        r["cache_vs_mha"] = r["cache_elems_per_token"] / ref["cache_elems_per_token"]
    return rows


def format_table(rows: list[dict]) -> str:
    head = (
        f"{'variant':<11}{'params':>9}{'cache el/tok':>13}{'bytes/tok':>11}{'cache×':>8}"
        f"{'fwd ms':>9}{'fwd×':>7}{'step ms':>9}{'step×':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['variant']:<11}{r['params']:>9,}{r['cache_elems_per_token']:>13.1f}"
            f"{r['cache_bytes_per_token']:>11.1f}{r['cache_vs_mha']:>8.3f}"
            f"{r['forward_s'] * 1e3:>9.2f}{r['forward_vs_mha']:>7.2f}"
            f"{r['step_s'] * 1e3:>9.3f}{r['step_vs_mha']:>7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=256, help="tokens in the forward / in the cache")
    p.add_argument("--steps", type=int, default=16, help="decode steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--latent", type=int, default=256)
    p.add_argument("--rope-dim", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = run(args)
    print(
        f"# one decoder self-attention layer; B={args.batch} T={args.length} d={args.d_model} "
        f"H={args.heads} r={args.latent} d_r={args.rope_dim} {args.dtype} on {args.device}; "
        f"ratios are to MHA in this run"
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
