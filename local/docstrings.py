"""Embedded summarisation corpus: Python standard-library docstrings (document -> first sentence).

Nothing to download: the corpus is read from the source files of the Python that runs s2s
(``sysconfig``'s ``stdlib`` directory), so its exact contents depend on the Python version.
Files are parsed with ``ast`` and never imported, so no module code runs. Test suites
(``test``, ``tests``, ``idle_test``), ``site-packages`` and files that do not parse are skipped.

For every module, class and function docstring:

- summary (``text.tgt``, also ``text``): its first sentence, whitespace-normalised;
- document (``text.src``): the rest of the docstring after that sentence, whitespace-normalised,
  cut at the first doctest prompt (``>>>``), since examples are code rather than prose.

Filtering (its job, and reported in the log): summaries that are not a sentence (signatures
such as ``f(x) -> y``, lead-ins ending in ``:``, text not starting with a letter), summaries
outside ``min_summary_words`` .. ``max_summary_words`` words, documents outside
``min_doc_words`` .. ``max_doc_words`` words, and duplicates (the same document elsewhere, e.g.
``_pyio`` repeating ``io``: the name with the fewest private parts is kept).

The split into ``train``/``dev``/``test`` is by a hash of (seed, module + top-level name), so
the methods of one class stay together and a given seed always gives the same split.

Utterance ids are qualified names (``json.decoder.JSONDecoder.decode``); each is its own
"speaker" (text-only data dir).
"""

from __future__ import annotations

import ast
import hashlib
import logging
import re
import sysconfig
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from s2s.data.datadir import DataDir, write_datadir

log = logging.getLogger("local.docstrings")  # loaded under a private package name

SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                       "__pycache__"})  # fmt: skip
# A sentence ends at . ! ? followed by whitespace and a capital/quote/bracket, or at the end.
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z`\"'(\[]|\s*$)")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "cf.", "vs.", "Mr.", "Dr.", "No.")
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$|->")


@dataclass(frozen=True)
class Docstring:
    """One documented object: qualified name, split group, first sentence and the rest."""

    qualname: str
    group: str
    summary: str
    document: str


def stdlib_dir() -> Path:
    """The pure-Python standard library of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def iter_source_files(root: Path, modules: Sequence[str] | None = None) -> Iterator[Path]:
    """``.py`` files under ``root`` in sorted order, skipping ``SKIP_DIRS``; with ``modules``,
    only those top-level modules/packages (``json`` -> ``json.py`` or ``json/``)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: standard-library directory not found")
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts[:-1]):
            continue
        top = rel.parts[0].removesuffix(".py")
        if modules is not None and top not in modules:
            continue
        if not top.isidentifier():  # e.g. a stray "foo-bar.py" script, not importable
            continue
        yield path


def split_docstring(doc: str) -> tuple[str, str]:
    """(first sentence, rest), both whitespace-normalised; the rest stops at a doctest."""
    lines = doc.strip().splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(">>>"):
            lines = lines[:i]
            break
    text = "\n".join(lines)
    first_par, _, after = text.partition("\n\n")
    first = " ".join(first_par.split())
    end = None
    for m in _SENTENCE_END.finditer(first):
        if not any(first[: m.end()].endswith(a) for a in _ABBREVIATIONS):
            end = m.end()
            break
    if end is None:  # no sentence end: the whole first paragraph is the summary
        summary, rest_of_par = first, ""
    else:
        summary, rest_of_par = first[:end], first[end:]
    rest = " ".join(f"{rest_of_par} {after}".split())
    return summary.strip(), rest


def _walk(tree: ast.Module, module: str) -> Iterator[tuple[str, str, str]]:
    """(qualified name, group, docstring) of the module and every class/function inside."""
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield module, module, doc
    stack: list[tuple[ast.AST, str, str | None]] = [(tree, module, None)]
    while stack:
        node, prefix, group = stack.pop()
        children = [
            c for c in ast.iter_child_nodes(node)
            if isinstance(c, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]  # fmt: skip
        for child in reversed(children):  # reversed + stack = source order
            name = f"{prefix}.{child.name}"
            child_group = group or name
            stack.append((child, name, child_group))
        for child in children:
            doc = ast.get_docstring(child, clean=True)
            if doc:
                yield f"{prefix}.{child.name}", group or f"{prefix}.{child.name}", doc


def collect_docstrings(
    root: Path | None = None, modules: Sequence[str] | None = None
) -> tuple[list[tuple[str, str, str]], int]:
    """Every (qualified name, group, docstring) under ``root`` (default: the running stdlib),
    and the number of files that did not parse (skipped)."""
    root = stdlib_dir() if root is None else Path(root)
    found: list[tuple[str, str, str]] = []
    bad = 0
    for path in iter_source_files(root, modules):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError) as e:  # e.g. deliberately broken files
            log.info("docstrings: skipped %s (does not parse: %s)", path, e)
            bad += 1
            continue
        found.extend(_walk(tree, _module_name(root, path)))
    return found, bad


def build_corpus(
    raw: list[tuple[str, str, str]],
    min_doc_words: int = 15,
    max_doc_words: int = 400,
    min_summary_words: int = 3,
    max_summary_words: int = 40,
) -> tuple[list[Docstring], Counter[str]]:
    """Split, filter and de-duplicate docstrings; returns the kept ones (sorted by qualified
    name) and the count of drops per reason."""
    dropped: Counter[str] = Counter()
    kept: list[Docstring] = []
    seen_names: set[str] = set()
    seen_docs: set[str] = set()

    # Public names first, so a duplicate keeps e.g. io's copy rather than _pyio's.
    def public_first(item: tuple[str, str, str]) -> tuple[int, str]:
        return sum(p.startswith("_") for p in item[0].split(".")), item[0]

    for qualname, group, doc in sorted(raw, key=public_first):
        summary, document = split_docstring(doc)
        n_sum, n_doc = len(summary.split()), len(document.split())
        if qualname in seen_names:
            reason = "duplicate name"  # e.g. a function defined per platform in if/else
        elif (
            _SIGNATURE.search(summary)
            or not summary[:1].isalpha()  # grammar productions, markup, symbols
            or summary.endswith(":")  # introduces a list, says nothing by itself
            or not re.search(r"[A-Za-z]{2}", summary)
        ):
            reason = "summary is not a sentence"
        elif not min_summary_words <= n_sum <= max_summary_words:
            reason = "summary length"
        elif n_doc < min_doc_words:
            reason = "document too short"
        elif n_doc > max_doc_words:
            reason = "document too long"
        elif document in seen_docs:
            reason = "duplicate document"
        else:
            reason = ""
        if reason:
            dropped[reason] += 1
            continue
        seen_names.add(qualname)
        seen_docs.add(document)
        kept.append(Docstring(qualname, group, summary, document))
    return sorted(kept, key=lambda d: d.qualname), dropped


def assign_split(group: str, seed: int, dev_frac: float, test_frac: float) -> str:
    """ "train", "dev" or "test" from a stable hash of (seed, group)."""
    h = int.from_bytes(hashlib.sha1(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_frac else "dev" if h < test_frac + dev_frac else "train"


def prepare(
    out_root: str | Path,
    seed: int = 0,
    dev_frac: float = 0.05,
    test_frac: float = 0.05,
    min_doc_words: int = 15,
    max_doc_words: int = 400,
    min_summary_words: int = 3,
    max_summary_words: int = 40,
    modules: Sequence[str] | None = None,
    stdlib_root: str | Path | None = None,
) -> dict[str, DataDir]:
    """Write text-only data dirs ``out_root/{train,dev,test}/`` with ``text.src`` (document),
    ``text.tgt`` (summary) and ``text`` (= ``text.tgt``). ``modules`` limits the corpus to
    those top-level stdlib modules; ``stdlib_root`` reads another source tree instead."""
    if not (0 < dev_frac < 1 and 0 < test_frac < 1 and dev_frac + test_frac < 1):
        raise ValueError(f"need 0 < dev_frac, test_frac and a sum < 1; got {dev_frac}, {test_frac}")
    root = stdlib_dir() if stdlib_root is None else Path(stdlib_root)
    raw, bad_files = collect_docstrings(root, modules)
    docs, dropped = build_corpus(
        raw, min_doc_words, max_doc_words, min_summary_words, max_summary_words
    )
    parts: dict[str, list[Docstring]] = {"train": [], "dev": [], "test": []}
    for d in docs:
        parts[assign_split(d.group, seed, dev_frac, test_frac)].append(d)
    for name, items in parts.items():
        if not items:
            raise ValueError(
                f"docstrings: the {name} split is empty ({len(docs)} docstrings kept from "
                f"{root}, modules={modules}); use more modules or larger fractions"
            )
    log.info(
        "docstrings: %d docstrings in %s, %d kept (train %d, dev %d, test %d); dropped: %s; "
        "%d files did not parse",
        len(raw), root, len(docs), len(parts["train"]), len(parts["dev"]), len(parts["test"]),
        dict(dropped) or "none", bad_files,
    )  # fmt: skip
    out: dict[str, DataDir] = {}
    for name, items in parts.items():
        tgt = {d.qualname: d.summary for d in items}
        out[name] = write_datadir(
            Path(out_root) / name,
            None,
            {"text.src": {d.qualname: d.document for d in items}, "text.tgt": tgt, "text": tgt},
            {d.qualname: d.qualname for d in items},
        )
    return out
