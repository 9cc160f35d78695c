"""ROUGE-1/2/L F1 through rouge-score (Porter stemmer), averaged over documents, in percent.

rouge-score's own tokenizer lowercases and keeps only [a-z0-9] tokens, so no other
normalisation is applied. ROUGE-L is the sentence-level LCS variant ("rougeL", not "rougeLsum").
"""

from __future__ import annotations

from collections.abc import Sequence

from s2s.metrics.text import Score

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Mean over documents of each type's F1 x 100; an empty hypothesis scores 0."""
    # Imported here: rouge-score pulls in nltk (seconds), which BLEU/WER users never need.
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hyps, refs, strict=True):
        scores = scorer.score(ref, hyp)  # (target, prediction)
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    n = max(len(hyps), 1)
    note = "rouge-score F1, use_stemmer=True, its tokenizer (lowercase, [a-z0-9] tokens)"
    return Score({t: 100.0 * totals[t] / n for t in ROUGE_TYPES}, dict.fromkeys(ROUGE_TYPES, note))
