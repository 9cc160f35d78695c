"""Every kernel configuration the dispatch can choose, compiled ahead of time for the GPUs we
target (sm_80: A100; sm_90: H100/H200) on a machine without a GPU, with its registers, spills
and shared memory (docs/engine.md, "Kernels compiled ahead of time").

The configurations are not listed by hand: every registered variant's decode step runs on the
CPU at the model sizes of conf/model/tiny.yaml and paper.yaml, in every dtype, with beams of 1,
2, 4, ... MAX_BEAM hypotheses (the query rows per program, BLOCK_Q, follow beam x heads per
group, a power of two), in the prefix arrangement (own part + shared part) and without a prefix
(own part only), inside `kernels.launch.recording()`: the launchers' own code picks block sizes,
warps and the specialisation of every argument, and what they would launch is recorded.

One table row is one choice of the tiles and code paths (layout, widths, query rows per
program, warps, ancestry table or not, dtype); it is compiled once per target, as Triton's JIT
would compile it on that device (its own binder), with the longest split loop `split_plan`
gives up to MAX_CAPACITY slots. What varies within a row (the loop's trip count, whether a
stride is a multiple of 16 or equal to 1) changes no tile, no register array and no shared
buffer; compiling each of those too would be about ten times the compilations (over 1000 per
model size). The failures are a compile error, any register spill, and shared memory over the
chip's limit per block, and an empty list of configurations (a dispatch that stopped going
through kernels.launch would otherwise pass, having compiled nothing).

    python -m kernels.compile_check [--sizes paper tiny] [--archs 80 90]
        [--dtypes float32 bfloat16 float16] [--jobs 2] [--markdown table.md]
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from kernels.decode_attention import split_plan
from kernels.launch import Launch, kernel_name, recording

ROOT = Path(__file__).resolve().parents[1]
#: compute capability -> shared memory one block may use (opt-in maximum), bytes
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
DTYPES = ("float32", "bfloat16", "float16")
SIZES = ("paper", "tiny")
MAX_BEAM = 64
MAX_CAPACITY = 4096  # slots of one cache part (frames of a long utterance, or output tokens)


def model_size(size: str) -> tuple[int, int]:
    """(d_model, n_heads) of the decoder in conf/model/<size>.yaml; latent and RoPE widths are
    the variants' defaults for them (r = d/2, d_r = d_h/2)."""
    from omegaconf import OmegaConf

    dec = OmegaConf.load(ROOT / "conf" / "model" / f"{size}.yaml").model.decoder
    return int(dec.d_model), int(dec.n_heads)


def _step_launches(m: torch.nn.Module, d: int, beam: int, prefixed: bool, dtype) -> list[Launch]:
    """What one decode step of module m launches for one utterance of `beam` hypotheses."""
    from s2s.attention.ops import use_kernels

    with torch.no_grad():
        if prefixed:  # the lean engine's cache: frames once (shared part), beams' own slots
            cache = m.new_cache(1, ancestry=True)
            m.prefill(torch.randn(1, 8, d, dtype=dtype), torch.tensor([8]), cache)
            cache.expand(beam, own_slots=8)
        else:  # the cross arrangement: the own part only
            cache = m.new_cache(beam, ancestry=True, capacity=8, growable=False)
        with use_kernels("on"), recording() as launches:
            m.step(torch.randn(beam, 1, d, dtype=dtype), cache)
    return launches


def dispatch_launches(size: str, dtype_name: str) -> list[tuple[str, Launch]]:
    """(variant, launch) for every launch the dispatch makes at this model size and dtype
    (BLOCKS_PER_SPLIT set to its largest value up to MAX_CAPACITY slots)."""
    from s2s.attention import VARIANTS, build_attention, sweep_config

    d, heads = model_size(size)
    dtype = getattr(torch, dtype_name)
    beams = [2**i for i in range(MAX_BEAM.bit_length())]
    out = []
    for variant in VARIANTS:
        torch.manual_seed(0)
        m = build_attention(sweep_config(variant), d, heads).to(dtype).eval()
        for prefixed in (True, False):
            for beam in beams:
                for launch in _step_launches(m, d, beam, prefixed, dtype):
                    if "BLOCKS_PER_SPLIT" in launch.kwargs:  # the longest loop it can run
                        block_s = launch.kwargs["BLOCK_S"]
                        n = split_plan(MAX_CAPACITY, block_s=block_s)[0] // block_s
                        launch = replace(launch, kwargs={**launch.kwargs, "BLOCKS_PER_SPLIT": n})
                    out.append((variant, launch))
    return out


