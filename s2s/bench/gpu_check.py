"""The whole GPU check in one command, within a time budget: what a person with a few minutes
on a GPU machine runs (docs/engine.md, "The GPU check"; tools/gpu_check.sh installs what is
missing first).

Parts, most important first, each a subprocess with its own timeout: part i may run until
budget x (weights of parts 1..i) / (all weights) has passed, so time a part leaves unused goes
to the next ones and a slow part cannot starve them beyond its own share (a part that would
start with under MIN_PART_S left is skipped):
1. `pytest -m gpu` on the test files that hold GPU tests (kernels against the PyTorch path);
2. the kernel benchmark (kernels.bench), float32 and bfloat16: GB/s against the device's copy
   bandwidth measured in the same run;
3. the paper's table at the paper's size (s2s.bench.decode): mha in the naive engine, mla and
   mtla s=2/3/4 in the lean one, beam 50, kernels on and off, float32 then bfloat16, ratios to
   mha;
4. eager against graph-captured decoding at the paper's size (s2s.bench.decode --compile
   --compile-mode reduce-overhead): mha and mtla s=2 in the lean engine, beam 10, 100 and 300
   frames, each eager and then with its step compiled and captured as a CUDA graph
   (decode.compile_mode), with the compile time and the utterances that repay it;
5. the training step of the paper-sized model (s2s.bench.train_step), mha and mtla, bf16
   autocast, eager and then compiled (train.compile: each layer, the first step's time says
   what compiling cost).
Each part's output is read back and checked, not only its exit status (VERIFY): the GPU tests
all passed, every kernel row launched its kernel and matches the PyTorch path, every decode run
is there (and on CUDA its kernel runs launched kernels, its PyTorch runs none), every
graph-captured row has its eager row and on CUDA was captured (no graph inductor declined to
capture), every training row has a time. The report says per part what it exercised. After
each part the report is rewritten, so a budget that runs out leaves what finished. The output
folder gets at most five files: report.md (ready to paste into BENCHMARKS.md §9),
results.json (every figure), decode.png (float32 decode time and cache memory), log.txt (every
part's output).

    python -m s2s.bench.gpu_check OUT [--budget 480] [--dry-run]

`--dry-run`: the same parts at tiny sizes on the CPU under TRITON_INTERPRET=1, in a minute or two
(the test suite runs it, so the command cannot rot while no GPU is lent): the kernel benchmark
runs the kernels interpreted against the PyTorch path, the decode and training benchmarks run
on the CPU, and `pytest -m gpu` collects the GPU tests, which skip without CUDA: that part says
"skipped on CPU", not "ok". The exit status is 0 when every part is "ok" (or, in the dry run,
"skipped on CPU").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_BUDGET_S = 600
MIN_PART_S = 10
DECODE_RUNS = ("mha:naive", "mla", "mtla:2", "mtla:3", "mtla:4")
CAPTURED_RUNS = ("mha", "mtla:2")  # lean engine: eager, then compiled and graph-captured
TRAIN_VARIANTS = ("mha", "mtla:2")
SKIPPED_ON_CPU = "skipped on CPU"


class Unproven(Exception):
    """A part exited 0, but its output does not show that it did what it is for."""


@dataclass
class Part:
    """One step of the check: a command line (`{json}` / `{xml}` / `{plot}` stand for files it
    writes), its weight in the budget, the check of what it wrote (VERIFY), and what it
    produced."""

    name: str
    argv: list[str]
    weight: float
    kind: str  # a key of VERIFY
    expect: list = field(default_factory=list)  # what its rows must cover (decode, train)
    status: str = "not run"
    exercised: str = ""
    seconds: float = 0.0
    results: object = None
    files: dict[str, str] = field(default_factory=dict)


def gpu_test_files() -> list[str]:
    """The test files that hold GPU tests (the other files need packages a GPU machine may
    lack, and `-m gpu` would deselect all their tests anyway)."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if "pytest.mark.gpu" in p.read_text()
    )


