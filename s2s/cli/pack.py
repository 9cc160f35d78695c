"""s2s-pack: a trained experiment as one file to share (s2s/pack.py says what is in it).

    s2s-pack exp/NAME NAME.tar.gz                     config, averaged weights, tokenizer,
                                                      CMVN, README with the scores, manifest
    s2s-pack exp/NAME NAME.tar.gz --checkpoint exp/NAME/checkpoints/ckpt_000300.pt

Then: s2s-decode --model NAME.tar.gz a.wav, or Speech2Text.from_pretrained("NAME.tar.gz").
An existing OUT is replaced only with --force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2s-pack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("exp_dir", help="experiment directory (exp/<name>)")
    p.add_argument("out", help="the pack to write (.tar.gz)")
    p.add_argument("--checkpoint", default="", help="weights to pack instead of model_avg.pt")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if not out.name.endswith((".tar.gz", ".tgz")):
        print(f"s2s-pack: {out}: a pack is a .tar.gz (or .tgz) file", file=sys.stderr)
        return 2
    if out.exists() and not args.force:
        print(f"s2s-pack: {out} exists (--force replaces it)", file=sys.stderr)
        return 2
    from s2s.pack import PackError, pack_experiment, unpack_model

    try:
        pack_experiment(args.exp_dir, out, args.checkpoint)
    except PackError as e:
        print(f"s2s-pack: {e}", file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # read back what was written, as a user would
        files = sorted(p.name for p in unpack_model(out, tmp).iterdir())
    size = out.stat().st_size / 2**20
    print(f"{args.exp_dir} -> {out} ({size:.1f} MiB): {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
