"""s2s-score: score a decode dir (or bare hyp/ref files) and keep RESULTS.md up to date.

    s2s-score --decode-dir exp/NAME/decode_SET --metrics bleu,chrf,wer
    s2s-score --decode-dir D --metrics wer,cer --results RESULTS.md --exp NAME --set SET \
        [--decode beam5_beam_size2]
    s2s-score --hyp hyp.txt --ref ref.txt --metrics bleu [--format auto|keyed|plain] [--out F]
    s2s-score --hyp talk.txt --ref talk.ref --metrics bleu,chrf,wer --resegment [--write-hyp F]

A decode dir's hyp.txt/ref.txt hold "utt text" lines (keyed) over the same utterances. Bare
--hyp/--ref files may be keyed or plain (one sentence per line, aligned by line number, as
sacrebleu and fairseq write them); --format auto (the default) detects which and says so on
stderr (s2s.metrics.text.detect_format). A decode dir gets
D/score.json = {metrics, normalisation, efficiency (D/stats.json), n_utterances}. Metrics:
bleu, chrf (sacrebleu; raw and "lc.rm"), wer, cer (jiwer; lowercase, punctuation removed,
whitespace collapsed), rouge (rouge-score, stemmed F1), accuracy (SLU intent + transcript WER).
All values are percentages. One summary line goes to stdout.

--resegment scores a long recording's output as the IWSLT evaluations do (mwerSegmenter): the
hypothesis file is one stream of words, in lines of any segmentation (plain lines, or
s2s-decode's "<file>\t<start>\t<end>\t<text>" lines of a long file), split onto the reference's
sentences (plain, or keyed with --format keyed) by minimum word edit distance
(s2s.metrics.resegment); --write-hyp saves the resegmented hypotheses, one per reference line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from s2s.metrics.text import FORMATS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2s-score", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--decode-dir", help="a decode dir with hyp.txt, ref.txt[, stats.json]")
    p.add_argument("--hyp", help="hypothesis file (with --ref, instead of --decode-dir)")
    p.add_argument("--ref", help="reference file")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="--hyp/--ref layout: keyed 'utt text' lines, plain sentences, or auto-detect",
    )
    p.add_argument("--metrics", required=True, help="comma-separated: bleu,chrf,wer,cer,...")
    p.add_argument("--out", help="where to write score.json (default: DECODE_DIR/score.json)")
    p.add_argument("--results", help="RESULTS.md to update (needs --exp and --set)")
    p.add_argument("--exp", help="experiment name for RESULTS.md")
    p.add_argument("--set", dest="test_set", help="test set name for RESULTS.md")
    p.add_argument(
        "--decode",
        help="the decoding settings' name for RESULTS.md (default: the decode dir's name)",
    )
    p.add_argument(
        "--resegment",
        action="store_true",
        help="--hyp is a long-form output: split it onto --ref's sentences by minimum WER",
    )
    p.add_argument("--write-hyp", help="with --resegment: the resegmented hypotheses, one a line")
    return p


def read_stream(path: Path) -> list[str]:
    """A long-form output's text lines: plain lines, or s2s-decode's tab-separated lines of a
    long file (the text is the last field)."""
    return [line.split("\t")[-1] for line in path.read_text(encoding="utf-8").splitlines()]


def load_resegmented(hyp_path: Path, ref_path: Path, fmt: str):
    """(hyp, ref) ScoringInput-like pairs: --ref's sentences and the --hyp stream split onto
    them."""
    from s2s.metrics.resegment import resegment
    from s2s.metrics.text import ScoringInput, read_keyed_text, read_plain_text

    if fmt == "keyed":
        keyed = read_keyed_text(ref_path)
        utts, refs = list(keyed), list(keyed.values())
    else:
        refs = read_plain_text(ref_path)
        utts = [str(i + 1) for i in range(len(refs))]
    if not refs:
        raise ValueError(f"{ref_path}: no reference sentences to resegment onto")
    hyps = resegment(read_stream(hyp_path), refs)
    return ScoringInput(utts=utts, hyps=hyps, refs=refs, format=fmt)


def _error(msg: str) -> int:
    print(f"s2s-score: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.decode_dir) == bool(args.hyp or args.ref):
        return _error("give --decode-dir, or --hyp and --ref (not both)")
    if not args.decode_dir and not (args.hyp and args.ref):
        return _error("--hyp and --ref go together")
    if args.results and not (args.exp and args.test_set):
        return _error("--results needs --exp and --set")
    if args.resegment and args.decode_dir:
        return _error("--resegment takes --hyp and --ref (a long-form output), not a decode dir")
    if args.write_hyp and not args.resegment:
        return _error("--write-hyp goes with --resegment")

    from s2s.metrics import compute, parse_metric_names
    from s2s.metrics.results import update_results
    from s2s.metrics.text import load_scoring_input

    try:
        names = parse_metric_names(args.metrics)
    except ValueError as e:
        return _error(str(e))

    efficiency: dict = {}
    if args.decode_dir:
        d = Path(args.decode_dir)
        hyp_path, ref_path = d / "hyp.txt", d / "ref.txt"
        if (d / "stats.json").is_file():
            efficiency = json.loads((d / "stats.json").read_text())
        out = Path(args.out) if args.out else d / "score.json"
        if args.format == "plain":
            return _error("a decode dir's files are keyed: --format plain is for --hyp/--ref")
        fmt = "keyed"
    else:
        hyp_path, ref_path = Path(args.hyp), Path(args.ref)
        out = Path(args.out) if args.out else None
        fmt = args.format
    for path in (hyp_path, ref_path):
        if not path.is_file():
            return _error(f"{path}: no such file")

    try:
        if args.resegment:
            pairs = load_resegmented(hyp_path, ref_path, "keyed" if fmt == "keyed" else "plain")
        else:
            pairs = load_scoring_input(hyp_path, ref_path, fmt)
    except ValueError as e:
        return _error(str(e))
    utts = pairs.utts
    if args.resegment:
        print(
            f"s2s-score: {hyp_path} resegmented onto the {len(utts)} sentences of {ref_path} "
            "(minimum word edit distance)",
            file=sys.stderr,
        )
        if args.write_hyp:
            Path(args.write_hyp).write_text("".join(h + "\n" for h in pairs.hyps), encoding="utf-8")
    elif not args.decode_dir:
        layout = {
            "keyed": "keyed 'utt text' lines, aligned by utterance id",
            "plain": "plain sentences, one per line, aligned by line number",
        }[pairs.format]
        how = "detected" if args.format == "auto" else "as asked"
        print(f"s2s-score: {hyp_path}, {ref_path}: {layout} ({how})", file=sys.stderr)
    score = compute(names, pairs.hyps, pairs.refs)
    result = {
        "metrics": score.values,
        "normalisation": score.normalisation,
        "efficiency": efficiency,
        "format": pairs.format,
        "n_utterances": len(utts),
        "resegmented": args.resegment,
        "hyp": str(hyp_path),
        "ref": str(ref_path),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if args.results:
        decode = args.decode or (Path(args.decode_dir).name if args.decode_dir else "")
        update_results(
            args.results, args.exp, args.test_set, score.values, efficiency, decode=decode
        )

    label = args.decode_dir or str(hyp_path)
    values = " ".join(f"{k}={v:.2f}" for k, v in score.values.items())
    speed = (
        f" utt/s={efficiency['utterances_per_s']:.2f}" if "utterances_per_s" in efficiency else ""
    )
    print(f"{label}: n={len(utts)} {values}{speed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
