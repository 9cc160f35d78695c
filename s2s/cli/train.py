"""s2s-train: train an experiment (resuming from its latest checkpoint), or average checkpoints.

    s2s-train --config conf/model/tiny.yaml --config conf/train/tiny_cpu.yaml \\
        --exp-dir exp/tiny data.train_dir=data/train ... train.lr=1e-3
    s2s-train --config a.yaml --exp-dir exp/x --print-config     # resolved YAML, then exit
    s2s-train --config exp/x/config.yaml --exp-dir exp/x --average-only   # -> exp/x/model_avg.pt
    torchrun --standalone --nproc_per_node=2 -m s2s.cli.train --config ... --exp-dir ...
    s2s-train --lm --config conf/lm/tiny.yaml --exp-dir exp/lm data.train_dir=... # an LM

--config files are merged in order, then the key=value overrides (an unknown key is an error).
Training writes exp/x/config.yaml, checkpoints/, tensorboard/ and logs/trainer.log; rerunning
the same command continues from the latest checkpoint. Ctrl-C or SIGTERM writes a checkpoint
and exits with status 130.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

log = logging.getLogger("s2s.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2s-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", action="append", default=[], help="YAML file (repeatable)")
    p.add_argument("--exp-dir", help="experiment directory (exp/<name>)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config")
    p.add_argument(
        "--lm",
        action="store_true",
        help="a target-side language model (experiment.LMExperimentConfig) for shallow fusion",
    )
    p.add_argument(
        "--average-only",
        action="store_true",
        help="average the checkpoints chosen by train.n_average/average_by into model_avg.pt",
    )
    p.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. train.lr=1e-3")
    return p


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def average_only(cfg, exp_dir: Path) -> Path:
    from s2s.train.average import average_checkpoints, select_checkpoints

    paths = select_checkpoints(exp_dir / "checkpoints", cfg.train)
    out = average_checkpoints(paths, exp_dir / "model_avg.pt")
    log.info("averaged %s -> %s", ", ".join(p.name for p in paths), out)
    return out


def train(cfg, exp_dir: Path, lm: bool = False, prepare_model=None) -> int:
    """Train (or resume) the experiment in exp_dir; prepare_model(model), when given, may
    change the freshly built model before training (s2s.bench.train_authors swaps modules)."""
    import torch
    from omegaconf import OmegaConf

    from s2s import experiment as X
    from s2s.models.lm import TransformerLM
    from s2s.train import distributed as D
    from s2s.train.monitor import TrainingMonitor
    from s2s.train.speed import resolve_amp
    from s2s.train.tb_logger import setup_text_log
    from s2s.train.trainer import Trainer, TrainingInterrupted

    info = D.env_info()
    device = D.resolve_device(cfg.train.device, info)
    D.init_distributed(device, info)
    try:
        setup_text_log(exp_dir / "logs" / "trainer.log", enabled=info.is_main)
        if info.is_main:
            cfg = X.prepare_exp_dir(cfg, exp_dir)
            X.save_experiment_config(cfg, exp_dir / "config.yaml")
        D.barrier()
        # Every rank reads what rank 0 prepared, as decoding will: the tokenizer and CMVN
        # paths in it are relative to exp_dir and resolve to its copies.
        schema = X.LMExperimentConfig if lm else X.ExperimentConfig
        cfg = X.load_experiment_config([exp_dir / "config.yaml"], schema=schema)
        seed_everything(cfg.train.seed)
        tokenizer = X.load_tokenizer(cfg.data.tokenizer)
        if lm:
            model = TransformerLM(cfg.lm, tokenizer.vocab_size)
            build_dataset, build_loader = X.build_lm_dataset, X.build_lm_loader
        else:
            model = X.build_model(cfg, tokenizer.vocab_size)
            if prepare_model is not None:
                prepare_model(model)
            build_dataset, build_loader = X.build_dataset, X.build_loader
        n_params = sum(p.numel() for p in model.parameters())
        log.info(
            "model: %.2fM parameters; device %s; world size %d; %d CPU threads",
            n_params / 1e6,
            device,
            info.world_size,
            torch.get_num_threads(),
        )
        train_set = build_dataset(cfg, "train", tokenizer, train=True)
        # amp: data.bucket_when=bf16 pads to the buckets only when the run computes in bf16
        amp = resolve_amp(cfg.train.amp, device)
        kw = {"rank": info.rank, "world_size": info.world_size, "amp": amp}
        train_loader = build_loader(cfg, train_set, shuffle=True, **kw)
        valid_loader = None
        if cfg.data.valid_dir:
            valid_set = build_dataset(cfg, "valid", tokenizer, train=False)
            valid_loader = build_loader(cfg, valid_set, shuffle=False, **kw)
        monitor = None
        if not lm and cfg.train.monitor.enabled:
            monitor = TrainingMonitor(cfg.train.monitor, tokenizer, valid_loader)
        trainer = Trainer(
            model,
            cfg.train,
            exp_dir,
            train_loader,
            valid_loader,
            device=device,
            dist_info=info,
            config=OmegaConf.to_container(X.to_dictconfig(cfg)),
            monitor=monitor,
        )
        try:
            metrics = trainer.fit()
        except TrainingInterrupted as e:
            log.warning("%s; rerun the same command to resume", e)
            return 130
        log.info("final validation: %s", metrics)
        D.cleanup(meet_first=True)
        return 0
    finally:
        D.cleanup()  # after an error (a normal end has torn down already: nothing to do)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from omegaconf import OmegaConf

    from s2s.experiment import (
        ExperimentConfig,
        LMExperimentConfig,
        load_experiment_config,
        to_dictconfig,
    )

    schema = LMExperimentConfig if args.lm else ExperimentConfig
    try:
        cfg = load_experiment_config(args.config, args.overrides, schema=schema)
    except ValueError as e:
        print(f"s2s-train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(OmegaConf.to_yaml(to_dictconfig(cfg)), end="")
        return 0
    if not args.exp_dir:
        print("s2s-train: --exp-dir is required", file=sys.stderr)
        return 2
    exp_dir = Path(args.exp_dir)
    if args.average_only:
        from s2s.train.tb_logger import setup_text_log

        setup_text_log(None)
        try:
            average_only(cfg, exp_dir)
        except (FileNotFoundError, ValueError) as e:
            print(f"s2s-train: {e}", file=sys.stderr)
            return 2
        return 0
    return train(cfg, exp_dir, lm=args.lm)


if __name__ == "__main__":
    sys.exit(main())
