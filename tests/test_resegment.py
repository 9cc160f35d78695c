"""Minimum-edit-distance resegmentation (s2s.metrics.resegment) and `s2s-score --resegment`:
nothing lost or reordered, the split is optimal (against every split, on small cases), and a
hypothesis that is the references cut elsewhere comes back as the references."""

from __future__ import annotations

import itertools
import json

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s.cli.score import main as score_main
from s2s.metrics.resegment import edit_table, resegment, segmentation_errors

WORDS = st.sampled_from(["a", "b", "c", "d", "A.", "b,"])


def brute_force(words: list[str], refs: list[str]) -> int:
    """The least summed edit distance over every split of words into len(refs) pieces."""
    best = None
    n = len(refs)
    for cuts in itertools.combinations_with_replacement(range(len(words) + 1), n - 1):
        bounds = [0, *cuts, len(words)]
        segs = [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        cost = segmentation_errors(segs, refs)
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@settings(max_examples=150, deadline=None)
@given(
    hyp=st.lists(WORDS, max_size=7),
    refs=st.lists(st.lists(WORDS, max_size=3).map(" ".join), min_size=1, max_size=3),
)
def test_the_split_keeps_every_word_in_order_and_is_optimal(hyp, refs) -> None:
    segs = resegment(" ".join(hyp), refs)
    assert len(segs) == len(refs)
    assert " ".join(segs).split() == hyp
    assert segmentation_errors(segs, refs) == brute_force(hyp, refs)


@settings(max_examples=100, deadline=None)
@given(
    refs=st.lists(st.lists(WORDS, min_size=1, max_size=4).map(" ".join), min_size=1, max_size=5),
    data=st.data(),
)
def test_references_cut_elsewhere_come_back_as_the_references(refs, data) -> None:
    words = " ".join(refs).split()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(words)), max_size=4)))
    bounds = [0, *cuts, len(words)]
    lines = [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    segs = resegment(lines, refs)
    assert segmentation_errors(segs, refs) == 0
    # the references' own words, each sentence whole (lc.rm-equal: only punctuation-free
    # repeats could move, and they would cost an edit)
    assert [s.split() for s in segs] == [r.split() for r in refs]


def test_edit_table_is_the_word_levenshtein_distance() -> None:
    import numpy as np

    D = edit_table(np.array([0, 1, 2]), np.array([0, 2, 3, 4]))
    assert D[-1, -1] == 3  # x y z against x z u v: y inserted, u and v missing
    assert D[0, 4] == 4 and D[3, 0] == 3


def test_insertions_between_sentences_and_punctuation_ride_with_a_word() -> None:
    refs = ["guten morgen", "der rote becher"]
    assert resegment(["Guten Morgen, äh", "der rote Becher."], refs) == [
        "Guten Morgen, äh",
        "der rote Becher.",
    ]
    assert resegment("- guten morgen der rote becher", refs)[0] == "- guten morgen"
    assert resegment("", refs) == ["", ""]
    with pytest.raises(ValueError, match="at least one reference"):
        resegment("a", [])


def test_score_cli_resegments_a_long_file_output(tmp_path, capsys) -> None:
    """s2s-decode's long-file lines (file, start, end, text) cut where the pauses were: scored
    after resegmenting, as sacrebleu scores the references' own sentences."""
    refs = ["Guten Morgen.", "Der rote Becher steht auf dem Tisch.", "Wir mögen den Vogel."]
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
    lines = ["Guten Morgen. Der rote", "Becher steht auf dem", "Tisch. Wir mögen den Vogel."]
    hyp = "".join(f"talk.wav\t{i:.2f}\t{i + 1:.2f}\t{t}\n" for i, t in enumerate(lines))
    (tmp_path / "hyp.txt").write_text(hyp)
    out, fixed = tmp_path / "score.json", tmp_path / "reseg.txt"
    args = ["--hyp", str(tmp_path / "hyp.txt"), "--ref", str(tmp_path / "ref.txt")]
    assert score_main([*args, "--metrics", "bleu", "--resegment", "--write-hyp", str(fixed),
                       "--out", str(out)]) == 0  # fmt: skip
    assert fixed.read_text().splitlines() == refs
    assert "resegmented onto the 3 sentences" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["resegmented"] and report["n_utterances"] == 3
    assert report["metrics"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(refs, [refs]).score)
    # without --resegment the three lines pair with the three sentences as they are
    assert score_main([*args, "--metrics", "bleu", "--format", "plain"]) == 0
    assert score_main([*args, "--metrics", "bleu", "--write-hyp", str(fixed)]) == 2
    assert "--write-hyp goes with --resegment" in capsys.readouterr().err
