"""`make demo`: the embedded speech-translation recipe (recipes/phrases/st1) end to end on CPU
for MHA, MLA and MTLA, ending with one comparison table.

Stages 1-6 (synthesise the spoken-phrases corpus, features, filtering, tokenizer, CMVN) run once
and are shared; stages 7-8 (train, average) run per attention variant, the variants side by side
with the cores shared out among them (--jobs; one CPU thread each on a 2-core machine: three
single-thread trainings use two cores better than one two-thread training after another,
BENCHMARKS.md §26); stages 9-10 (decode, score) then run one variant at a time on all cores, so
the decoding speed in the table is measured alone. Every figure in the table is read from the
score.json that stage 10 wrote in this run.

The demo's experiments carry their own tag (exp/<name>_demo) and a marker file (.s2s_demo):
a rerun replaces an experiment only when the marker says the demo made it, so an experiment a
user trained, under any name, is never removed.

    python -m s2s.demo [--variants mha,mla,mtla] [--jobs J] [--nj N] [--recipe DIR] [--tag T]
        [key=value ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from s2s.recipe import processes
from s2s.recipe.config import load_recipe_config
from s2s.recipe.stages import Recipe, RunOptions
from s2s.threads import threads_per_job, usable_cores

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "recipes" / "phrases" / "st1"

# (header, where in score.json, format)
COLUMNS = (
    ("BLEU", ("metrics", "bleu"), "{:.1f}"),
    ("chrF", ("metrics", "chrf"), "{:.1f}"),
    ("WER(de) %", ("metrics", "wer"), "{:.1f}"),
    ("utt/s", ("efficiency", "utterances_per_s"), "{:.1f}"),
    ("cache B/token", ("efficiency", "cache_bytes_per_token"), "{:.0f}"),
    ("peak cache MiB", ("efficiency", "peak_cache_mib"), "{:.2f}"),
)


def _lookup(score: dict, path: tuple[str, ...]) -> float | None:
    node = score
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, int | float) else None


def format_table(rows: dict[str, dict], train_s: dict[str, float]) -> str:
    """Markdown table: one row per variant from its score.json."""
    headers = ["attention", *(c[0] for c in COLUMNS), "train min"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, score in rows.items():
        cells = [name]
        for _, path, fmt in COLUMNS:
            value = _lookup(score, path)
            cells.append("n/a" if value is None else fmt.format(value))
        cells.append(f"{train_s.get(name, 0.0) / 60:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


MARKER = ".s2s_demo"  # written into every experiment dir the demo creates


class NotDemoExperimentError(RuntimeError):
    """An experiment dir the demo would use exists and the demo did not create it."""


def check_ours(exp_dir: Path) -> None:
    """Raise NotDemoExperimentError when `exp_dir` exists without the demo's marker."""
    if exp_dir.exists() and not (exp_dir / MARKER).is_file():
        raise NotDemoExperimentError(
            f"{exp_dir} exists and was not created by the demo (no {MARKER} in it): "
            "leaving it untouched; rerun with another --tag"
        )


def claim_experiment(exp_dir: Path, fresh: bool = True) -> None:
    """Make `exp_dir` a demo experiment dir (holding the marker).

    With `fresh`, a previous demo run there (the marker says so) is removed first: the demo
    measures a fresh run, never a resumed one. A dir without the marker is left alone and
    refused, whatever `fresh` says."""
    check_ours(exp_dir)
    if exp_dir.exists():
        if not fresh:
            return
        logging.info("removing the previous demo run %s", exp_dir)
        shutil.rmtree(exp_dir)
    exp_dir.mkdir(parents=True)
    (exp_dir / MARKER).write_text("created by python -m s2s.demo; a rerun replaces it\n")


