"""Metrics equal the libraries called directly; lc.rm variants; reading keyed hyp/ref files."""

from __future__ import annotations

import jiwer
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import CHRF

from s2s.metrics import METRICS, compute, parse_metric_names
from s2s.metrics.accuracy import accuracy, split_intent
from s2s.metrics.bleu import bleu, chrf
from s2s.metrics.rouge import rouge
from s2s.metrics.text import ScoringInputError, lc_rm, load_pairs, read_keyed_text
from s2s.metrics.wer import CER_TRANSFORM, WER_TRANSFORM, cer, wer

REFS = [
    "The cat sat on the mat.",
    "Hello, world! How are you today?",
    "It's a sunny day in Berlin.",
    "Numbers like 42 stay.",
]
HYPS = [
    "the cat sat on a mat",
    "Hello world, how are you?",
    "",  # an empty hypothesis is scored, not dropped
    "Numbers like 42 stay.",
]


def test_bleu_chrf_equal_sacrebleu():
    b, c = bleu(HYPS, REFS), chrf(HYPS, REFS)
    assert b.values["bleu"] == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert c.values["chrf"] == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    lh, lr = lc_rm(HYPS), lc_rm(REFS)
    assert b.values["bleu_lc.rm"] == sacrebleu.corpus_bleu(lh, [lr], lowercase=True).score
    # corpus_chrf has no lowercase argument: the metric class is sacrebleu's documented way
    assert c.values["chrf_lc.rm"] == CHRF(lowercase=True).corpus_score(lh, [lr]).score
    assert "case:mixed" in b.normalisation["bleu"]
    assert "case:lc" in b.normalisation["bleu_lc.rm"]


def test_lc_rm_differs_on_cased_punctuated_data():
    b, c = bleu(HYPS, REFS), chrf(HYPS, REFS)
    assert b.values["bleu_lc.rm"] > b.values["bleu"]
    assert c.values["chrf_lc.rm"] != c.values["chrf"]
    assert lc_rm(["Hello,  World!  It's "]) == ["hello world its"]
    # identical texts up to case and punctuation score 100 only after lc.rm
    same = bleu(["hello world how are you"], ["Hello, World! How are you?"])
    assert same.values["bleu_lc.rm"] == pytest.approx(100.0)
    assert same.values["bleu"] < 50.0


def test_wer_cer_equal_jiwer():
    w, c = wer(HYPS, REFS), cer(HYPS, REFS)
    kw = dict(reference_transform=WER_TRANSFORM, hypothesis_transform=WER_TRANSFORM)
    assert w.values["wer"] == 100.0 * jiwer.wer(REFS, HYPS, **kw)
    kc = dict(reference_transform=CER_TRANSFORM, hypothesis_transform=CER_TRANSFORM)
    assert c.values["cer"] == 100.0 * jiwer.cer(REFS, HYPS, **kc)
    # the normalisation: by hand, 1 substitution (the->a) + 6 deletions (empty hyp)
    # + 1 deletion (today) over 6 + 6 + 6 + 4 = 22 reference words
    assert w.values["wer"] == pytest.approx(100.0 * 8 / 22)
    assert wer(["HELLO world"], ["hello, world!"]).values["wer"] == 0.0
    # case/punctuation count as errors without the normalisation
    assert jiwer.wer(["hello, world!"], ["HELLO world"]) > 0


def test_rouge_equals_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per_doc = [scorer.score(r, h) for h, r in zip(HYPS, REFS)]
    got = rouge(HYPS, REFS).values
    for t in ("rouge1", "rouge2", "rougeL"):
        assert got[t] == 100.0 * sum(s[t].fmeasure for s in per_doc) / len(REFS)
    assert 0.0 < got["rouge2"] < got["rouge1"] < 100.0


def test_accuracy_intent_and_transcript_wer():
    refs = ["play_music play the song", "set_alarm wake me up at six", "weather_query rain"]
    hyps = ["play_music play a song", "set_timer wake me up at six", ""]
    s = accuracy(hyps, refs)
    assert s.values["accuracy"] == pytest.approx(100.0 / 3)
    kw = dict(reference_transform=WER_TRANSFORM, hypothesis_transform=WER_TRANSFORM)
    remainders_ref = ["play the song", "wake me up at six", "rain"]
    remainders_hyp = ["play a song", "wake me up at six", ""]
    assert s.values["transcript_wer"] == 100.0 * jiwer.wer(remainders_ref, remainders_hyp, **kw)
    assert split_intent("intent") == ("intent", "")
    assert split_intent("") == ("", "")


def test_registry_and_compute():
    assert set(METRICS) == {"bleu", "chrf", "wer", "cer", "rouge", "accuracy"}
    s = compute(["bleu", "wer"], HYPS, REFS)
    assert set(s.values) == {"bleu", "bleu_lc.rm", "wer"}
    assert set(s.normalisation) == set(s.values)
    assert parse_metric_names("bleu, chrf,bleu") == ["bleu", "chrf"]
    with pytest.raises(ValueError, match="meteor"):
        parse_metric_names("bleu,meteor")
    with pytest.raises(ValueError, match=rf"2 hypotheses but {len(REFS)} references"):
        compute(["bleu"], HYPS[:2], REFS)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_load_pairs_aligns_by_id_and_keeps_empty(tmp_path):
    ref = _write(tmp_path / "ref.txt", ["b second ref", "a first  ref"])
    hyp = _write(tmp_path / "hyp.txt", ["a first hyp", "b"])
    utts, hyps, refs = load_pairs(hyp, ref)
    assert utts == ["a", "b"]
    assert hyps == ["first hyp", ""]
    assert refs == ["first  ref", "second ref"]


def test_load_pairs_mismatch_names_ids(tmp_path):
    ref = _write(tmp_path / "ref.txt", ["a x", "b y", "c z"])
    hyp = _write(tmp_path / "hyp.txt", ["a x", "d w"])
    with pytest.raises(ScoringInputError) as e:
        load_pairs(hyp, ref)
    msg = str(e.value)
    assert "b, c" in msg and "d" in msg and "hyp.txt" in msg


def test_read_keyed_text_errors_name_file_and_line(tmp_path):
    with pytest.raises(ScoringInputError, match=r"dup\.txt:3: utterance 'a' appears twice"):
        read_keyed_text(_write(tmp_path / "dup.txt", ["a x", "b y", "a z"]))
    with pytest.raises(ScoringInputError, match=r"blank\.txt:2: empty line"):
        read_keyed_text(_write(tmp_path / "blank.txt", ["a x", "", "b y"]))
    with pytest.raises(ScoringInputError, match="no utterances"):
        load_pairs(_write(tmp_path / "h.txt", []), _write(tmp_path / "r.txt", []))
