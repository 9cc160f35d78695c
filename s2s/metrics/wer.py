"""Word and character error rates through jiwer, in percent.

Default normalisation (both sides): lowercase, remove punctuation (Unicode categories P*),
collapse whitespace, strip. CER counts characters including the single spaces between words.
An empty hypothesis is all deletions; an empty reference makes every hypothesis word an insertion.
"""

from __future__ import annotations

from collections.abc import Sequence

import jiwer

from s2s.metrics.text import LC_RM_DESCRIPTION, Score

WER_TRANSFORM = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)
CER_TRANSFORM = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfChars(),
    ]
)


def word_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """jiwer WER in percent, with WER_TRANSFORM on both sides."""
    return 100.0 * float(
        jiwer.wer(
            list(refs),
            list(hyps),
            reference_transform=WER_TRANSFORM,
            hypothesis_transform=WER_TRANSFORM,
        )
    )


def wer(hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Corpus WER (total edits / total reference words), percent."""
    return Score({"wer": word_error_rate(hyps, refs)}, {"wer": f"jiwer; {LC_RM_DESCRIPTION}"})


def cer(hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Corpus CER (total character edits / total reference characters), percent."""
    value = 100.0 * float(
        jiwer.cer(
            list(refs),
            list(hyps),
            reference_transform=CER_TRANSFORM,
            hypothesis_transform=CER_TRANSFORM,
        )
    )
    return Score({"cer": value}, {"cer": f"jiwer; {LC_RM_DESCRIPTION}; characters incl. spaces"})
