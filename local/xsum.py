"""XSum (extreme summarisation of BBC articles) -> text-only Kaldi data dirs.

Two accepted layouts under ``src_root`` (the first found wins):

1. JSON lines as exported from the Hugging Face ``xsum`` / ``EdinburghNLP/xsum`` dataset::

       <src_root>/{train,validation,test}.jsonl    {"document": ..., "summary": ..., "id": ...}

2. The original release (github.com/EdinburghNLP/XSum)::

       <src_root>/XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json   {"train": [id, ...],
                                                              "validation": [...], "test": [...]}
       <src_root>/bbc-summary-data/<id>.summary              sections, each opened by a line
                                                              [SN]URL[SN], [SN]TITLE[SN],
                                                              [SN]FIRST-SENTENCE[SN] (summary),
                                                              [SN]RESTBODY[SN] (document)

   As in the Hugging Face loader, the share-button boilerplate lines of the BBC pages
   ("Share this with", "Email", "Facebook", ...; ``BOILERPLATE``) are dropped from the body.

What ``prepare`` writes: ``out_root/{train,validation,test}/`` (names as published), each a
text-only data dir (no ``wav.scp``) keyed by the BBC article id, with ``text.src`` (the
document, line breaks and runs of whitespace -> one space), ``text.tgt`` (the one-sentence
summary) and ``text`` (= ``text.tgt``); ``utt2spk`` maps each id to itself.

Errors: a missing split file/article raises FileNotFoundError naming it (the id, for an
article); an unparsable line, a duplicate id or an empty document/summary raises ValueError
naming file and line. ``skip_empty=True`` instead drops articles with an empty document or
summary and logs how many (some scraped articles have no body); ``skip_missing=True`` drops
split-file ids without a ``.summary`` file and logs how many.

DOWNLOAD (needs network access; run by the user, not by s2s). The articles are BBC copyright,
distributed for research use only (see the XSum README)::

    # Either, with the `datasets` library, export the three splits as JSON lines:
    python -c "import datasets as d; x = d.load_dataset('EdinburghNLP/xsum'); \\
        [x[s].to_json(f'downloads/{s}.jsonl') for s in ('train', 'validation', 'test')]"
    # or the original release (about 250 MB):
    wget http://bollin.inf.ed.ac.uk/public/direct/XSUM-EMNLP18-Summary-Data-Original.tar.gz
    mkdir -p downloads && tar -xzf XSUM-EMNLP18-Summary-Data-Original.tar.gz -C downloads
    wget -P downloads https://raw.githubusercontent.com/EdinburghNLP/XSum/master/XSum-Dataset/XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from s2s.data.datadir import DataDir, write_datadir

log = logging.getLogger("local.xsum")  # loaded under a private package name

SETS = ("train", "validation", "test")
SPLIT_FILE = "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json"
BOILERPLATE = frozenset(
    [
        "Share this with",
        "Email",
        "Facebook",
        "Messenger",
        "Twitter",
        "Pinterest",
        "WhatsApp",
        "Linkedin",
        "LinkedIn",
        "Copy this link",
        "These are external links and will open in a new window",
    ]
)
_SECTION = re.compile(r"^\[SN\]([A-Z-]+)\[SN\]\s*$")

_Article = tuple[str, str, str, str]  # (where, id, document, summary)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _jsonl_articles(path: Path) -> Iterator[_Article]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON: {e.msg}") from None
            missing = [k for k in ("document", "summary", "id") if k not in obj]
            if missing:
                raise ValueError(f"{where}: lacks {', '.join(missing)}")
            yield where, str(obj["id"]), str(obj["document"]), str(obj["summary"])


def parse_summary_file(path: Path) -> tuple[str, str]:
    """A ``bbc-summary-data/<id>.summary`` file -> (document, summary), both one line."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines():
            m = _SECTION.match(line)
            if m:
                current = sections.setdefault(m.group(1), [])
            elif current is not None and line.strip() not in BOILERPLATE:
                current.append(line)
    for name in ("FIRST-SENTENCE", "RESTBODY"):
        if name not in sections:
            raise ValueError(f"{path}: no [SN]{name}[SN] section")
    return _one_line(" ".join(sections["RESTBODY"])), _one_line(
        " ".join(sections["FIRST-SENTENCE"])
    )