def parts(dry_run: bool) -> list[Part]:
    """The check's parts in order; the dry run's at tiny sizes on the CPU."""
    py = [sys.executable, "-m"]
    if dry_run:  # kernels.bench runs the kernels interpreted on the CPU (TRITON_INTERPRET=1)
        kb = ["--device", "cpu", "--batch", "1", "--beam", "2", "--slots", "16"]
        prefixes = [8]
        dec = ["--size", "tiny", "--batch", "1", "--beam", "2", "--steps", "2"]
        dec += ["--repeats", "1", "--device", "cpu"]
        tr = ["--size", "tiny", "--batch", "2", "--frames", "64", "--tokens", "5"]
        tr += ["--repeats", "1", "--device", "cpu"]
        # one variant: compiling takes most of a minute on the CPU even at the tiny size
        cap = ["--size", "tiny", "--batch", "1", "--beam", "2", "--steps", "2", "--repeats", "1"]
        cap += ["--device", "cpu", "--prefix", "8", "--runs", CAPTURED_RUNS[-1]]
    else:
        kb, tr = [], []
        prefixes = [100, 300]
        dec = ["--size", "paper", "--batch", "4", "--beam", "50", "--steps", "60"]
        dec += ["--repeats", "2", "--device", "cuda"]
        cap = ["--size", "paper", "--batch", "4", "--beam", "10", "--steps", "60"]
        cap += ["--repeats", "2", "--device", "cuda", "--prefix", "100", "300"]
        cap += ["--runs", *CAPTURED_RUNS]
    dec += ["--prefix", *map(str, prefixes)]
    decode = [*py, "s2s.bench.decode", *dec, "--runs", *DECODE_RUNS, "--kernels", "both"]
    runs = [(run + path, p) for run in decode_labels() for path in ("", " torch") for p in prefixes]
    train = [*py, "s2s.bench.train_step", *tr, "--variants", *TRAIN_VARIANTS, "--amp"]
    gpu_tests = [*py, "pytest", "-m", "gpu", "-q", "--junit-xml={xml}", *gpu_test_files()]
    todo = [Part("pytest -m gpu", gpu_tests, 0.15, "gpu tests")]
    for dtype in ("float32", "bfloat16"):
        argv = [*py, "kernels.bench", *kb, "--dtype", dtype, "--json", "{json}"]
        todo.append(Part(f"kernels {dtype}", argv, 0.1, "kernels"))
    for dtype, plot in (("float32", ["--plot", "{plot}"]), ("bfloat16", [])):
        argv = [*decode, "--dtype", dtype, "--json", "{json}", *plot]
        todo.append(Part(f"decode {dtype}", argv, 0.22, "decode", expect=runs))
    captured = [*py, "s2s.bench.decode", *cap, "--compile", "--compile-mode", "reduce-overhead"]
    argv = [*captured, "--json", "{json}"]
    todo.append(Part("decode graph-captured", argv, 0.25, "captured"))
    argv = [*train, "--json", "{json}"]
    todo.append(Part("train step bf16 autocast", argv, 0.3, "train step", list(TRAIN_VARIANTS)))
    argv = [*train, "--compile", "--json", "{json}"]
    todo.append(Part("train step bf16 compiled", argv, 0.2, "train step", list(TRAIN_VARIANTS)))
    return todo


def decode_labels() -> list[str]:
    """The decode benchmark's names of DECODE_RUNS ("mha naive", "mtla s=2 lean", ...)."""
    from s2s.bench.decode import label, parse_run

    return [f"{label(n, s)} {engine}" for n, s, engine in map(parse_run, DECODE_RUNS)]


