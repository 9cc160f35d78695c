"""Reading hyp/ref files, and the text normalisation the metrics use.

Two layouts (FORMATS):
- keyed (Kaldi's): one utterance per line, the utterance id, whitespace, then the text; a line
  with the id only is an empty text (an empty hypothesis is scored as empty, not dropped).
  Hyp and ref are aligned by id. Decode dirs write this.
- plain (sacrebleu's and fairseq's): one sentence per line, hyp and ref aligned by line number;
  a blank line is an empty text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

LC_RM_DESCRIPTION = (
    "lowercase, remove punctuation (Unicode categories P*, jiwer.RemovePunctuation), "
    "collapse whitespace, strip"
)


@functools.cache
def _lc_rm_transform():
    """The "lc.rm" transform: lowercase, remove punctuation (every Unicode character of a
    category P*, as jiwer.RemovePunctuation defines it, so "don't" -> "dont"), collapse runs of
    spaces and strip. jiwer is imported here, not with the module: reading hyp/ref files and
    Score need no scorer."""
    import jiwer

    steps = [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces()]
    return jiwer.Compose([*steps, jiwer.Strip()])


def lc_rm(texts: list[str]) -> list[str]:
    """Apply the "lc.rm" normalisation (see LC_RM_DESCRIPTION) to every text."""
    transform = _lc_rm_transform()
    return [transform(t) for t in texts]


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


FORMATS = ("auto", "keyed", "plain")

# What makes a first token an utterance id rather than a word: Kaldi-style ids join speaker,
# recording and segment with "-" or "_" and number them.
_ID_LIKE = re.compile(r"[0-9_\-]")


@dataclass(frozen=True)
class ScoringInput:
    """Aligned hyps and refs and the layout they were read as (keyed | plain).
    utts: utterance ids (keyed, sorted) or line numbers "1".."N" (plain)."""

    format: str
    utts: list[str]
    hyps: list[str]
    refs: list[str]


def read_plain_text(path: str | Path) -> list[str]:
    """One sentence per line (stripped; a blank line is an empty text)."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _first_tokens(lines: list[str]) -> list[str] | None:
    """Each line's first token, or None when a line is blank or a first token repeats (the
    file cannot be keyed)."""
    firsts = [line.split(maxsplit=1)[0] for line in lines if line.strip()]
    if len(firsts) != len(lines) or len(set(firsts)) != len(firsts):
        return None
    return firsts


def detect_format(hyp_path: str | Path, ref_path: str | Path) -> str:
    """ "keyed" or "plain" for a hyp/ref pair.

    Keyed needs, in both files, no blank line and no repeated first token, and then either the
    same first tokens in a different order (aligned by id, not by line) or first tokens that
    all look like ids (hold a digit, "_" or "-"). Anything else is plain. Ambiguous pairs (one
    line each, say) are plain unless their first tokens look like ids: `--format` decides
    those."""
    hyp = _first_tokens(read_plain_text(hyp_path))
    ref = _first_tokens(read_plain_text(ref_path))
    if hyp is None or ref is None or not ref:
        return "plain"
    if set(hyp) == set(ref) and hyp != ref:
        return "keyed"
    return "keyed" if all(_ID_LIKE.search(t) for t in hyp + ref) else "plain"


def load_scoring_input(
    hyp_path: str | Path, ref_path: str | Path, fmt: str = "auto"
) -> ScoringInput:
    """Read a hyp/ref pair as `fmt` (auto: detect_format). Raises ScoringInputError for keyed
    files over different utterances, plain files with different line counts, or nothing to
    score."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} not in {FORMATS}")
    if fmt == "auto":
        fmt = detect_format(hyp_path, ref_path)
    if fmt == "keyed":
        return ScoringInput(fmt, *load_pairs(hyp_path, ref_path))
    hyps, refs = read_plain_text(hyp_path), read_plain_text(ref_path)
    if len(hyps) != len(refs):
        raise ScoringInputError(
            f"{hyp_path} has {len(hyps)} lines but {ref_path} has {len(refs)}: plain files "
            "(one sentence per line) are aligned by line number and must have as many lines"
        )
    if not refs:
        raise ScoringInputError(f"{ref_path}: no sentences to score")
    return ScoringInput(fmt, [str(i) for i in range(1, len(refs) + 1)], hyps, refs)


@dataclass(frozen=True)
class Score:
    """What a metric function returns: values in percent and how each was computed.

    values: score key (e.g. "bleu", "bleu_lc.rm") -> value; normalisation: score key -> text.
    """

    values: dict[str, float]
    normalisation: dict[str, str] = field(default_factory=dict)
