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
4. the training step of the paper-sized model (s2s.bench.train_step), mha and mtla, bf16
   autocast.
After each part the report is rewritten, so a budget that runs out leaves what finished. The
output folder gets at most five files: report.md (ready to paste into BENCHMARKS.md §9),
results.json (every figure), decode.png (float32 decode time and cache memory), log.txt (every
part's output).

    python -m s2s.bench.gpu_check OUT [--budget 480] [--dry-run]

`--dry-run`: the same parts at tiny sizes on the CPU under TRITON_INTERPRET=1, in seconds (the
test suite runs it, so the command cannot rot while no GPU is lent); the kernel benchmark,
which times CUDA events, only parses its command line there.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_BUDGET_S = 600
MIN_PART_S = 10
DECODE_RUNS = ("mha:naive", "mla", "mtla:2", "mtla:3", "mtla:4")


@dataclass
class Part:
    """One step of the check: a command line (`{json}` / `{plot}` stand for files it writes),
    its weight in the budget, and what it produced."""

    name: str
    argv: list[str]
    weight: float
    status: str = "not run"
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
    if dry_run:  # kernels.bench times CUDA events: on the CPU only its command line is checked
        kb = ["--help"]
        dec = ["--size", "tiny", "--batch", "1", "--beam", "2", "--prefix", "8", "--steps", "2"]
        dec += ["--repeats", "1", "--device", "cpu"]
        tr = ["--size", "tiny", "--batch", "2", "--frames", "64", "--tokens", "5"]
        tr += ["--repeats", "1", "--device", "cpu"]
    else:
        kb, tr = [], []
        dec = ["--size", "paper", "--batch", "4", "--beam", "50", "--prefix", "100", "300"]
        dec += ["--steps", "60", "--repeats", "2", "--device", "cuda"]
    decode = [*py, "s2s.bench.decode", *dec, "--runs", *DECODE_RUNS, "--kernels", "both"]
    return [
        Part("pytest -m gpu", [*py, "pytest", "-m", "gpu", "-q", *gpu_test_files()], 0.15),
        Part("kernels float32", [*py, "kernels.bench", *kb, "--json", "{json}"], 0.1),
        Part(
            "kernels bfloat16",
            [*py, "kernels.bench", *kb, "--dtype", "bfloat16", "--json", "{json}"],
            0.1,
        ),
        Part("decode float32", [*decode, "--json", "{json}", "--plot", "{plot}"], 0.22),
        Part("decode bfloat16", [*decode, "--dtype", "bfloat16", "--json", "{json}"], 0.22),
        Part(
            "train step bf16 autocast",
            [
                *py,
                "s2s.bench.train_step",
                *tr,
                "--variants",
                "mha",
                "mtla:2",
                "--amp",
                "--json",
                "{json}",
            ],
            0.3,
        ),
    ]


def run_part(part: Part, timeout: float, env: dict, work: Path, out: Path, log) -> None:
    """Run one part with its timeout, its output appended to the log, its JSON kept."""
    js, png = work / (part.name.replace(" ", "_") + ".json"), out / "decode.png"
    argv = [a.replace("{json}", str(js)).replace("{plot}", str(png)) for a in part.argv]
    log.write(f"\n## {part.name}: {' '.join(argv)}\n")
    log.flush()
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
        ).returncode
        part.status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        part.status = f"timed out after {timeout:.0f} s"
    part.seconds = time.perf_counter() - t0
    if js.exists():
        part.results = json.loads(js.read_text())
    if "{plot}" in part.argv and png.exists():
        part.files["plot"] = png.name


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
        f"`python -m s2s.bench.gpu_check` (budget {head['budget_s']:.0f} s); torch "
        f"{head['torch']}, triton {head['triton']}.",
        "",
        "| part | status | seconds |",
        "|---|---|---|",
    ]
    md += [f"| {p.name} | {p.status} | {p.seconds:.0f} |" for p in all_parts]
    for p in all_parts:
        if p.results is None:
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
            {k: v for k, v in vars(p).items() if k != "argv"} | {"command": " ".join(p.argv)}
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
            run_part(part, timeout, env, Path(work), out, log)
            write_report(out, todo, head)
            print(f"{part.name}: {part.status} ({part.seconds:.0f} s)", flush=True)
    print(f"report: {out / 'report.md'}")
    return 0 if all(p.status == "ok" for p in todo) else 1


if __name__ == "__main__":
    raise SystemExit(main())
