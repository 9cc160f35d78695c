"""Long-recording evaluation: a test set's utterances joined into one recording with pauses,
decoded as s2s-decode decodes a long file (Speech2Text.transcribe: voice-activity segments in
batches), fed whole (what s2s-decode did before), and each utterance alone (the reference
point). Reports the segments against the known utterances and one document-level score per
way (the hypotheses joined, against the references joined).

    python -m s2s.evaluate.long_audio --model exp/NAME --data data/test [--limit 200]
        [--gap 1.0] [--noise 3e-4] [--pad 0] [--metric bleu] [--no-whole]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from s2s.data.audio import AudioError, load_utterance
from s2s.data.datadir import load_datadir
from s2s.data.tokenizer import normalize_text
from s2s.data.vad import VadConfig
from s2s.decode.inference import Segment, Speech2Text
from s2s.metrics import compute
from s2s.synth.scene import join_with_pauses


def segment_contents(
    segments: Sequence[Segment], spans: Sequence[tuple[int, int]], sample_rate: int
) -> list[list[int]]:
    """For each segment, the indices of the spans (utterances) it overlaps."""
    bounds = [(round(s.start * sample_rate), round(s.end * sample_rate)) for s in segments]
    return [[i for i, (a, b) in enumerate(spans) if a < e and s < b] for s, e in bounds]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s2s.evaluate.long_audio", description=__doc__)
    p.add_argument("--model", required=True, help="experiment directory or s2s-pack file")
    p.add_argument("--data", required=True, help="a data dir whose utterances are joined")
    p.add_argument("--limit", type=int, default=200, help="first N utterances (sorted ids)")
    p.add_argument("--gap", type=float, default=1.0, help="seconds of silence between them")
    p.add_argument(
        "--noise",
        type=float,
        default=3e-4,
        help="amplitude of the white noise in the pauses (3e-4: about -70 dBFS, a quiet room)",
    )
    p.add_argument("--pad", type=float, default=VadConfig.pad_s, help="VadConfig.pad_s")
    p.add_argument("--metric", default="bleu")
    p.add_argument("--no-whole", dest="whole", action="store_false")
    args = p.parse_args(argv)

    s2t = Speech2Text.from_pretrained(args.model)
    sr = s2t.sample_rate
    dd = load_datadir(args.data)
    utts = dd.utt_ids[: args.limit]
    field, norm = s2t.cfg.data.target_field, s2t.cfg.data.normalize
    refs = [normalize_text(dd.text(u, field), norm) for u in utts]
    waves = [load_utterance(dd, u, target_sr=sr) for u in utts]
    recording, spans = join_with_pauses(waves, int(args.gap * sr), args.noise, sr)

    def doc_score(texts: list[str]) -> float:
        return compute([args.metric], [" ".join(texts)], [" ".join(refs)]).values[args.metric]

    rows = {}
    t = time.perf_counter()
    alone = s2t.decode_batched([s2t.model_features(w, u) for u, w in zip(utts, waves)])
    rows["each utterance alone"] = (time.perf_counter() - t, len(utts), [n[0].text for n in alone])
    t = time.perf_counter()
    segments = s2t.transcribe(recording, sr, vad=VadConfig(pad_s=args.pad))
    rows["segmented (transcribe)"] = (
        time.perf_counter() - t,
        len(segments),
        [s.text for s in segments],
    )
    # A segment matches an utterance when it holds that utterance and no other.
    inside = segment_contents(segments, spans, sr)
    matched = sum(len(i) == 1 for i in inside) if len(segments) == len(utts) else 0
    if args.whole:
        t = time.perf_counter()
        try:
            whole = [s2t(recording, sr)[0].text]
        except AudioError as e:
            whole = [f"({e})"]
        rows["whole recording"] = (time.perf_counter() - t, 1, whole)

    minutes = recording.numel() / sr / 60
    print(
        f"{len(utts)} utterances of {args.data}, {minutes:.1f} min with {args.gap:g} s pauses "
        f"of noise at amplitude {args.noise:g}"
    )
    print(
        f"segments (pad {args.pad:g} s): {len(segments)}, each holding exactly one utterance: "
        f"{matched}"
    )
    print(f"| decoding | pieces | wall s | {args.metric} (document) |")
    print("|---|---:|---:|---:|")
    for name, (secs, n, texts) in rows.items():
        print(f"| {name} | {n} | {secs:.1f} | {doc_score(texts):.1f} |")
    print(json.dumps({k: v[2][:3] for k, v in rows.items()}, ensure_ascii=False)[:600])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