def _original_articles(
    root: Path, ids: list[str], split_file: Path, name: str, skip_missing: bool
) -> Iterator[_Article]:
    data = root / "bbc-summary-data"
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: XSum article directory not found")
    n_missing = 0
    for art_id in ids:
        path = data / f"{art_id}.summary"
        if not path.is_file():
            if skip_missing:
                n_missing += 1
                continue
            raise FileNotFoundError(
                f"article {art_id} (listed in {split_file} under {name!r}): not found: {path}"
            )
        doc, summary = parse_summary_file(path)
        yield str(path), art_id, doc, summary
    if n_missing:
        log.warning("XSum %s: skipped %d ids without a .summary file", name, n_missing)


def _write_set(articles: Iterator[_Article], out_dir: Path, name: str, skip_empty: bool) -> DataDir:
    src: dict[str, str] = {}
    tgt: dict[str, str] = {}
    first: dict[str, str] = {}
    n_empty = 0
    for where, art_id, doc, summary in articles:
        if not art_id or any(c.isspace() for c in art_id):
            raise ValueError(f"{where}: bad article id {art_id!r}")
        if art_id in first:
            raise ValueError(f"{where}: article {art_id} repeats {first[art_id]}")
        first[art_id] = where
        doc, summary = _one_line(doc), _one_line(summary)
        if not doc or not summary:
            if skip_empty:
                n_empty += 1
                continue
            what = "document" if not doc else "summary"
            raise ValueError(
                f"{where}: empty {what} of article {art_id} (skip_empty=True drops it)"
            )
        src[art_id], tgt[art_id] = doc, summary
    if n_empty:
        log.warning("XSum %s: skipped %d articles with an empty document or summary", name, n_empty)
    if not src:
        raise ValueError(f"XSum {name}: no articles")
    texts = {"text": tgt, "text.src": src, "text.tgt": tgt}
    dd = write_datadir(out_dir, None, texts, {u: u for u in src})
    log.info("XSum %s: %d articles -> %s", name, len(dd), out_dir)
    return dd


def prepare(
    src_root: str | os.PathLike,
    out_root: str | os.PathLike,
    sets: Sequence[str] = SETS,
    skip_empty: bool = False,
    skip_missing: bool = False,
) -> dict[str, DataDir]:
    """XSum (either layout of the module docstring) -> ``out_root/<set>/`` text-only dirs.

    Returns ``{set: DataDir}``.
    """
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise ValueError(f"unknown XSum sets {unknown}; choose from {SETS}")
    root = Path(src_root).resolve()
    split_file = root / SPLIT_FILE
    jsonl = any((root / f"{s}.jsonl").is_file() for s in SETS)
    if not jsonl and not split_file.is_file():
        raise FileNotFoundError(
            f"{root}: no XSum found: expected {{train,validation,test}}.jsonl or {SPLIT_FILE} "
            "with bbc-summary-data/ (see DOWNLOAD in local/xsum.py)"
        )
    split_ids: dict = {}
    if not jsonl:
        with open(split_file, encoding="utf-8") as f:
            try:
                split_ids = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{split_file}:{e.lineno}: not valid JSON: {e.msg}") from None
    out: dict[str, DataDir] = {}
    for name in sets:
        if jsonl:
            path = root / f"{name}.jsonl"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: XSum split file not found")
            articles = _jsonl_articles(path)
        else:
            ids = split_ids.get(name) if isinstance(split_ids, dict) else None
            if not isinstance(ids, list):
                raise ValueError(f"{split_file}: no list of ids under {name!r}")
            articles = _original_articles(
                root, [str(i) for i in ids], split_file, name, skip_missing
            )
        out[name] = _write_set(articles, Path(out_root) / name, name, skip_empty)
    return out
