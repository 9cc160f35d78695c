"""s2s-score end to end on tmp files: score.json, RESULTS.md rows, idempotent updates."""

from __future__ import annotations

import json
import re

import jiwer
import pytest
import sacrebleu

from s2s.cli.score import main
from s2s.metrics.results import MARKER, update_results

REFS = {"u1": "The cat sat on the mat.", "u2": "Hello, world!", "u3": "Good morning."}
HYPS = {"u1": "the cat sat on a mat", "u2": "Hello world!", "u3": ""}
STATS = {
    "device": "cpu",
    "cache_bytes_per_token": 1536.0,
    "utterances": 3,
    "tokens": 12,
    "wall_time_s": 1.5,
    "peak_cache_mib": 3.25,
    "peak_memory_mib": 321.4,
    "utterances_per_s": 2.0,
    "tokens_per_s": 8.0,
    "beam_size": 5,
}


def _decode_dir(path, hyps=HYPS, stats=STATS):
    path.mkdir(parents=True, exist_ok=True)
    # decode_dir.py writes "utt" alone for an empty hypothesis
    (path / "hyp.txt").write_text("".join(f"{u} {t}".rstrip() + "\n" for u, t in hyps.items()))
    (path / "ref.txt").write_text("".join(f"{u} {t}\n" for u, t in REFS.items()))
    if stats is not None:
        (path / "stats.json").write_text(json.dumps(stats))
    return path