def _data_key(recipe_dir: Path) -> str:
    """Identifies the shared data stages' inputs: rerun them when recipe.yaml changes."""
    return hashlib.sha256((recipe_dir / "conf" / "recipe.yaml").read_bytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    # a `kill` or `timeout` of the demo ends its trainings too (s2s.recipe.processes)
    with processes.ended_with_parent():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m s2s.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    p.add_argument("--variants", default="mha,mla,mtla")
    p.add_argument("--nj", type=int, default=os.cpu_count() or 1, help="data stages' jobs")
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="trainings (stages 7-8) side by side, the cores shared out (0: every variant)",
    )
    p.add_argument("--train_config", default="", help="relative to the recipe dir")
    p.add_argument(
        "--tag", default="demo", help="suffix of the demo's experiment names (exp/<name>_TAG)"
    )
    p.add_argument("overrides", nargs="*", help="experiment config overrides, key=value")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    recipe_dir = args.recipe.resolve()
    cfg = load_recipe_config(recipe_dir / "conf" / "recipe.yaml")
    variants = [v for v in args.variants.split(",") if v]
    if args.jobs < 0:
        p.error(f"--jobs must be >= 0, got {args.jobs}")
    jobs = min(args.jobs or len(variants), len(variants))
    threads = threads_per_job(jobs, usable_cores())
    t0 = time.perf_counter()

    def variant_recipe(variant: str, stages: tuple[int, int], side_by_side: bool) -> Recipe:
        opts = RunOptions(
            recipe_dir=recipe_dir,
            stage=stages[0],
            stop_stage=stages[1],
            # one decoding process on all cores, not --nj shards (stage 9): the demo's decode
            # figures stay comparable from run to run
            nj=1,
            attention=variant,
            train_config=args.train_config,
            tag=args.tag,
            overrides=list(args.overrides),
        )
        if not side_by_side:
            return Recipe(cfg, opts)
        return Recipe(cfg, opts, env={"OMP_NUM_THREADS": str(threads)}, label=variant)

    trainings = {v: variant_recipe(v, (7, 8), jobs > 1) for v in variants}
    evaluations = {v: variant_recipe(v, (9, 10), False) for v in variants}
    data_recipe = Recipe(
        cfg,
        RunOptions(
            recipe_dir=recipe_dir, stage=1, stop_stage=6, nj=args.nj, tag=f"{args.tag}_data"
        ),
    )
    try:  # refuse before any work when a name is taken by something the demo did not make
        for r in [data_recipe, *trainings.values()]:
            check_ours(r.exp_dir)
    except NotDemoExperimentError as e:
        logging.error("%s", e)
        return 1

    stamp = recipe_dir / "data" / ".demo_data_ready"
    if stamp.is_file() and stamp.read_text().strip() == _data_key(recipe_dir):
        logging.info("stages 1-6 already done for this recipe.yaml (%s): reusing data/", stamp)
    else:
        # The data stages' logs go to an experiment dir of the demo's own too.
        claim_experiment(data_recipe.exp_dir, fresh=False)
        data_recipe.run()
        stamp.write_text(_data_key(recipe_dir) + "\n")
    data_s = time.perf_counter() - t0

    def train(variant: str) -> float:
        start = time.perf_counter()
        recipe = trainings[variant]
        claim_experiment(recipe.exp_dir)
        recipe.run()
        return time.perf_counter() - start

    if jobs > 1:
        logging.info(
            "training %s side by side, %d at a time, %d CPU thread(s) each",
            ", ".join(variants), jobs, threads,
        )  # fmt: skip
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {v: pool.submit(train, v) for v in variants}
    train_s: dict[str, float] = {}
    for variant, future in futures.items():
        try:
            train_s[variant] = future.result()
        except (RuntimeError, ValueError) as e:
            logging.error("%s failed: %s", variant, e)
    if len(train_s) < len(variants):
        return 1
    all_train_s = time.perf_counter() - start

    rows: dict[str, dict] = {}
    for variant, recipe in evaluations.items():
        try:
            recipe.run()
        except (RuntimeError, ValueError) as e:
            logging.error("%s failed: %s", variant, e)
            return 1
        rows[variant] = json.loads((recipe.decode_dir(cfg.test_sets[0]) / "score.json").read_text())
    eval_s = time.perf_counter() - start - all_train_s

    total = time.perf_counter() - t0
    print()
    print(f"s2s demo: {cfg.corpus} {cfg.task}, test set '{cfg.test_sets[0]}', measured in this run")
    print(format_table(rows, train_s))
    how = (
        f"{jobs} side by side, {threads} CPU thread(s) each"
        if jobs > 1
        else "one after another on all cores"
    )
    print(
        f"\n(train min = stages 7-8 per variant, {how}: {all_train_s / 60:.1f} min in all; "
        f"decoding and scoring {eval_s / 60:.1f} min, one variant at a time on all cores; "
        f"data stages {data_s / 60:.1f} min; total {total / 60:.1f} min; WER(de) = word error "
        "rate of the German output)"
    )
    exp_dirs = [r.exp_dir for r in evaluations.values()]
    print(
        f"Experiments: {', '.join(str(d.relative_to(recipe_dir)) for d in exp_dirs)} "
        f"under {recipe_dir.relative_to(REPO) if recipe_dir.is_relative_to(REPO) else recipe_dir}"
    )
    print(f"Watch training: tensorboard --logdir {recipe_dir / 'exp'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
