"""SLU intent accuracy: the "text.slu" target is "<intent> <transcript>".

The first whitespace token of hypothesis and reference is the intent label (compared exactly,
case-sensitive); an empty hypothesis has no intent and counts as wrong. The remainders are
scored with WER (the wer module's normalisation) as "transcript_wer".
"""

from __future__ import annotations

from collections.abc import Sequence

from s2s.metrics.text import LC_RM_DESCRIPTION, Score
from s2s.metrics.wer import word_error_rate


def split_intent(text: str) -> tuple[str, str]:
    """Split "<intent> <transcript>" -> (intent, transcript); ("", "") for an empty text."""
    parts = text.split(maxsplit=1)
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


def accuracy(hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Intent accuracy in percent and WER of the transcripts after the intent."""
    hyp_split = [split_intent(h) for h in hyps]
    ref_split = [split_intent(r) for r in refs]
    correct = sum(bool(r[0]) and h[0] == r[0] for h, r in zip(hyp_split, ref_split, strict=True))
    return Score(
        {
            "accuracy": 100.0 * correct / max(len(refs), 1),
            "transcript_wer": word_error_rate([h[1] for h in hyp_split], [r[1] for r in ref_split]),
        },
        {
            "accuracy": "first whitespace token of hyp vs ref (the intent), exact match",
            "transcript_wer": f"jiwer WER of the text after the intent; {LC_RM_DESCRIPTION}",
        },
    )
