"""s2s-decode: decode audio files, text files or a whole data dir with a trained experiment.

    s2s-decode --model exp/NAME a.wav b.flac          one line per file: "<file>\\t<text>"
    s2s-decode --model NAME.tar.gz a.wav              a model packed by s2s-pack
    s2s-decode --model NAME_onnx --backend onnxruntime a.wav    a bundle written by s2s-export
    s2s-decode --model exp/NAME talk.wav              a long file: one line per speech segment,
                                                      "<file>\\t<start>\\t<end>\\t<text>" (seconds)
    s2s-decode --model exp/NAME --format srt talk.wav > talk.srt     subtitles (or vtt)
    s2s-decode --model exp/NAME --format json a.wav   one JSON object per file, with the n-best
    s2s-decode --model exp/NAME --text docs.txt       summarisation: one output line per line
    s2s-decode --model exp/NAME --data data/test --out exp/NAME/decode_test [--dump dump/test]
    s2s-decode --model exp/NAME --decode-config conf/decode/beam5.yaml a.wav decode.beam_size=2

Decode settings: the experiment's config.yaml, then --decode-config, then --beam/--nbest and
decode.KEY=VALUE arguments, the later winning. --data writes them to OUT/decode.yaml.

Long recordings: a file longer than --max-segment seconds (default 20; --segment on: every
file) is split by voice activity detection (s2s.data.vad: energy on the fbank frames, pauses of
--min-silence s) into segments of at most --max-segment s, decoded in batches; --segment off
feeds it whole. --format json then prints one object per segment (with "start" and "end");
srt and vtt always segment and take one file.

Many files are decoded in batches of similar lengths, as --data decodes a data dir (one output
line per file still, in the order given; a long file keeps its segmenting). A file that cannot
be read, or is too short or too long for the model, is reported in one line on stderr (the file
and why) and the others are still decoded; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from s2s.data.vad import VadConfig


def build_parser() -> argparse.ArgumentParser:
    from s2s.decode.inference import BATCH_FRAMES, ENCODE_FRAMES

    p = argparse.ArgumentParser(
        prog="s2s-decode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", required=True, help="experiment directory (exp/<name>) or s2s-pack file"
    )
    p.add_argument(
        "files",
        nargs="*",
        help="audio files (any sample rate, mono or stereo) and decode.KEY=VALUE settings",
    )
    p.add_argument("--text", help="a text file, one source document per line")
    p.add_argument("--data", help="a data dir to decode (with --out)")
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="with --data: decode only shard K of N (utterances K-1, K-1+N, ...; recipe stage 9 "
        "runs N of them side by side and merges them)",
    )
    p.add_argument("--dump", help="the data dir's feature dump (else features come from audio)")
    p.add_argument("--out", help="output directory for --data")
    p.add_argument("--format", choices=["text", "json", "srt", "vtt"], default="text")
    p.add_argument(
        "--segment",
        choices=["auto", "on", "off"],
        default="auto",
        help="split audio into speech segments: auto = files longer than --max-segment",
    )
    p.add_argument("--max-segment", type=float, default=VadConfig.max_segment_s, metavar="S")
    p.add_argument("--min-silence", type=float, default=VadConfig.min_silence_s, metavar="S")
    p.add_argument(
        "--segment-pad",
        type=float,
        default=VadConfig.pad_s,
        metavar="S",
        help="pause kept around each segment (0 for a model trained on tightly cut utterances)",
    )
    p.add_argument("--decode-config", help="YAML with a decode: section (conf/decode/*.yaml)")
    p.add_argument("--beam", type=int, help="beam size (overrides the config)")
    p.add_argument("--nbest", type=int, help="hypotheses per input (overrides the config)")
    p.add_argument("--checkpoint", default="", help="weights to load instead of model_avg.pt")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-kernels",
        action="store_true",
        help="decode with the PyTorch path on CUDA too (same as decode.kernels=false)",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnxruntime"],
        default="auto",
        help="onnxruntime: an ONNX bundle written by s2s-export (auto: bundles run on it)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads of PyTorch or onnxruntime (0: their defaults; a tiny model decodes "
        "fastest on onnxruntime with 1, BENCHMARKS.md §13)",
    )
    p.add_argument(
        "--batch-frames",
        type=int,
        default=BATCH_FRAMES,
        help=f"padded input frames searched together (the encoder takes {ENCODE_FRAMES} at most)",
    )
    return p


# A positional KEY=VALUE argument is a setting, not a file (./a=b.wav names such a file).
SETTING = re.compile(r"[A-Za-z_][\w.]*=")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    settings = [a for a in args.files if SETTING.match(a)]
    args.files = [a for a in args.files if not SETTING.match(a)]
    modes = [bool(args.files), bool(args.text), bool(args.data)]
    if sum(modes) != 1:
        print(
            "s2s-decode: give audio files, --text FILE or --data DIR (exactly one)", file=sys.stderr
        )
        return 2
    if args.format in ("srt", "vtt") and (not args.files or len(args.files) > 1):
        print(f"s2s-decode: --format {args.format} takes one audio file", file=sys.stderr)
        return 2
    if args.data and not args.out:
        print("s2s-decode: --data needs --out", file=sys.stderr)
        return 2
    shard = None
    if args.shard:
        m = re.fullmatch(r"(\d+)/(\d+)", args.shard)
        if not args.data or m is None or not 1 <= int(m[1]) <= int(m[2]):
            print("s2s-decode: --shard K/N (1 <= K <= N) goes with --data", file=sys.stderr)
            return 2
        shard = (int(m[1]), int(m[2]))
    from s2s.decode.inference import Speech2Text

    if args.threads < 0:
        print("s2s-decode: --threads must be >= 0", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    overrides = [f"decode.beam_size={args.beam}"] if args.beam else []
    if args.nbest:
        overrides.append(f"decode.nbest={args.nbest}")
    if args.no_kernels:
        overrides.append("decode.kernels=false")
    overrides += settings
    try:
        s2t = Speech2Text.from_pretrained(
            args.model,
            device=args.device,
            checkpoint=args.checkpoint,
            decode_config=args.decode_config,
            decode_overrides=overrides,
            backend=args.backend,
            threads=args.threads,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"s2s-decode: {e}", file=sys.stderr)
        return 2

    from s2s.data.audio import AudioError

    if args.data:
        from s2s.decode.decode_dir import decode_datadir

        try:
            summary = decode_datadir(
                s2t, args.data, args.out, args.dump, args.batch_frames, shard=shard
            )
        except (AudioError, FileNotFoundError, ValueError) as e:  # a decode dir is all or nothing
            print(f"s2s-decode: {e}", file=sys.stderr)
            return 2
        print(
            f"{summary['utterances']} utterances, {summary['utterances_per_s']:.2f} utt/s, "
            f"{summary['tokens_per_s']:.1f} tokens/s -> {args.out}"
        )
        return 0

    if args.text:
        try:
            lines = Path(args.text).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            print(f"s2s-decode: cannot read {args.text}: {e}", file=sys.stderr)
            return 2
        for i, nbest in enumerate(s2t.decode_texts(lines), 1):
            emit(args.format, f"{args.text}:{i}", nbest)
        return 0

    try:
        vad = VadConfig(
            max_segment_s=args.max_segment,
            min_silence_s=args.min_silence,
            pad_s=args.segment_pad,
        )
    except ValueError as e:
        print(f"s2s-decode: {e}", file=sys.stderr)
        return 2
    failed = 0
    for path, segmented, result in decode_files(s2t, args, vad):
        if isinstance(result, AudioError):
            print(f"s2s-decode: {result}", file=sys.stderr)
            failed += 1
        elif segmented:
            emit_segments(args.format, path, result)
        else:
            emit(args.format, path, result)
    if failed:
        print(
            f"s2s-decode: {failed} of {len(args.files)} files could not be decoded", file=sys.stderr
        )
    return 1 if failed else 0


def decode_files(s2t, args: argparse.Namespace, vad: VadConfig) -> Iterator[tuple[str, bool, Any]]:
    """(file, segmented, its n-best list / its segments / the AudioError naming it) for each of
    args.files, in the order given. The files fed whole are decoded in batches of similar
    lengths as a data dir is (Speech2Text.iter_decode); a file longer than --max-segment
    (--segment auto), every file with --segment on or subtitles, is split by voice activity
    (Speech2Text.transcribe) when its turn comes."""
    from s2s.data.audio import AudioError, audio_duration

    segmented: list[bool | AudioError] = []
    for path in args.files:
        if args.segment == "on" or args.format in ("srt", "vtt"):
            segmented.append(True)
        elif args.segment == "off":
            segmented.append(False)
        else:
            try:
                segmented.append(audio_duration(path) > vad.max_segment_s)
            except AudioError as e:
                segmented.append(e)
    whole = [i for i, seg in enumerate(segmented) if seg is False]
    batches = s2t.iter_decode([args.files[i] for i in whole], batch_frames=args.batch_frames)
    done: dict[int, Any] = {}
    for i, (path, seg) in enumerate(zip(args.files, segmented)):
        if isinstance(seg, AudioError):
            yield path, False, seg
        elif seg:
            try:
                yield path, True, s2t.transcribe(path, vad=vad, batch_frames=args.batch_frames)
            except AudioError as e:
                yield path, True, e
        else:
            while i not in done:  # decode batches until this file's has been
                j, result = next(batches)
                done[whole[j]] = result
            yield path, False, done.pop(i)


def emit_segments(fmt: str, name: str, segments) -> None:
    """A long file's segments: text lines with start/end, JSON objects, or subtitles."""
    from s2s.decode.subtitles import to_srt, to_vtt

    if fmt in ("srt", "vtt"):
        print((to_srt if fmt == "srt" else to_vtt)(segments), end="")
    elif fmt == "json":
        for seg in segments:
            obj = _json(name, seg.nbest) | {"start": seg.start, "end": seg.end}
            print(json.dumps(obj, ensure_ascii=False))
    else:
        for seg in segments:
            print(f"{name}\t{seg.start:.2f}\t{seg.end:.2f}\t{seg.text}")
    sys.stdout.flush()


def _json(name: str, nbest) -> dict:
    return {
        "input": name,
        "text": nbest[0].text,
        "score": nbest[0].score,
        "nbest": [{"text": r.text, "score": r.score, "log_prob": r.log_prob} for r in nbest],
    }


def emit(fmt: str, name: str, nbest) -> None:
    if fmt == "json":
        print(json.dumps(_json(name, nbest), ensure_ascii=False))
    else:
        print(f"{name}\t{nbest[0].text}")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
