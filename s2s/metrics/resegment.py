"""Minimum-edit-distance resegmentation of a long-form output onto reference segments, as the
IWSLT evaluations score speech translation of whole talks (mwerSegmenter: Matusov et al.,
"Evaluating machine translation output with automatic sentence segmentation", IWSLT 2005).

A system that decodes a long recording cuts it where it hears pauses, not where the reference
sentences end, so its segments cannot be scored against the reference sentence by sentence.
The hypothesis words, read as one stream, are split into as many segments as the reference
has, contiguously and in order, so that the summed word edit distance between each segment
and its reference sentence is smallest; BLEU, chrF and WER are then computed as for
utterances decoded one at a time.

That smallest sum is the word-level Levenshtein distance between the whole hypothesis stream
and the concatenated references: a split at hypothesis position b_k after reference sentence k
is an alignment path through the cell (b_k, end of sentence k), and any optimal path crosses
the column of every sentence end. So one dynamic programme over the two streams, traced back,
gives the split. Where the path runs down a sentence-end column (hypothesis words inserted
between two sentences), the extra words go to the earlier sentence, as a trailing insertion.

Words are matched case-insensitively and without punctuation (the lc.rm normalisation of
s2s.metrics.text); the segments returned keep the hypothesis's words as written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from s2s.metrics.text import lc_rm


def _ids(words: Sequence[str], vocab: dict[str, int]) -> np.ndarray:
    return np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.int64)


def edit_table(hyp: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Word Levenshtein table: D[j, i] = edit distance between hyp[:j] and ref[:i].
    hyp: (J,) and ref: (I,) word ids -> (J + 1, I + 1) int32. Each row from the one above in
    vectorised form: a deletion run along the row is a running minimum of D - i, plus i."""
    J, Ir = len(hyp), len(ref)
    D = np.empty((J + 1, Ir + 1), dtype=np.int32)
    cols = np.arange(Ir + 1, dtype=np.int32)
    D[0] = cols
    for j in range(1, J + 1):
        up = D[j - 1]
        row = np.empty(Ir + 1, dtype=np.int32)
        row[0] = j
        # insertion of hyp[j-1] (from above) or substitution / match (from the diagonal)
        row[1:] = np.minimum(up[1:] + 1, up[:-1] + (ref != hyp[j - 1]))
        # deletions of reference words along the row: row[i] = min_k<=i row[k] + (i - k)
        D[j] = np.minimum.accumulate(row - cols) + cols
    return D


def _units(text: str) -> tuple[list[str], list[str]]:
    """A text's words as (surface units, lc.rm keys): a word that normalises to nothing
    (punctuation alone) rides with the word before it (the one after, at the start)."""
    units: list[str] = []
    keys: list[str] = []
    pending = ""
    for word in text.split():
        key = lc_rm([word])[0]
        if not key:
            if units:
                units[-1] += " " + word
            else:
                pending = f"{pending} {word}".strip()
            continue
        units.append(f"{pending} {word}".strip())
        keys.append(key)
        pending = ""
    if pending:  # punctuation and nothing else
        units.append(pending)
        keys.append("")
    return units, keys


def resegment(hyp: Sequence[str] | str, refs: Sequence[str]) -> list[str]:
    """hyp: the long-form output (its segments in order, or one string); refs: the N
    reference sentences in order -> N hypothesis segments, segment k for refs[k] (an empty
    string where the alignment gives a sentence no word)."""
    if not refs:
        raise ValueError("resegmenting needs at least one reference segment")
    units, keys = _units(" ".join([hyp] if isinstance(hyp, str) else hyp))
    ref_words = [_units(ref)[1] for ref in refs]
    vocab: dict[str, int] = {}
    h = _ids(keys, vocab)
    r = _ids([w for s in ref_words for w in s], vocab)
    D = edit_table(h, r)
    ends = np.cumsum([len(s) for s in ref_words])  # column of each sentence's end
    # Trace back from the corner, noting the deepest row at which the path meets each
    # sentence-end column (moves preferred in the order diagonal, deletion, insertion).
    j, i = len(h), len(r)
    cut = {i: j}
    while j > 0 or i > 0:
        if j > 0 and i > 0 and D[j, i] == D[j - 1, i - 1] + (h[j - 1] != r[i - 1]):
            j, i = j - 1, i - 1
        elif i > 0 and D[j, i] == D[j, i - 1] + 1:
            i -= 1
        else:
            j -= 1
        cut.setdefault(i, j)
    bounds = [0, *(cut[int(e)] for e in ends)]
    bounds[-1] = len(units)
    return [" ".join(units[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def segmentation_errors(segments: Sequence[str], refs: Sequence[str]) -> int:
    """Summed word edit distance (lc.rm words) of segments[k] against refs[k]: what
    `resegment` minimises."""
    if len(segments) != len(refs):
        raise ValueError(f"{len(segments)} segments for {len(refs)} references")
    total = 0
    for seg, ref in zip(segments, refs):
        vocab: dict[str, int] = {}
        a, b = _ids(_units(seg)[1], vocab), _ids(_units(ref)[1], vocab)
        total += int(edit_table(a, b)[-1, -1])
    return total