def read_junit(path: Path) -> dict[str, int]:
    """pytest's JUnit XML -> the counts of tests, passed, failures, errors, skipped."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    n["skipped"] = sum(int(s.get("skipped", 0)) for s in suites)
    n["passed"] = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return n


def verify_gpu_tests(part: Part, dry_run: bool) -> tuple[str, str]:
    r = part.results
    if not r["tests"]:
        raise Unproven("no GPU test collected")
    if r["failures"] or r["errors"]:
        raise Unproven(f"{r['failures']} failed and {r['errors']} errors of {r['tests']}")
    if dry_run:
        if r["skipped"] != r["tests"]:
            raise Unproven(f"{r['passed']} of {r['tests']} GPU tests passed without CUDA")
        return SKIPPED_ON_CPU, f"{r['tests']} GPU tests collected, each skipped without CUDA"
    if r["passed"] != r["tests"]:
        raise Unproven(f"{r['skipped']} of {r['tests']} GPU tests skipped")
    return "ok", f"{r['tests']} GPU tests passed"


def verify_kernels(part: Part, dry_run: bool) -> tuple[str, str]:
    rows = part.results["rows"]
    if not rows:
        raise Unproven("no rows")
    if idle := [r for r in rows if not r["kernel_launches"]]:
        raise Unproven(f"{len(idle)} of {len(rows)} rows launched no kernel")
    tol = 1e-5 if rows[0]["dtype"] == "float32" else 1e-2
    worst = max(r["rel_err"] for r in rows)
    if not worst <= tol:  # NaN too
        raise Unproven(f"a kernel is {worst:.1e} off the PyTorch path (> {tol:g})")
    how = (
        "interpreted on the CPU, tiny sizes (times are no speed)"
        if dry_run
        else f"up to {max(r['copy_fraction'] for r in rows):.0%} of the copy bandwidth"
    )
    return "ok", f"{len(rows)} rows, each launched its kernel, {worst:.0e} from PyTorch; {how}"


def verify_decode(part: Part, dry_run: bool) -> tuple[str, str]:
    rows = part.results
    have = {(r["run"], r["prefix"]) for r in rows}
    if missing := [f"{run} at {p}" for run, p in part.expect if (run, p) not in have]:
        raise Unproven(f"missing runs: {', '.join(missing)}")
    if empty := [r["run"] for r in rows if not (r["decode_s"] > 0 and r["peak_cache_mib"] > 0)]:
        raise Unproven(f"no time or no cache for {', '.join(empty)}")
    kernel_rows = [r for r in rows if not r["run"].endswith(" torch")]
    launches = [r["kernel_launches"] for r in kernel_rows]
    if any(r["kernel_launches"] for r in rows if r["run"].endswith(" torch")):
        raise Unproven("a PyTorch-path run launched kernels")
    runs = f"{len(rows)} runs ({len(kernel_rows)} kernels on, the same off)"
    if dry_run:
        return "ok", f"{runs}, tiny, on the CPU: the PyTorch path (the search runs kernels on CUDA)"
    if not all(launches):
        raise Unproven(f"{launches.count(0)} runs with kernels on launched none")
    return "ok", f"{runs}; kernels on: {min(launches)}-{max(launches)} launches per search"


def verify_captured(part: Part, dry_run: bool) -> tuple[str, str]:
    from s2s.bench.decode import COMPILED_LABEL

    suffix = COMPILED_LABEL["reduce-overhead"]
    rows = part.results
    eager = {(r["run"], r["prefix"]): r for r in rows if not r["compiled"]}
    captured = [r for r in rows if r["compiled"]]
    if not captured:
        raise Unproven("no graph-captured run")
    ratios = []
    for r in captured:
        if r["compile_mode"] != "reduce-overhead":
            raise Unproven(f"{r['run']}: compiled without CUDA graphs ({r['compile_mode']})")
        base = eager.get((r["run"].removesuffix(suffix), r["prefix"]))
        if base is None:
            raise Unproven(f"{r['run']} at {r['prefix']}: no eager run beside it")
        if not (r["decode_s"] > 0 and base["decode_s"] > 0):
            raise Unproven(f"{r['run']} at {r['prefix']}: no time")
        name = r["run"].removesuffix(" lean" + suffix)
        ratios.append(f"{name} at {r['prefix']}: {base['decode_s'] / r['decode_s']:.2f}x")
    speedups = ", ".join(ratios)
    compile_s = ", ".join(f"{r['compile_s']:.0f}" for r in captured)
    if dry_run:  # inductor captures no CUDA graph on the CPU: every compiled graph is a skip
        return "ok", f"eager and compiled on the CPU (no CUDA graph to capture): {speedups}"
    if skipped := [r["run"] for r in captured if r["cudagraph_skips"]]:
        raise Unproven(f"inductor did not capture CUDA graphs for {', '.join(skipped)}")
    return "ok", f"captured against eager: {speedups} (compile s: {compile_s})"


def verify_train_step(part: Part, dry_run: bool) -> tuple[str, str]:
    rows = {r["variant"]: r for r in part.results}
    if sorted(rows) != sorted(part.expect):
        raise Unproven(f"rows for {sorted(rows)}, wanted {sorted(part.expect)}")
    if slow := [v for v, r in rows.items() if not 0 < r["step_s"] < float("inf")]:
        raise Unproven(f"no step time for {', '.join(slow)}")
    times = ", ".join(f"{v} {1e3 * r['step_s']:.0f} ms" for v, r in rows.items())
    where = "tiny model on the CPU" if dry_run else "paper-sized model"
    how = "bf16 autocast"
    if "--compile" in part.argv:
        first = ", ".join(f"{v} {r['first_step_s']:.0f} s" for v, r in rows.items())
        how += f", compiled (first step, compiling: {first})"
    return "ok", f"{times} per step, {how}, {where}"


#: Part.kind -> (the part, dry run?) -> (status, what it exercised); raises Unproven
VERIFY: dict[str, Callable[[Part, bool], tuple[str, str]]] = {
    "gpu tests": verify_gpu_tests,
    "kernels": verify_kernels,
    "decode": verify_decode,
    "captured": verify_captured,
    "train step": verify_train_step,
}


def run_part(
    part: Part, timeout: float, env: dict, work: Path, out: Path, log, dry_run: bool
) -> None:
    """Run one part with its timeout, its output appended to the log, its results read back
    and verified."""
    stem = work / part.name.replace(" ", "_")
    js, xml, png = stem.with_suffix(".json"), stem.with_suffix(".xml"), out / "decode.png"
    files = {"{json}": js, "{xml}": xml, "{plot}": png}
    argv = []
    for a in part.argv:
        for key, path in files.items():
            a = a.replace(key, str(path))
        argv.append(a)
    log.write(f"\n## {part.name}: {' '.join(argv)}\n")
    log.flush()
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
        ).returncode
        part.status = "ran" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        part.status = f"timed out after {timeout:.0f} s"
    part.seconds = time.perf_counter() - t0
    if js.exists():
        part.results = json.loads(js.read_text())
    elif xml.exists():
        part.results = read_junit(xml)
    if any("{plot}" in a for a in part.argv) and png.exists():
        part.files["plot"] = png.name
    if part.status != "ran":
        return
    try:
        if part.results is None:
            raise Unproven("it wrote no results")
        part.status, part.exercised = VERIFY[part.kind](part, dry_run)
    except Unproven as e:
        part.status = f"failed: {e}"
    log.write(f"## {part.name}: {part.status}; {part.exercised}\n")


def table(rows: list[dict]) -> str:
    """A markdown table of the rows' plain fields (numbers rounded to 4 significant digits)."""
    if not rows:
        return "(no rows)"
    cols = [k for k, v in rows[0].items() if isinstance(v, (str, int, float)) or v is None]

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def device_name(dry_run: bool) -> str:
    if dry_run:
        return f"CPU (dry run, TRITON_INTERPRET=1): {platform.processor() or platform.machine()}"
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"


