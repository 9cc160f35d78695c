"""Experiments of one recipe compared at several training budgets, from single runs that kept
every checkpoint (train.keep_last=0): BENCHMARKS.md §6, the prefix-arrangement study.

For each experiment and each budget of E epochs, the checkpoints of epochs <= E are ranked by
the experiment's own train.best_metric and its train.n_average best (or --n-average N) are
averaged (what stage 8 gives a run of E epochs: the inverse-sqrt schedule does not depend on
the run's length, so the first E epochs of a longer run are that run); the recipe's test set
is decoded with its decode YAML (stage 9) and scored with its metrics (stage 10). Prints one
markdown table (dev accuracy at E, BLEU/WER..., peak decode cache) and plots dev accuracy per
epoch.

    python -m s2s.evaluate.budget_table --recipe recipes/phrases/st1 --budgets 14 28 \\
        --plot docs/prefix_study.png exp/tiny_mha_prefix_authors exp/tiny_mtla_s2_prefix_authors

Decodes run on the CPU, one after the other; results go to <exp>/decode_<set>_<E>ep_<N>avg/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from s2s.train.checkpoint import checkpoint_metrics, list_checkpoints, load_checkpoint


def epochs_of(exp: Path) -> dict[int, tuple[Path, dict[str, float]]]:
    """{epoch: (checkpoint, its validation metrics)} for the end-of-epoch checkpoints."""
    metrics = checkpoint_metrics(exp / "checkpoints")
    out = {}
    for _, path in list_checkpoints(exp / "checkpoints"):
        state = load_checkpoint(path)
        if state["sampler"]["start"] == 0:  # written at an epoch's end
            out[int(state["epoch"])] = (path, metrics.get(path, {}))
    return out


def average_up_to(exp: Path, epochs: dict, budget: int, cfg) -> Path:
    from s2s.train.average import average_checkpoints

    """train.n_average best end-of-epoch checkpoints of epochs <= budget by train.best_metric
    (ties to the later one, as stage 8 ranks them), averaged into model_avg_<budget>ep.pt."""
    metric = cfg.best_metric
    pool = [(e, p, m) for e, (p, m) in epochs.items() if e <= budget and metric in m]
    sign = 1 if cfg.best_mode == "min" else -1
    best = sorted(pool, key=lambda t: (sign * t[2][metric], -t[0]))[: cfg.n_average]
    if not best:
        raise ValueError(f"{exp}: no checkpoint with {cfg.best_metric} up to epoch {budget}")
    out = exp / f"model_avg_{budget}ep_{cfg.n_average}.pt"
    if out.is_file():  # epochs <= budget never change once trained past it
        return out
    return average_checkpoints([p for _, p, _ in sorted(best)], out)


def decode_and_score(recipe: Path, exp: Path, weights: Path, budget: int, rcfg) -> dict:
    results = {}
    for name in rcfg.test_sets:
        out = exp / f"decode_{name}_{budget}ep_{weights.stem.rsplit('_', 1)[1]}avg"
        decode = [
            sys.executable, "-m", "s2s.cli.decode", "--model", str(exp), "--checkpoint",
            str(weights), "--data", str(recipe / "data" / f"{name}_filt"), "--out", str(out),
            "--decode-config", str(recipe / rcfg.decode_config), "--device", "cpu",
        ]  # fmt: skip
        if rcfg.source == "speech":
            decode += ["--dump", str(recipe / "dump" / name)]
        done = out / "score.json"
        if done.is_file() and done.stat().st_mtime > weights.stat().st_mtime:
            results[name] = _scores(out)  # decoded from these weights already
            continue
        subprocess.run(decode, check=True, stdout=subprocess.DEVNULL)
        score = [
            sys.executable, "-m", "s2s.cli.score", "--decode-dir", str(out),
            "--metrics", ",".join(rcfg.metrics),
        ]  # fmt: skip
        subprocess.run(score, check=True, stdout=subprocess.DEVNULL)
        results[name] = _scores(out)
    return results


def _scores(decode_dir: Path) -> dict:
    scores = json.loads((decode_dir / "score.json").read_text())
    peak = (scores.get("efficiency") or {}).get("peak_cache_mib")
    return {**scores["metrics"], "peak_cache_mib": peak}


def main(argv: list[str] | None = None) -> int:
    from s2s.experiment import load_experiment_config
    from s2s.recipe.config import load_recipe_config

    p = argparse.ArgumentParser(
        prog="budget_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", required=True, help="the recipe dir (data/, dump/, conf/)")
    p.add_argument("--budgets", type=int, nargs="+", required=True, help="epochs")
    p.add_argument("--plot", help="dev accuracy per epoch of every experiment (PNG)")
    p.add_argument("--json", help="every figure as JSON")
    p.add_argument(
        "--n-average", type=int, default=0, help="checkpoints averaged (0: train.n_average)"
    )
    p.add_argument("exps", nargs="+", help="experiment dirs (relative to --recipe or not)")
    args = p.parse_args(argv)
    recipe = Path(args.recipe)
    rcfg = load_recipe_config(recipe / "conf" / "recipe.yaml")
    rows, curves = [], {}
    for name in args.exps:
        exp = Path(name) if Path(name).is_dir() else recipe / name
        cfg = load_experiment_config([exp / "config.yaml"]).train
        if args.n_average:
            cfg.n_average = args.n_average
        epochs = epochs_of(exp)
        curves[exp.name] = {e: m.get("valid/acc") for e, (_, m) in sorted(epochs.items())}
        for budget in args.budgets:
            if max(epochs, default=0) < budget:
                print(
                    f"{exp.name}: trained {max(epochs, default=0)} epochs < {budget}: skipped",
                    file=sys.stderr,
                )
                continue
            weights = average_up_to(exp, epochs, budget, cfg)
            res = decode_and_score(recipe, exp, weights, budget, rcfg)
            rows.append(
                {
                    "exp": exp.name,
                    "epochs": budget,
                    "n_average": cfg.n_average,
                    "valid_acc": epochs[budget][1].get("valid/acc"),
                    "test": res,
                }
            )
    sets = rcfg.test_sets
    metrics = [k for k in rows[0]["test"][sets[0]] if k != "peak_cache_mib"] if rows else []
    head = [
        "experiment",
        "epochs",
        "averaged",
        "dev acc",
        *[f"{s} {m}" for s in sets for m in metrics],
        "peak cache MiB",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["exp"], str(r["epochs"]), str(r["n_average"]), f"{r['valid_acc']:.3f}"]
        cells += [f"{r['test'][s][m]:.1f}" for s in sets for m in metrics]
        cells.append(f"{r['test'][sets[0]]['peak_cache_mib']:.2f}")
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "dev_acc": curves}, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, curve in curves.items():
            ax.plot(list(curve), list(curve.values()), marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("dev token accuracy (teacher forcing)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
