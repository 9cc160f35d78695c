"""Reading "utt text" files keyed by utterance id, and the text normalisation the metrics use.

A hyp/ref file holds one utterance per line: the utterance id, whitespace, then the text. A line
with the id only is an empty text (an empty hypothesis is scored as empty, not dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jiwer

# "lc.rm": lowercase, remove punctuation (every Unicode character of a category P*, as
# jiwer.RemovePunctuation defines it, so "don't" -> "dont"), collapse runs of spaces and strip.
LC_RM = jiwer.Compose(
    [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()]
)
LC_RM_DESCRIPTION = (
    "lowercase, remove punctuation (Unicode categories P*, jiwer.RemovePunctuation), "
    "collapse whitespace, strip"
)


def lc_rm(texts: list[str]) -> list[str]:
    """Apply the "lc.rm" normalisation (see LC_RM_DESCRIPTION) to every text."""
    return [LC_RM(t) for t in texts]


class ScoringInputError(ValueError):
    """A malformed hyp/ref file or hyp and ref files over different utterances."""


def read_keyed_text(path: str | Path) -> dict[str, str]:
    """Read an "utt text" file into utt -> text (text stripped; "" for an id-only line).

    Raises ScoringInputError naming file:line for a blank line or a repeated utterance id.
    """
    path = Path(path)
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                raise ScoringInputError(f"{path}:{n}: empty line (expected 'utt text')")
            utt = parts[0]
            if utt in out:
                raise ScoringInputError(f"{path}:{n}: utterance {utt!r} appears twice")
            out[utt] = parts[1] if len(parts) > 1 else ""
    return out


def _some(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def load_pairs(
    hyp_path: str | Path, ref_path: str | Path
) -> tuple[list[str], list[str], list[str]]:
    """Read hyp and ref files -> (utt_ids sorted, hyps, refs), aligned by utterance id.

    Both files must cover the same utterances; otherwise ScoringInputError names the ids missing
    from each side.
    """
    hyp, ref = read_keyed_text(hyp_path), read_keyed_text(ref_path)
    no_hyp = sorted(ref.keys() - hyp.keys())
    no_ref = sorted(hyp.keys() - ref.keys())
    if no_hyp or no_ref:
        problems = []
        if no_hyp:
            problems.append(f"{hyp_path} lacks {len(no_hyp)} ids of {ref_path}: {_some(no_hyp)}")
        if no_ref:
            problems.append(f"{ref_path} lacks {len(no_ref)} ids of {hyp_path}: {_some(no_ref)}")
        raise ScoringInputError("; ".join(problems))
    utts = sorted(ref)
    if not utts:
        raise ScoringInputError(f"{ref_path}: no utterances to score")
    return utts, [hyp[u] for u in utts], [ref[u] for u in utts]


@dataclass(frozen=True)
class Score:
    """What a metric function returns: values in percent and how each was computed.

    values: score key (e.g. "bleu", "bleu_lc.rm") -> value; normalisation: score key -> text.
    """

    values: dict[str, float]
    normalisation: dict[str, str] = field(default_factory=dict)