def _table(text: str, test_set: str) -> list[list[str]]:
    """The rows (cells) of one test set's table, header first, separator dropped."""
    section = text.split(f"## Test set: {test_set}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for i, r in enumerate(rows) if i != 1]


def _undated(text: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "DATE", text)


def test_decode_dir_writes_score_json(tmp_path, capsys):
    d = _decode_dir(tmp_path / "decode_test")
    assert main(["--decode-dir", str(d), "--metrics", "bleu,chrf,wer"]) == 0
    score = json.loads((d / "score.json").read_text())
    assert score["n_utterances"] == 3
    assert score["efficiency"] == STATS
    order = sorted(REFS)
    expected = sacrebleu.corpus_bleu([HYPS[u] for u in order], [[REFS[u] for u in order]]).score
    assert score["metrics"]["bleu"] == expected
    assert set(score["metrics"]) == {"bleu", "bleu_lc.rm", "chrf", "chrf_lc.rm", "wer"}
    assert "lowercase" in score["normalisation"]["wer"]
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and f"bleu={expected:.2f}" in line and "n=3" in line


def test_bare_files_and_errors(tmp_path, capsys):
    d = _decode_dir(tmp_path / "d", stats=None)
    out = tmp_path / "s.json"
    args = ["--hyp", str(d / "hyp.txt"), "--ref", str(d / "ref.txt"), "--metrics", "cer"]
    assert main([*args, "--out", str(out)]) == 0
    score = json.loads(out.read_text())
    assert score["efficiency"] == {} and 0 < score["metrics"]["cer"] < 100
    assert main(args) == 0 and not (d / "score.json").exists()
    assert main(["--metrics", "wer"]) == 2
    assert main(["--decode-dir", str(d), "--metrics", "nope"]) == 2
    assert main(["--decode-dir", str(d), "--metrics", "wer", "--results", "R.md"]) == 2
    (d / "hyp.txt").write_text("u1 a\nu9 b\n")
    assert main(["--decode-dir", str(d), "--metrics", "wer"]) == 2
    err = capsys.readouterr().err
    assert "u2, u3" in err and "u9" in err


def test_results_md_rows_update_in_place(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# My recipe\n\nHand-written notes | with a pipe.\n")
    a = _decode_dir(tmp_path / "exp/mtla/decode_test")
    b = _decode_dir(tmp_path / "exp/mha/decode_test", hyps=REFS, stats=STATS | {"beam_size": 7})

    def score(d, exp, test_set="test", metrics="bleu,wer"):
        argv = ["--decode-dir", str(d), "--metrics", metrics, "--results", str(results)]
        assert main([*argv, "--exp", exp, "--set", test_set]) == 0
        return results.read_text()

    first = score(a, "mtla")
    assert first.startswith("# My recipe\n\nHand-written notes | with a pipe.\n")
    assert first.count(MARKER) == 1
    table = _table(first, "test")
    assert table[0] == [
        "experiment", "decode", "bleu", "bleu_lc.rm", "wer",
        "utt/s", "tokens/s", "cache bytes/token", "peak cache MiB", "GPU peak MiB",
    ]  # fmt: skip
    assert table[1][:2] == ["mtla", "decode_test"]  # without --decode: the dir's name
    assert table[1][5:] == ["2.00", "8.0", "1536", "3.25", "321"]
    wer = json.loads((a / "score.json").read_text())["metrics"]["wer"]
    assert table[1][4] == f"{wer:.2f}"
    env = first.split("## Environment\n", 1)[1].split("\n## ", 1)[0]
    assert "| python |" in env and "| commit |" in env and "| mtla | decode_test | test |" in env

    again = score(a, "mtla")  # idempotent: identical but for the scoring time
    assert _undated(again) == _undated(first)
    assert len(_table(again, "test")) == 2 and again.count("| mtla | decode_test | test |") == 1

    both = score(b, "mha")
    rows = _table(both, "test")
    assert [r[0] for r in rows[1:]] == ["mha", "mtla"]  # sorted by experiment
    assert rows[1][2] == "100.00" and rows[1][4] == "0.00"
    assert "| 7 |" in both  # mha's own beam in its environment row

    # another set gets its own table; sets are sorted; the first one is untouched
    other = score(a, "mtla", test_set="dev", metrics="cer")
    assert other.index("## Test set: dev") < other.index("## Test set: test")
    assert _table(other, "test") == rows
    assert _table(other, "dev")[0][:3] == ["experiment", "decode", "cer"]
    assert other.startswith("# My recipe\n\nHand-written notes | with a pipe.\n")


def test_update_results_new_file_and_dropped_metric(tmp_path):
    path = tmp_path / "sub" / "RESULTS.md"
    env = {"date": "d", "python": "p", "torch": "t", "s2s": "s", "commit": "c", "device": "cpu"}
    update_results(path, "x", "test", {"bleu": 1.0, "chrf": 2.0}, {}, env=env)
    text = update_results(path, "x", "test", {"bleu": 3.0}, {}, env=env)
    assert text == path.read_text() and MARKER in text and text.startswith("# Results")
    rows = _table(text, "test")
    assert rows[0][:3] == ["experiment", "decode", "bleu"] and "chrf" not in rows[0]
    assert rows[1][:3] == ["x", "-", "3.00"] and rows[1][3:] == ["-"] * 5
    with pytest.raises(ValueError, match="non-empty"):
        update_results(path, "", "test", {"bleu": 1.0}, {}, env=env)


def test_two_decodings_of_one_experiment_get_two_rows(tmp_path):
    """--decode names the settings: each (experiment, decode) pair has its own row, re-scoring
    one replaces only it, and a row written before the decode column counts as decode "-"."""
    results = tmp_path / "RESULTS.md"
    env = {"date": "d", "python": "p", "torch": "t", "s2s": "s", "commit": "c", "device": "cpu"}
    old = "## Test set: test\n\n| experiment | wer |\n|---|---:|\n| x | 9.00 |\n"
    results.write_text(f"# R\n\n{MARKER}\n\n{old}")
    d1 = _decode_dir(tmp_path / "exp/x/decode_test_beam5")
    d2 = _decode_dir(tmp_path / "exp/x/decode_test_b2", stats=STATS | {"beam_size": 2})
    argv = ["--metrics", "wer", "--results", str(results), "--exp", "x", "--set", "test"]
    assert main(["--decode-dir", str(d1), *argv, "--decode", "beam5"]) == 0
    assert main(["--decode-dir", str(d2), *argv, "--decode", "beam5_beam_size2"]) == 0
    assert main(["--decode-dir", str(d1), *argv, "--decode", "beam5"]) == 0
    rows = _table(results.read_text(), "test")
    assert [r[:2] for r in rows] == [
        ["experiment", "decode"], ["x", "-"], ["x", "beam5"], ["x", "beam5_beam_size2"]
    ]  # fmt: skip
    assert rows[1][2] == "9.00"  # the old row is kept as it was
    update_results(results, "x", "test", {"wer": 1.0}, {}, env=env)  # decode "" is the "-" row
    rows = _table(results.read_text(), "test")
    assert len(rows) == 4 and rows[1][:3] == ["x", "-", "1.00"]


# Plain files as sacrebleu and fairseq write them: each line's first word is unique and the
# same in hyp and ref (the layout most easily mistaken for "utt text"), one empty hypothesis.
PLAIN_REFS = [
    "The cat sat on the mat.",
    "Hello, world!",
    "Good morning, Vietnam.",
    "Every dog has its day.",
    "Nobody expects the Spanish Inquisition.",
]
PLAIN_HYPS = ["The cat sat on a mat", "Hello world!", "", "Every dog has a day.", "Nobody expects"]


def test_plain_files_score_as_sacrebleu_and_jiwer(tmp_path, capsys):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(PLAIN_HYPS) + "\n")
    ref.write_text("\n".join(PLAIN_REFS))  # no final newline: still five lines
    out = tmp_path / "score.json"
    argv = ["--hyp", str(hyp), "--ref", str(ref), "--metrics", "bleu,chrf,wer", "--out", str(out)]
    assert main(argv) == 0
    assert "plain sentences, one per line, aligned by line number (detected)" in (
        capsys.readouterr().err
    )
    score = json.loads(out.read_text())
    assert score["format"] == "plain" and score["n_utterances"] == 5
    m = score["metrics"]
    assert m["bleu"] == sacrebleu.corpus_bleu(PLAIN_HYPS, [PLAIN_REFS]).score
    assert m["chrf"] == sacrebleu.corpus_chrf(PLAIN_HYPS, [PLAIN_REFS]).score
    words = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    expected = jiwer.wer(
        PLAIN_REFS, PLAIN_HYPS, reference_transform=words, hypothesis_transform=words
    )
    assert m["wer"] == 100 * expected
    # 8 of the 21 reference words are wrong or missing: no line was read as "utt text"
    assert m["wer"] == pytest.approx(100 * 8 / 21)


def test_plain_files_with_different_line_counts_are_refused(tmp_path, capsys):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(PLAIN_HYPS[:4]) + "\n")
    ref.write_text("\n".join(PLAIN_REFS) + "\n")
    assert main(["--hyp", str(hyp), "--ref", str(ref), "--metrics", "bleu"]) == 2
    err = capsys.readouterr().err
    assert f"{hyp} has 4 lines but {ref} has 5" in err and "aligned by line number" in err


