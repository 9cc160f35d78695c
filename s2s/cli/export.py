"""s2s-export: a trained experiment as a serving bundle (s2s/export/bundle.py says what is in it).

    s2s-export exp/NAME NAME_onnx                     encoder, decoder start and decoder step
                                                      as ONNX, tokenizer, CMVN, config, manifest
    s2s-export exp/NAME NAME_onnx --checkpoint exp/NAME/checkpoints/ckpt_000300.pt

Then: s2s-decode --model NAME_onnx --backend onnxruntime a.wav, or
Speech2Text.from_pretrained("NAME_onnx"). ONNX is the one format for now (--format onnx);
the graphs, their inputs and outputs are in docs/export.md. An existing OUT is replaced only
with --force. Needs the onnx extra (onnx, onnxscript, onnxruntime), which the lock holds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2s-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("exp_dir", help="experiment directory (exp/<name>)")
    p.add_argument("out", help="the bundle folder to write")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--checkpoint", default="", help="weights to export instead of model_avg.pt")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"s2s-export: {out} exists (--force replaces it)", file=sys.stderr)
        return 2
    try:
        from s2s.export.onnx_export import export_experiment
    except ImportError as e:
        print(f"s2s-export: needs the onnx extra ({e})", file=sys.stderr)
        return 2
    from s2s.export.bundle import BundleError, read_bundle

    # The exporter reports every step of its own progress; one summary line is ours to give.
    for name in ("torch.onnx", "onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_experiment(args.exp_dir, out, args.checkpoint, force=args.force)
        manifest = read_bundle(out)  # read back what was written, as a user would
    except BundleError as e:
        print(f"s2s-export: {e}", file=sys.stderr)
        return 2
    files = manifest["files"]
    size = sum(f["bytes"] for f in files.values()) / 2**20
    print(
        f"{args.exp_dir} -> {out} ({size:.1f} MiB, opset {manifest['opset']}): "
        + ", ".join(sorted(files))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
