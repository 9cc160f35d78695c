"""Robustness evaluation: a test set decoded as the same speech arrives in other ways.

Any experiment, any data dir with audio. Each condition changes every utterance's waveform
one way and decodes the set (beam search as s2s-decode does, in length-sorted batches):

- onset: the speech starts later, behind N ms of near-silence (white noise at ``--floor``
  amplitude, about -70 dBFS: a quiet room, as between long_audio's utterances);
- level: the waveform scaled by G dB (clipped at full scale);
- SNR: white noise added at S dB over the utterance's power (as the synthesiser adds it).

Each condition is a scene the utterance is recorded in (s2s.synth.scene.render).

It reports the score of each condition against the references, and the **onset invariance**:
the share of utterances whose best hypothesis is the same at every onset as at 0 ms. Since that
share cannot exceed how often the model is right, it also reports the steadiness measured
against accuracy: of the outputs **exactly right at 0 ms** (the reference, lc.rm-normalised),
the share that stay exactly right at every other onset (and, per condition, the share still
right in it); and the **score spread**, the largest
distance of an onset's or a level's score from the score at 0 ms. Then the **long
recording**: the utterances joined into one file with ``--gap`` s pauses, decoded as
s2s-decode decodes a long file (voice-activity segments); its output is resegmented onto the
utterances' references by minimum word edit distance (s2s.metrics.resegment, as the IWSLT
evaluations score talks) and scored like the utterances decoded alone; and the share of
utterances that come back as exactly one segment whose text is the utterance's own alone
(``long_audio`` measures the segmentation itself in more detail).

    python -m s2s.evaluate.robustness --model exp/NAME --data data/test [--limit 200]
        [--onsets 0 30 100 300 600] [--levels -20 -10 6] [--snrs 20 10 5] [--gap 0.6]
        [--metric bleu] [--json out.json] [decode.ctc_weight=0.3 ...]

Trailing key=value arguments override the experiment's decoding settings (``decode.ctc_weight=0.3``
for joint CTC/attention decoding, ``decode.beam_size=10``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from s2s.data.audio import load_utterance
from s2s.data.datadir import load_datadir
from s2s.data.tokenizer import normalize_text
from s2s.decode.inference import Speech2Text
from s2s.evaluate.long_audio import segment_contents
from s2s.metrics import compute
from s2s.metrics.resegment import resegment
from s2s.metrics.text import lc_rm
from s2s.synth.scene import Scene, join_with_pauses, render

FLOOR = 3e-4  # amplitude of the "silence" in front and between: about -70 dBFS


def with_onset(wave: Tensor, ms: float, sample_rate: int, floor: float, seed: int) -> Tensor:
    """(N,) -> (N + ms of near-silence in front,) samples."""
    lead_s = round(ms * sample_rate / 1000) / sample_rate  # whole samples
    scene = Scene(lead_s=lead_s, peak=None, floor=floor)
    return render(wave, scene, sample_rate, torch.Generator().manual_seed(seed))


def with_level(wave: Tensor, gain_db: float, sample_rate: int) -> Tensor:
    scene = Scene(peak=None, gain_db=gain_db)
    return render(wave, scene, sample_rate, torch.Generator())  # draws nothing


def with_snr(wave: Tensor, snr_db: float, sample_rate: int, seed: int) -> Tensor:
    scene = Scene(peak=None, noise="white", snr_db=snr_db, noise_scale="expected")
    return render(wave, scene, sample_rate, torch.Generator().manual_seed(seed))


def onset_invariance(hyps: Sequence[Sequence[str]]) -> float:
    """hyps[k][i]: utterance i's hypothesis at the k-th onset (k = 0 the reference onset) ->
    the share of utterances whose hypothesis is the same at every onset."""
    if not hyps or not hyps[0]:
        raise ValueError("no hypotheses")
    n = len(hyps[0])
    if any(len(h) != n for h in hyps):
        raise ValueError("every onset needs one hypothesis per utterance")
    same = sum(all(h[i] == hyps[0][i] for h in hyps[1:]) for i in range(n))
    return same / n


def right_and_kept(hyps: Sequence[Sequence[str]], refs: Sequence[str]) -> tuple[int, float]:
    """hyps[k][i]: utterance i's hypothesis at the k-th onset (k = 0 the reference onset) ->
    (how many are exactly right at k = 0, the share of those exactly right at every onset);
    "exactly right" compares lc.rm-normalised texts. The share is 0 when none is right."""
    refs_n = lc_rm(list(refs))
    right = [i for i, h in enumerate(lc_rm(list(hyps[0]))) if h == refs_n[i]]
    if not right:
        return 0, 0.0
    at = [lc_rm([h[i] for i in right]) for h in hyps[1:]]
    kept = sum(all(a[n] == refs_n[i] for a in at) for n, i in enumerate(right))
    return len(right), kept / len(right)


def segments_matching(
    texts: Sequence[str], contents: Sequence[Sequence[int]], alone: Sequence[str]
) -> float:
    """The share of utterances (alone[i]: utterance i decoded alone) that lie in exactly one
    segment, holding no other utterance, whose text (texts[j], contents[j]: the utterances
    segment j overlaps) is that of the utterance alone."""
    matched = set()
    owners = [c[0] for c in contents if len(c) == 1]
    for text, c in zip(texts, contents):
        if len(c) == 1 and owners.count(c[0]) == 1 and text == alone[c[0]]:
            matched.add(c[0])
    return len(matched) / len(alone)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s2s.evaluate.robustness", description=__doc__)
    p.add_argument("--model", required=True, help="experiment directory or s2s-pack file")
    p.add_argument("--data", required=True, help="a data dir with audio")
    p.add_argument("--limit", type=int, default=0, help="first N utterances (0: all)")
    p.add_argument("--onsets", type=float, nargs="+", default=[0, 30, 100, 300, 600])
    p.add_argument("--levels", type=float, nargs="*", default=[-20, -10, 6], help="gain, dB")
    p.add_argument("--snrs", type=float, nargs="*", default=[20, 10, 5], help="white noise, dB")
    p.add_argument("--floor", type=float, default=FLOOR, help="amplitude of the silence")
    p.add_argument("--gap", type=float, default=0.6, help="pause in the long recording, s")
    p.add_argument("--metric", default="", help="default: the recipe's first metric")
    p.add_argument("--json", type=Path, help="write every figure and hypothesis here")
    p.add_argument("overrides", nargs="*", help="decoding settings, decode.key=value")
    args = p.parse_args(argv)
    if not args.onsets or args.onsets[0] != 0:
        p.error("--onsets must start at 0 (the reference for the invariance)")

    s2t = Speech2Text.from_pretrained(args.model, decode_overrides=args.overrides)
    sr = s2t.sample_rate
    dd = load_datadir(args.data)
    utts = dd.utt_ids[: args.limit] if args.limit else dd.utt_ids
    field, norm = s2t.cfg.data.target_field, s2t.cfg.data.normalize
    refs = [normalize_text(dd.text(u, field), norm) for u in utts]
    waves = [load_utterance(dd, u, target_sr=sr) for u in utts]
    # the recipe's first metric (recipes pass theirs to the training monitor), else BLEU
    metric = args.metric or next(iter(s2t.cfg.train.monitor.metrics), "bleu")

    def decode(ws: Sequence[Tensor]) -> list[str]:
        feats = [s2t.model_features(w, u) for u, w in zip(utts, ws)]
        return [nb[0].text for nb in s2t.decode_batched(feats)]

    conditions: dict[str, list[Tensor]] = {}
    for ms in args.onsets:
        conditions[f"onset {ms:g} ms"] = [
            with_onset(w, ms, sr, args.floor, i) if ms else w for i, w in enumerate(waves)
        ]
    for db in args.levels:
        conditions[f"level {db:+g} dB"] = [with_level(w, db, sr) for w in waves]
    for db in args.snrs:
        conditions[f"snr {db:g} dB"] = [with_snr(w, db, sr, i) for i, w in enumerate(waves)]

    rows: dict[str, dict] = {}
    for name, ws in conditions.items():
        t = time.perf_counter()
        hyps = decode(ws)
        score = compute([metric], hyps, refs).values[metric]
        rows[name] = {metric: score, "seconds": time.perf_counter() - t, "hyps": hyps}
    onset_names = [f"onset {ms:g} ms" for ms in args.onsets]
    alone = rows[onset_names[0]]["hyps"]
    invariance = onset_invariance([rows[n]["hyps"] for n in onset_names])
    n_right, kept_right = right_and_kept([rows[n]["hyps"] for n in onset_names], refs)
    base = rows[onset_names[0]][metric]
    moved = [n for n in rows if n.startswith(("onset", "level"))]
    spread = max(abs(rows[n][metric] - base) for n in moved)

    recording, spans = join_with_pauses(waves, round(args.gap * sr), args.floor, sr)
    segments = s2t.transcribe(recording, sr)
    texts = [s.text for s in segments]
    matching = segments_matching(texts, segment_contents(segments, spans, sr), alone)
    long_hyps = resegment(texts, refs)
    long_score = compute([metric], long_hyps, refs).values[metric]

    print(" ".join([f"{args.model} on {len(utts)} utterances of {args.data}", *args.overrides]))
    print(f"| condition | {metric} | same as at 0 ms | right at 0 ms, still right |")
    print("|---|---:|---:|---:|")
    for name, row in rows.items():
        same = sum(a == b for a, b in zip(row["hyps"], alone)) / len(alone)
        # condition by condition, where the steadiness goes: which onsets lose right outputs
        row["same_as_onset_0"] = same
        row["right_kept"] = right_and_kept([alone, row["hyps"]], refs)[1]
        print(
            f"| {name} | {row[metric]:.1f} | {100 * same:.1f}% | {100 * row['right_kept']:.1f}% |"
        )
    onsets = ", ".join(f"{ms:g}" for ms in args.onsets)
    print(f"onset invariance (the same output at every onset {onsets} ms): {100 * invariance:.1f}%")
    print(
        f"exactly right at 0 ms: {n_right} of {len(utts)}; of those, right at every onset: "
        f"{100 * kept_right:.1f}%"
    )
    print(f"{metric} spread over onsets and levels: {spread:.2f} (at 0 ms: {base:.2f})")
    print(
        f"long recording ({recording.numel() / sr / 60:.1f} min, {args.gap:g} s pauses): "
        f"{len(segments)} segments for {len(utts)} utterances; {metric} resegmented "
        f"{long_score:.2f} against {base:.2f} alone; decoded as alone: {100 * matching:.1f}%"
    )
    if args.json:
        report = {
            "model": str(args.model),
            "data": str(args.data),
            "decode_overrides": args.overrides,
            "utterances": utts,
            "metric": metric,
            "conditions": rows,
            "onset_invariance": invariance,
            "right_at_onset_0": n_right,
            "right_kept_at_every_onset": kept_right,
            "spread": spread,
            "long_recording": {
                "segments": len(segments),
                "matching": matching,
                "texts": texts,
                metric: long_score,
                "resegmented": long_hyps,
            },
        }
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
