"""Decode-attention kernel benchmark: time and achieved bandwidth against the device's measured
copy bandwidth, beside the PyTorch path, over batch x beam and cache length.

One decode step of one layer, for the two cache layouts the engine uses:
- latent (MLA/MTLA): G = 1, slots of r + d_r (query [q~ ; q_rope], value = the first r columns),
- heads (MHA): G = H key/value heads of d_h,
and the two parts of the lean cache: `own` (N = B*K hypotheses, each reading its S slots
through the ancestry table) and `shared` (B utterances, their K*H queries against one copy of
S slots). Bytes counted are the fewest the step must move: every slot in use read once (the
shared part once per utterance), the ancestry table, the queries, the outputs. The copy
bandwidth is a large device-to-device copy (bytes read + written) measured in the same run;
all times are medians of CUDA-event timings (triton.testing.do_bench). Each row also has the
kernel's relative error against the float32 PyTorch path and the launches its step made.

`--device cpu` runs the same under TRITON_INTERPRET=1 (wall-clock times, meaningless as speed):
the GPU check's dry run, at tiny sizes, so every line of the benchmark runs before a lease.

    python -m kernels.bench [--dtype float32|bfloat16] [--batch 1 4 16] [--beam 5 50]
        [--slots 128 512 2048] [--device cuda|cpu] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from kernels.decode_attention import CachePart, attend_partials, merge_partials, split_plan
from kernels.launch import counting

LAYOUTS = {  # name: (query heads H, key/value groups G, key width, value width), paper size
    "latent": (8, 1, 256 + 32, 256),
    "heads": (8, 8, 64, 64),
}


def step_bytes(layout: str, part: str, B: int, K: int, S: int, elem: int) -> int:
    """Fewest bytes one decode step of one layer moves for a part of S slots per sequence."""
    H, G, Dk, Dv = LAYOUTS[layout]
    slot = G * (Dk if layout == "latent" else Dk + Dv) * elem  # latent: value inside the key
    N = B * K
    q_out = N * H * (Dk + Dv) * elem
    if part == "shared":
        return B * S * slot + q_out
    return N * S * (slot + 8) + q_out  # own: every hypothesis its slots, + int64 owner entries


def make_part(layout: str, part: str, B: int, K: int, S: int, dtype, device) -> tuple:
    """Random query and cache part (fully used: S slots per sequence); own slots scattered
    over the beam rows through a random ancestry table, as after many reorders."""
    H, G, Dk, Dv = LAYOUTS[layout]
    N = B * K
    C = B if part == "shared" else N
    if layout == "latent":
        kv = torch.randn(C, S, Dk, device=device, dtype=dtype)
        k, v = kv[:, :, None], kv[:, :, None, :Dv]
    else:
        k = torch.randn(C, S, G, Dk, device=device, dtype=dtype)
        v = torch.randn(C, S, G, Dv, device=device, dtype=dtype)
    owner = None
    if part == "own":  # a hypothesis's slot s lives in some row of its utterance's group
        group = torch.arange(N, device=device)[:, None] // K * K
        owner = group + torch.randint(0, K, (N, S), device=device)
    num = torch.full((C,), S, device=device, dtype=torch.long)
    q = torch.randn(N, H, Dk, device=device, dtype=dtype)
    return q, CachePart(k, v, owner, num)


def kernel_step(q, part: CachePart, scale: float):
    """The engine's kernel path for one part: split-KV partials, then their merge."""
    P = split_plan(part.capacity)[1]
    out = torch.empty(*q.shape[:1], P, *q.shape[1:2], part.v.shape[3], device=q.device)
    lse = torch.empty(q.shape[0], P, q.shape[1], device=q.device, dtype=torch.float32)
    attend_partials(q, part, scale, out, lse)
    return merge_partials(out, lse)


