"""Scoring: BLEU/chrF (sacrebleu), WER/CER (jiwer), ROUGE (rouge-score), SLU intent accuracy.

METRICS maps a name (as given to s2s-score --metrics) to the module of s2s.metrics whose
function of that name, (hyps: Sequence[str], refs: Sequence[str]) -> s2s.metrics.text.Score,
computes it; compute() runs several. Naming and validating metrics imports no scorer: the
experiment config checks `train.monitor.metrics` on machines that have none (jiwer, rouge-score
are not on the GPU image, whose training-step benchmark only builds the config), and a scorer
is imported when its metric is first computed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s2s.metrics.text import Score

MetricFn = Callable[[Sequence[str], Sequence[str]], "Score"]

METRICS: dict[str, str] = {
    "bleu": "bleu",
    "chrf": "bleu",
    "wer": "wer",
    "cer": "wer",
    "rouge": "rouge",
    "accuracy": "accuracy",
}


def metric_fn(name: str) -> MetricFn:
    """The function that computes metric `name` (its scorer imported now)."""
    return getattr(importlib.import_module(f"s2s.metrics.{METRICS[name]}"), name)


def parse_metric_names(spec: str | Sequence[str]) -> list[str]:
    """Parse "bleu,chrf" or ["bleu", "chrf"] -> validated names; ValueError names unknown ones."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metrics {unknown or spec!r}: choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def compute(names: Sequence[str], hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Run each named metric on the aligned hyps/refs and merge their values."""
    from s2s.metrics.text import Score

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    values: dict[str, float] = {}
    normalisation: dict[str, str] = {}
    for name in parse_metric_names(names):
        score = metric_fn(name)(hyps, refs)
        values |= score.values
        normalisation |= score.normalisation
    return Score(values, normalisation)
