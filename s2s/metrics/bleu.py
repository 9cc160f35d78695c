"""Corpus BLEU and chrF through sacrebleu, on the raw text and after "lc.rm"."""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF

from s2s.metrics.text import LC_RM_DESCRIPTION, Score, lc_rm


def _sacrebleu(metric_cls, key: str, hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Score the raw texts (case-sensitive) and, as key_lc.rm, the lc.rm-normalised ones.

    lc.rm removes punctuation with our documented normaliser, then lets sacrebleu lowercase
    (lowercase=True), so its signature records the case handling.
    """
    raw = metric_cls()
    raw_score = raw.corpus_score(list(hyps), [list(refs)])
    lc = metric_cls(lowercase=True)
    lc_score = lc.corpus_score(lc_rm(list(hyps)), [lc_rm(list(refs))])
    return Score(
        values={key: raw_score.score, f"{key}_lc.rm": lc_score.score},
        normalisation={
            key: f"raw text, case-sensitive; sacrebleu {raw.get_signature()}",
            f"{key}_lc.rm": f"{LC_RM_DESCRIPTION}; sacrebleu {lc.get_signature()}",
        },
    )


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Corpus BLEU (sacrebleu defaults: 13a tokenizer, exp smoothing), one reference each."""
    return _sacrebleu(BLEU, "bleu", hyps, refs)


def chrf(hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Corpus chrF (sacrebleu defaults: char order 6, beta 2, no word n-grams)."""
    return _sacrebleu(CHRF, "chrf", hyps, refs)
