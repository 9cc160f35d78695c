"""Scoring: BLEU/chrF (sacrebleu), WER/CER (jiwer), ROUGE (rouge-score), SLU intent accuracy.

METRICS maps a name (as given to s2s-score --metrics) to a function
(hyps: Sequence[str], refs: Sequence[str]) -> s2s.metrics.text.Score; compute() runs several.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from s2s.metrics.accuracy import accuracy
from s2s.metrics.bleu import bleu, chrf
from s2s.metrics.rouge import rouge
from s2s.metrics.text import Score
from s2s.metrics.wer import cer, wer

MetricFn = Callable[[Sequence[str], Sequence[str]], Score]

METRICS: dict[str, MetricFn] = {
    "bleu": bleu,
    "chrf": chrf,
    "wer": wer,
    "cer": cer,
    "rouge": rouge,
    "accuracy": accuracy,
}


def parse_metric_names(spec: str | Sequence[str]) -> list[str]:
    """Parse "bleu,chrf" or ["bleu", "chrf"] -> validated names; ValueError names unknown ones."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metrics {unknown or spec!r}: choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def compute(names: Sequence[str], hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Run each named metric on the aligned hyps/refs and merge their values."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    values: dict[str, float] = {}
    normalisation: dict[str, str] = {}
    for name in parse_metric_names(names):
        score = METRICS[name](hyps, refs)
        values |= score.values
        normalisation |= score.normalisation
    return Score(values, normalisation)
