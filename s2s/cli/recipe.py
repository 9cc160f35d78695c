"""The engine behind recipes/<corpus>/<task>1/run.sh (ESPnet flags).

    run.sh [--stage N] [--stop_stage M] [--ngpu G] [--nj J] [--attention NAME]
           [--stride S] [--arrangement cross|prefix|prompt] [--model_config F] [--train_config F]
           [--decode_config F] [--tag T] [--init_param SRC:SRC_KEY:DST_KEY[:EXCLUDE] ...]
           [--use_lm true|false] [--lm_config F] [--skip_bad_audio true|false]
           [--config F ...] [--num_nodes N --node_rank R --master_addr H [--master_port P]]
           [--rdzv_endpoint HOST:PORT] [--max_restarts K] [key=value ...]

--attention NAME: any registered variant (mha, mqa, gqa, mla, mtla, mfa, mfa_kr, mlra, gla,
gta; docs/attention.md), read from conf/attention/NAME.yaml.
Stages: 0 download, 1 data prep, 2 speed perturbation, 3 feature dump, 4 filtering,
5 tokenizer, 6 CMVN statistics, 7 train (the LM first, when the recipe has one), 8 average,
9 decode, 10 score into RESULTS.md.
--config F (repeatable): a YAML of experiment settings applied over the recipe's own, its
conf/recipe.yaml overrides included (e.g. st1's conf/authors_prefix.yaml: the MTLA authors'
training). Trailing key=value pairs override the experiment config (OmegaConf dot-list);
decode.* ones also reach stage 9, after the decode YAML, and name its decode dirs.
--init_param (ESPnet's, repeatable) starts the model from part of another experiment, e.g.
`../asr1/exp/tiny_mtla_s2_cross:encoder:encoder` (a relative source is relative to the recipe
dir); the experiment is then named with the tag "init" unless --tag names it.
Stage 3 reads every utterance and lists every one whose audio is unreadable or too short, then
stops; --skip_bad_audio true (recipe.yaml: skip_bad_audio) leaves them out instead, listed in
dump/<set>/bad_utts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from s2s.attention import VARIANTS
from s2s.models.decoder import ARRANGEMENTS
from s2s.recipe import processes
from s2s.recipe.config import STAGES, load_recipe_config
from s2s.recipe.stages import Recipe, RunOptions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--recipe-dir", default=".", help="the recipe directory (run.sh sets it)")
    p.add_argument("--stage", type=int, default=0)
    p.add_argument("--stop_stage", "--stop-stage", type=int, default=max(STAGES))
    p.add_argument("--ngpu", type=int, default=0)
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--attention", default="", choices=["", *VARIANTS])
    p.add_argument("--stride", type=int, default=0)
    p.add_argument("--arrangement", default="", choices=["", *ARRANGEMENTS])
    p.add_argument("--model_config", "--model-config", default="")
    p.add_argument("--train_config", "--train-config", default="")
    p.add_argument("--decode_config", "--decode-config", default="")
    p.add_argument("--tag", default="")
    p.add_argument("--init_param", "--init-param", action="append", default=[])
    p.add_argument("--use_lm", "--use-lm", default="true", choices=["true", "false"])
    p.add_argument("--lm_config", "--lm-config", default="")
    p.add_argument(
        "--skip_bad_audio", "--skip-bad-audio", default="", choices=["", "true", "false"]
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        help="an experiment YAML (model/data/train/decode sections) applied over the recipe's "
        "settings, recipe.yaml's overrides included, and before key=value (repeatable)",
    )
    dist = p.add_argument_group("training across machines (passed to torchrun)")
    dist.add_argument("--num_nodes", "--num-nodes", type=int, default=1)
    dist.add_argument("--node_rank", "--node-rank", type=int, default=0)
    dist.add_argument("--master_addr", "--master-addr", default="")
    dist.add_argument("--master_port", "--master-port", type=int, default=29500)
    dist.add_argument(
        "--rdzv_endpoint", "--rdzv-endpoint", default="", help="HOST:PORT of a c10d rendezvous"
    )
    dist.add_argument(
        "--max_restarts", "--max-restarts", type=int, default=0,
        help="restart the workers this many times after a failure (training resumes)",
    )  # fmt: skip
    p.add_argument("overrides", nargs="*", help="experiment config overrides, key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    root = Path(args.recipe_dir)
    try:
        cfg = load_recipe_config(root / "conf" / "recipe.yaml")
    except ValueError as e:
        print(f"run.sh: {e}", file=sys.stderr)
        return 2
    try:
        opts = _options(root, args)
    except ValueError as e:
        print(f"run.sh: {e}", file=sys.stderr)
        return 2
    try:
        with processes.ended_with_parent():  # a `kill` of run.sh ends its stage's process too
            Recipe(cfg, opts).run()
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        return 1
    return 0


def _options(root: Path, args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        recipe_dir=root,
        stage=args.stage,
        stop_stage=args.stop_stage,
        ngpu=args.ngpu,
        nj=args.nj,
        attention=args.attention,
        stride=args.stride,
        arrangement=args.arrangement,
        model_config=args.model_config,
        train_config=args.train_config,
        decode_config=args.decode_config,
        tag=args.tag,
        init_param=args.init_param,
        use_lm=args.use_lm == "true",
        lm_config=args.lm_config,
        skip_bad_audio={"": None, "true": True, "false": False}[args.skip_bad_audio],
        configs=args.config,
        overrides=args.overrides,
        num_nodes=args.num_nodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port,
        rdzv_endpoint=args.rdzv_endpoint,
        max_restarts=args.max_restarts,
    )


if __name__ == "__main__":
    raise SystemExit(main())
