"""Train an experiment with the MTLA authors' attention module (PyPI `mtla` 0.3.2) in every
decoder layer in place of ours, everything else unchanged: same config, seed, data, trainer
and monitor, and the same initial weights (ours mapped onto theirs, s2s.bench.authors). It
answers whether a training behaviour of our MTLA is the method's or ours (BENCHMARKS.md §6).

    python -m s2s.bench.train_authors --config recipes/phrases/st1/exp/<x>/config.yaml \\
        --exp-dir recipes/phrases/st1/exp/<x>_authors train.monitor.metrics=[]

Prefix arrangement only, as their decoder is built; the run's checkpoints hold their module's
parameters, so they are for TensorBoard and the trainer log, not for s2s-decode (their
decoding needs equal frame counts in a batch: keep train.monitor.metrics empty).
"""

from __future__ import annotations

import sys
from pathlib import Path

from s2s.bench.authors import load_authors_mtla, use_authors_modules


def main(argv: list[str] | None = None) -> int:
    from s2s.cli.train import build_parser, train
    from s2s.experiment import load_experiment_config

    args = build_parser().parse_intermixed_args(argv)
    authors = load_authors_mtla()
    if authors is None:
        print(
            "train_authors: the `mtla` package is not installed (make test installs it)",
            file=sys.stderr,
        )
        return 2
    if not args.exp_dir:
        print("train_authors: --exp-dir is required", file=sys.stderr)
        return 2
    try:
        cfg = load_experiment_config(args.config, args.overrides)
    except ValueError as e:
        print(f"train_authors: {e}", file=sys.stderr)
        return 2
    if cfg.model.decoder.arrangement != "prefix":
        print("train_authors: their module trains in the prefix arrangement only", file=sys.stderr)
        return 2
    return train(cfg, Path(args.exp_dir), prepare_model=lambda m: use_authors_modules(m, authors))


if __name__ == "__main__":
    sys.exit(main())