@dataclass(frozen=True)
class Job:
    """One compilation: the kernel by module and name, and what Triton's JIT passes its
    compiler (signature, constexprs, attributes, options) for one target."""

    module: str
    name: str
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    arch: int


def jit_job(launch: Launch, arch: int) -> Job:
    """The compilation Triton's JIT would make for this launch on a device of compute
    capability `arch` (its own binder: the same specialisation of ints and pointers)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, opts = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch.kwargs, bound, spec, opts)
    return Job(
        fn.fn.__module__, fn.fn.__name__, signature, constexprs, attrs, options.__dict__, arch
    )


@dataclass
class Resources:
    """What one compilation uses per thread block / thread, or its error."""

    registers: int = 0
    stack: int = 0  # bytes of stack frame per thread (spills live there)
    spills: int = 0  # bytes of spill stores
    shared: int = 0  # bytes of shared memory per block
    error: str = ""


def _tool(name: str) -> str:
    from triton import knobs

    return getattr(knobs.nvidia, name).path


def compile_job(job: Job) -> Resources:
    """Compile for the job's target (PTX, then a cubin through the ptxas Triton ships) and read
    the cubin's resource usage; ptxas's verbose report only where a stack frame shows spills
    may exist (it costs a second ptxas run)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import sm_arch_from_capability
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(job.module), job.name)
    src = ASTSource(fn, job.signature, job.constexprs, job.attrs)
    try:
        k = triton.compile(src, target=GPUTarget("cuda", job.arch, 32), options=job.options)
    except Exception as e:  # noqa: BLE001 - any compiler failure is the finding
        return Resources(error=f"{type(e).__name__}: {str(e)[:300]}")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp, "k.cubin")
        cubin.write_bytes(k.asm["cubin"])
        usage = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", str(cubin)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        regs, stack = (int(re.search(rf"{f}:(\d+)", usage).group(1)) for f in ("REG", "STACK"))
        spills = 0
        if stack:
            ptx = Path(tmp, "k.ptx")
            ptx.write_text(k.asm["ptx"])
            log = subprocess.run(
                [
                    _tool("ptxas"),
                    "-v",
                    f"--gpu-name={sm_arch_from_capability(job.arch)}",
                    str(ptx),
                    "-o",
                    str(cubin),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stderr
            spills = max(int(n) for n in re.findall(r"(\d+) bytes spill stores", log))
    return Resources(regs, stack, spills, int(k.metadata.shared))


@dataclass
class Row:
    """One table row: one choice of tiles and code paths, the variants that make it, and its
    compilations per target with their figures."""

    size: str
    kernel: str
    dtype: str
    shape: str
    warps: int
    variants: list[str]
    jobs: dict[int, list[Job]]
    results: dict[int, list[Resources]]

    def worst(self, arch: int) -> Resources:
        rs = self.results.get(arch, [])
        errors = [r.error for r in rs if r.error]
        return Resources(
            max((r.registers for r in rs), default=0),
            max((r.stack for r in rs), default=0),
            max((r.spills for r in rs), default=0),
            max((r.shared for r in rs), default=0),
            errors[0] if errors else "",
        )

    def failures(self, arch: int) -> list[str]:
        w = self.worst(arch)
        msg = []
        if w.error:
            msg.append(w.error)
        if w.spills:
            msg.append(f"{w.spills} bytes of register spills")
        if w.shared > SHARED_LIMIT[arch]:
            msg.append(f"{w.shared} bytes of shared memory > {SHARED_LIMIT[arch]}")
        return msg


def _shape(kernel: str, c: dict[str, Any]) -> str:
    if kernel == "_attend_partial":
        key = f"{c['DK']}+{c['DT']}" if c["HAS_TAIL"] else str(c["DK"])
        layout = "latent" if c["V_IS_K"] else "heads"
        part = "owner" if c["HAS_OWNER"] else "direct"
        return f"{layout} QPG={c['QPG']} Dk={key} Dv={c['DV']} BLOCK_Q={c['BLOCK_Q']} {part}"
    return f"r={c['R']} d_r={c['DR']} r/4={c['RH']}" + (" owner" if c["HAS_OWNER"] else "")


def plan(sizes: Iterable[str], dtypes: Iterable[str], archs: Iterable[int]) -> list[Row]:
    """The table's rows with their distinct compilations (not yet compiled)."""
    rows: dict[tuple, Row] = {}
    for size in sizes:
        for dtype in dtypes:
            for variant, launch in dispatch_launches(size, dtype):
                c = {k: v for k, v in launch.kwargs.items() if k != "num_warps"}
                kernel = kernel_name(launch.fn)
                warps = launch.kwargs.get("num_warps", 4)
                label = (size, kernel, dtype, _shape(kernel, c), warps)
                row = rows.setdefault(label, Row(*label, [], {}, {}))
                if variant not in row.variants:
                    row.variants.append(variant)
                for arch in archs:  # one compilation per row: see the module's docstring
                    if arch not in row.jobs:
                        row.jobs[arch] = [jit_job(launch, arch)]
    return list(rows.values())


def compile_rows(rows: list[Row], jobs: int) -> None:
    """Compile every row's jobs (in `jobs` processes) and store the results in the rows."""
    flat = [(row, arch, job) for row in rows for arch, js in row.jobs.items() for job in js]
    if jobs > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            results = list(pool.map(compile_job, [j for _, _, j in flat]))
    else:
        results = [compile_job(j) for _, _, j in flat]
    for (row, arch, _), res in zip(flat, results):
        row.results.setdefault(arch, []).append(res)


def markdown(rows: list[Row], archs: list[int]) -> str:
    """The table: per row and target, registers per thread, spill bytes, shared memory per
    block."""
    head = "| size | kernel | dtype | configuration | warps | variants |"
    rule = "|---|---|---|---|---|---|"
    for arch in archs:
        head += f" sm_{arch} regs | spills | shared KiB |"
        rule += "---|---|---|"
    lines = [head, rule]
    for r in rows:
        line = (
            f"| {r.size} | {r.kernel.strip('_')} | {r.dtype} | {r.shape} | {r.warps} | "
            f"{' '.join(r.variants)} |"
        )
        for arch in archs:
            w = r.worst(arch)
            line += (
                " error |" * 3
                if w.error
                else f" {w.registers} | {w.spills} | {w.shared / 1024:.1f} |"
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    p.add_argument(
        "--archs", nargs="+", type=int, choices=sorted(SHARED_LIMIT), default=sorted(SHARED_LIMIT)
    )
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--markdown", help="also write the table to this file")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("unset TRITON_INTERPRET: the interpreter compiles nothing")
    t0 = time.perf_counter()
    rows = plan(args.sizes, args.dtypes, args.archs)
    if not rows:  # nothing recorded: the dispatch no longer reaches kernels.launch
        print("FAIL no kernel configuration recorded: nothing to compile", file=sys.stderr)
        return 1
    compile_rows(rows, args.jobs)
    table = markdown(rows, args.archs)
    n = sum(len(j) for r in rows for j in r.jobs.values())
    print(table)
    print(f"\n{n} compilations, {len(rows)} rows, {time.perf_counter() - t0:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    failed = [(r, a, m) for r in rows for a in args.archs for m in r.failures(a)]
    for r, arch, msg in failed:
        print(f"FAIL sm_{arch} {r.size} {r.kernel} {r.dtype} {r.shape}: {msg}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
