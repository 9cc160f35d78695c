"""s2s-validate-data: check Kaldi-style data dirs and report every problem found.

    s2s-validate-data data/train data/dev           every problem, as <file>:<line>: <what>
    s2s-validate-data --max-per-kind 3 data/train   at most 3 problems of each kind per dir
    s2s-validate-data --no-check-audio data/train   skip the wav.scp audio-path check
    s2s-validate-data --audio data/train            also open every audio file's header

The rules are those of s2s.data.datadir (docs/data.md). Audio paths in wav.scp are relative to
the current directory, as in Kaldi: run it from where the recipe runs. --audio opens each
file's header (soundfile: rate, channels, length) and reports the audio recipe stage 3 would
stop at: files that cannot be read, hold no audio, or give fewer than --min-frames fbank
frames (recipe.yaml's filter.min_frames), and segments past the end of their recording.
Problems go to stderr, one line each, then a summary per dir; a valid dir gets one "OK" line on
stdout. Exit status: 0 when every dir is valid, 1 when any has a problem, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from s2s.data.audio_checks import audio_problems
from s2s.data.datadir import load_datadir, validate_datadir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s2s-validate-data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="data dirs (data/<set>)")
    p.add_argument(
        "--max-per-kind",
        type=int,
        default=10,
        metavar="N",
        help="print at most N problems of each kind per dir (0: all; default 10)",
    )
    p.add_argument(
        "--no-check-audio",
        dest="check_audio",
        action="store_false",
        help="do not check that the audio files of wav.scp exist",
    )
    p.add_argument(
        "--audio",
        action="store_true",
        help="also open every audio file's header: unreadable, empty or too short audio",
    )
    p.add_argument(
        "--min-frames",
        type=int,
        default=10,
        metavar="N",
        help="with --audio: fewer fbank frames than N is too short (default 10, the recipes')",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_per_kind < 0:
        print("s2s-validate-data: --max-per-kind must be >= 0", file=sys.stderr)
        return 2
    status = 0
    for d in args.dirs:
        problems = validate_datadir(d, check_audio=args.check_audio or args.audio)
        if args.audio and all(p.kind == "audio not found" for p in problems):  # it reads
            problems += audio_problems(d, min_frames=args.min_frames)
        if not problems:
            dd = load_datadir(d)
            kind = "text-only" if dd.text_only else "speech"
            texts = ", ".join(dd.texts) or "-"
            print(f"OK {d}: {len(dd)} utterances, {kind}, texts: {texts}")
            continue
        status = 1
        counts = Counter(p.kind for p in problems)
        shown: Counter[str] = Counter()
        for p in problems:
            shown[p.kind] += 1
            if args.max_per_kind == 0 or shown[p.kind] <= args.max_per_kind:
                print(f"ERROR {p.message}", file=sys.stderr)
        summary = ", ".join(f"{k}: {n}" for k, n in counts.items())
        hidden = sum(max(0, n - args.max_per_kind) for n in counts.values())
        more = (
            f"; {hidden} not shown (--max-per-kind 0 shows all)"
            if args.max_per_kind and hidden
            else ""
        )
        n = len(problems)
        print(f"{d}: {n} problem{'s' * (n > 1)} ({summary}){more}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
