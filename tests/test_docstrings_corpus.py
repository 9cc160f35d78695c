"""Docstrings summarisation corpus: sentence splitting, filtering, splits, data dirs."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from helpers import local_module

from s2s.data.datadir import load_datadir

ds = local_module("docstrings")

BODY = "This paragraph explains the details at some length so that it is a real document. " * 2


@pytest.mark.parametrize(
    "doc,summary,rest",
    [
        ("Return the sum.\n\nIt adds   numbers\n  together.", "Return the sum.",
         "It adds numbers together."),
        ("Parse a file, e.g. a config. It may fail.", "Parse a file, e.g. a config.",
         "It may fail."),
        ("Command-line parsing library\n\nMore here.", "Command-line parsing library",
         "More here."),
        ("Add two numbers.\nThe result is exact.\n\n>>> add(1, 2)\n3\n", "Add two numbers.",
         "The result is exact."),
        ("Use version 2.5 or later. Really.", "Use version 2.5 or later.", "Really."),
    ],
)  # fmt: skip
def test_split_docstring(doc: str, summary: str, rest: str) -> None:
    assert ds.split_docstring(doc) == (summary, rest)


def _write(root: Path, rel: str, source: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def _fake_stdlib(root: Path) -> None:
    # 30 modules, each with a documented class and method and a function, plus traps.
    for i in range(30):
        _write(
            root,
            f"mod{i}.py",
            f'''
            """Module number {i} does things.

            {BODY} Module {i}.
            """

            class Thing:
                """A thing of module {i}.

                {BODY} Class {i}.
                """

                def run(self):
                    """Run the thing of module {i}.

                    {BODY} Method {i}.
                    """

            def helper():
                """short: too little to summarise."""
            ''',
        )
    _write(root, "_copy.py", f'"""Copied summary here.\n\n{BODY} Module 0."""\n')  # duplicate doc
    _write(root, "sig.py", f'"""sig(x) -> int\n\n{BODY} Sig."""\n')
    _write(root, "broken.py", '"""Broken file."""\ndef (:\n')
    _write(root, "test/test_mod.py", f'"""Tests are skipped entirely.\n\n{BODY}"""\n')


def test_prepare_fake_tree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "lib"
    _fake_stdlib(root)
    with caplog.at_level(logging.INFO, logger="local.docstrings"):
        sets = ds.prepare(tmp_path / "data", seed=0, dev_frac=0.2, test_frac=0.2,
                          stdlib_root=root)  # fmt: skip
    names = {n: set(d.utt_ids) for n, d in sets.items()}
    everything = set().union(*names.values())
    assert len(everything) == 90  # 30 x (module, class, method); traps dropped
    assert not names["train"] & names["dev"] and not names["dev"] & names["test"]
    assert not names["train"] & names["test"]
    assert "_copy" not in everything and "sig" not in everything and "broken" not in everything
    assert not any(u.startswith("test") for u in everything)
    # a class and its methods land in the same split
    for i in range(30):
        where = {n for n, us in names.items() if f"mod{i}.Thing" in us or f"mod{i}.Thing.run" in us}
        assert len(where) == 1
    dd = load_datadir(tmp_path / "data" / "train")
    assert dd.text_only and set(dd.texts) == {"text", "text.src", "text.tgt"}
    utt = next(u for u in dd.utt_ids if u.endswith(".run"))
    i = utt.split(".")[0].removeprefix("mod")
    assert dd.text(utt, "text.tgt") == dd.text(utt) == f"Run the thing of module {i}."
    assert dd.text(utt, "text.src") == f"{BODY.strip()} Method {i}."
    assert "document too short" in caplog.text and "duplicate document" in caplog.text
    assert "1 files did not parse" in caplog.text
    # deterministic; another seed gives another split
    again = ds.prepare(tmp_path / "again", seed=0, dev_frac=0.2, test_frac=0.2, stdlib_root=root)
    assert {n: set(d.utt_ids) for n, d in again.items()} == names
    other = ds.prepare(tmp_path / "other", seed=1, dev_frac=0.2, test_frac=0.2, stdlib_root=root)
    assert {n: set(d.utt_ids) for n, d in other.items()} != names


def test_prepare_real_stdlib_subset(tmp_path: Path) -> None:
    mods = ["json", "argparse", "collections", "email", "logging", "inspect", "pathlib"]
    sets = ds.prepare(tmp_path, seed=0, dev_frac=0.15, test_frac=0.15, modules=mods)
    ids = [set(d.utt_ids) for d in sets.values()]
    assert all(ids) and not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert sum(map(len, ids)) > 100
    for dd in sets.values():
        for utt in dd.utt_ids:
            assert utt.split(".")[0] in mods
            summary, doc = dd.text(utt, "text.tgt"), dd.text(utt, "text.src")
            assert 3 <= len(summary.split()) <= 40 and summary[0].isalnum()
            assert "->" not in summary and not summary.endswith(":")
            assert len(doc.split()) >= 15 and ">>>" not in doc
            assert summary not in doc[: len(summary)]  # the summary is not repeated as the start


def test_prepare_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dev_frac"):
        ds.prepare(tmp_path, dev_frac=0.6, test_frac=0.5)
    with pytest.raises(FileNotFoundError, match="not found"):
        ds.prepare(tmp_path, stdlib_root=tmp_path / "missing")
    _write(tmp_path / "lib", "one.py", f'"""One module only.\n\n{BODY}"""\n')
    with pytest.raises(ValueError, match="split is empty"):
        ds.prepare(tmp_path / "out", stdlib_root=tmp_path / "lib")