def write_report(out: Path, all_parts: list[Part], head: dict) -> None:
    """report.md and results.json from what has finished so far."""
    md = [
        f"### GPU check, {head['date']}, {head['device']}",
        "",
        f"`python -m s2s.bench.gpu_check` (budget {head['budget_s']:.0f} s); Python "
        f"{head['python']}, torch {head['torch']}, triton {head['triton']}.",
        "",
        "| part | status | seconds | what it exercised |",
        "|---|---|---|---|",
    ]
    md += [f"| {p.name} | {p.status} | {p.seconds:.0f} | {p.exercised} |" for p in all_parts]
    for p in all_parts:
        if p.results is None or p.kind == "gpu tests":  # its counts are in `exercised`
            continue
        rows = p.results["rows"] if isinstance(p.results, dict) else p.results
        md += ["", f"#### {p.name}", ""]
        if isinstance(p.results, dict) and "copy_gb_per_s" in p.results:
            md += [f"device-to-device copy: {p.results['copy_gb_per_s']:.0f} GB/s", ""]
        md.append(table(rows))
        if "plot" in p.files:
            md += ["", f"![decode]({p.files['plot']})"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    data = {
        **head,
        "parts": [
            {k: v for k, v in vars(p).items() if k not in ("argv", "expect")}
            | {"command": " ".join(p.argv)}
            for p in all_parts
        ],
    }
    (out / "results.json").write_text(json.dumps(data, indent=2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", help="output folder (created; its report files are replaced)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds in all (at most 600)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, interpreted")
    args = p.parse_args(argv)
    budget = min(args.budget, MAX_BUDGET_S)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.dry_run:
        env["TRITON_INTERPRET"] = "1"
    import torch
    import triton

    head = {
        "date": time.strftime("%Y-%m-%d"),
        "device": device_name(args.dry_run),
        "budget_s": budget,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "dry_run": args.dry_run,
    }
    todo = parts(args.dry_run)
    write_report(out, todo, head)
    total, done = sum(p.weight for p in todo), 0.0
    with tempfile.TemporaryDirectory() as work, open(out / "log.txt", "w") as log:
        for part in todo:
            done += part.weight
            elapsed = time.perf_counter() - start
            left = budget - elapsed
            if left < MIN_PART_S:
                part.status = "skipped: budget spent"
                write_report(out, todo, head)
                continue
            timeout = min(left, max(budget * done / total - elapsed, MIN_PART_S))
            run_part(part, timeout, env, Path(work), out, log, args.dry_run)
            write_report(out, todo, head)
            print(f"{part.name}: {part.status} ({part.seconds:.0f} s)", flush=True)
    print(f"report: {out / 'report.md'}")
    passed = {"ok", SKIPPED_ON_CPU} if args.dry_run else {"ok"}
    return 0 if all(p.status in passed for p in todo) else 1


if __name__ == "__main__":
    raise SystemExit(main())