def test_keyed_files_are_detected_and_format_can_be_forced(tmp_path, capsys):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    # ids without digits are still keyed when the two files list them in different orders
    hyp.write_text("b Hello world\na the cat sat on a mat\n")
    ref.write_text("a The cat sat on the mat.\nb Hello, world!\n")
    out = tmp_path / "s.json"
    argv = ["--hyp", str(hyp), "--ref", str(ref), "--metrics", "bleu", "--out", str(out)]
    assert main(argv) == 0
    assert "keyed 'utt text' lines, aligned by utterance id (detected)" in capsys.readouterr().err
    keyed = json.loads(out.read_text())
    assert keyed["format"] == "keyed"
    assert (
        keyed["metrics"]["bleu"]
        == sacrebleu.corpus_bleu(
            ["the cat sat on a mat", "Hello world"], [["The cat sat on the mat.", "Hello, world!"]]
        ).score
    )
    # one-line files whose first words are not id-like are plain unless told otherwise
    hyp.write_text("utt Hello world\n")
    ref.write_text("utt Hello world\n")
    assert main([*argv[:-2], "--out", str(out)]) == 0
    assert json.loads(out.read_text())["format"] == "plain"
    assert main([*argv, "--format", "keyed"]) == 0
    assert "(as asked)" in capsys.readouterr().err
    assert json.loads(out.read_text())["format"] == "keyed"
    # a keyed file against a plain one: ids are missing, and the message names them
    hyp.write_text("u1 hello\nu2 world\n")
    ref.write_text("hello\nworld\n")
    assert main([*argv, "--format", "keyed"]) == 2
    assert "lacks 2 ids" in capsys.readouterr().err