def torch_step(q, part: CachePart, scale: float):
    """The PyTorch path the engine takes without kernels (s2s.attention.ops)."""
    from s2s.attention.ops import attend_with_lse, cached_attention

    if part.owner is not None or part.num_slots.shape[0] == q.shape[0]:
        return cached_attention(q, part.k, part.v, part.owner, part.num_slots, scale)
    U, N, H = part.num_slots.shape[0], q.shape[0], q.shape[1]
    G = part.k.shape[2]
    qs = q.view(U, N // U, G, H // G, -1).transpose(1, 2).reshape(U, -1, q.shape[2])
    valid = torch.ones(U, part.k.shape[1], dtype=torch.bool, device=q.device)
    return attend_with_lse(qs, part.k, part.v, valid, scale)


def median_ms(fn, device: torch.device, **bench) -> float:
    """Median milliseconds of fn(): CUDA events on a GPU (triton.testing.do_bench), the wall
    clock over 3 calls on the CPU (where only the interpreter runs the kernels)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, return_mode="median", **bench)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(
    layout: str, part: str, B: int, K: int, S: int, dtype: torch.dtype, device: torch.device
) -> dict:
    """One configuration: the kernel's error against the float32 PyTorch path, its launches,
    and the median times of both paths."""
    H, G, Dk, Dv = LAYOUTS[layout]
    scale = (Dv if layout == "heads" else 64 + 32) ** -0.5
    q, cache = make_part(layout, part, B, K, S, dtype, device)
    with counting() as launched:
        got = kernel_step(q, cache, scale)[0]
    full = cache._replace(k=cache.k.float(), v=cache.v.float())
    if layout == "latent":  # keep the value a view of the key
        full = full._replace(v=full.k[..., :Dv])
    ref = torch_step(q.float(), full, scale)[0]
    if part == "shared":  # (U, group-major queries) back to (N, H, Dv) hypothesis order
        ref = ref.view(B, G, K, H // G, Dv).transpose(1, 2).reshape(-1, H, Dv)
    t_k = median_ms(lambda: kernel_step(q, cache, scale), device)
    t_t = median_ms(lambda: torch_step(q, cache, scale), device)
    nbytes = step_bytes(layout, part, B, K, S, torch.finfo(dtype).bits // 8)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "layout": layout,
        "part": part,
        "batch": B,
        "beam": K,
        "slots": S,
        "bytes": nbytes,
        "kernel_us": t_k * 1e3,
        "torch_us": t_t * 1e3,
        "gb_per_s": nbytes / (t_k * 1e-3) / 1e9,
        "rel_err": ((got - ref).norm() / ref.norm()).item(),
        "kernel_launches": sum(launched.values()),
    }


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a 1 GiB device-to-device copy (read + write counted); 16 MiB on the
    CPU."""
    src = torch.randn(2**28 if device.type == "cuda" else 2**22, device=device)  # float32
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, warmup=50, rep=500)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--beam", type=int, nargs="+", default=[5, 50])
    p.add_argument("--slots", type=int, nargs="+", default=[128, 512, 2048])
    p.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=sorted(LAYOUTS))
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("kernels.bench: needs a CUDA device (the kernels' CPU tests: pytest tests/)")
        return 2
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        p.error("--device cpu runs the kernels only under TRITON_INTERPRET=1")
    dtype = getattr(torch, args.dtype)
    bw = copy_bandwidth(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU, TRITON_INTERPRET=1"
    print(f"# {name}, {args.dtype}; device-to-device copy {bw / 1e9:.0f} GB/s")
    print(
        f"{'layout':<8}{'part':<8}{'B':>4}{'K':>4}{'S':>6}{'MB':>9}{'kernel us':>11}"
        f"{'GB/s':>8}{'% copy':>8}{'torch us':>10}{'speed-up':>10}"
    )
    rows = []
    for layout in args.layouts:
        for part in ("own", "shared"):
            for B in args.batch:
                for K in args.beam:
                    for S in args.slots:
                        row = measure(layout, part, B, K, S, dtype, device)
                        row.update(device=name, copy_fraction=row["gb_per_s"] * 1e9 / bw)
                        rows.append(row)
                        print(
                            f"{layout:<8}{part:<8}{B:>4}{K:>4}{S:>6}{row['bytes'] / 1e6:>9.2f}"
                            f"{row['kernel_us']:>11.1f}{row['gb_per_s']:>8.0f}"
                            f"{100 * row['copy_fraction']:>7.0f}%{row['torch_us']:>10.1f}"
                            f"{row['torch_us'] / row['kernel_us']:>9.2f}x"
                        )
    worst = max(r["rel_err"] for r in rows)
    print(f"(largest relative error against the PyTorch path: {worst:.1e})")
    if args.json:
        Path(args.json).write_text(json.dumps({"copy_gb_per_s": bw / 1e9, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
