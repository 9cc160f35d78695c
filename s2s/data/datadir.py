"""Kaldi-style data directories: read, validate, write, subset, split, combine (docs/data.md).

A speech data dir holds ``wav.scp`` (recording -> audio path), ``utt2spk``, ``spk2utt``,
optionally ``segments`` (utterance -> recording, start s, end s) and any number of text files
named ``text`` or ``text.<field>`` (``text`` = ASR transcript; ST adds ``text.en``/``text.de``,
SLU adds ``text.intent``). Every file is ``key value`` per line, sorted by key in C-locale byte
order (``LC_ALL=C sort``). Python compares ``str`` by code point, and UTF-8 preserves code-point
order, so plain ``sorted()`` gives exactly that order.

A **text-only** data dir (summarisation, MT) has no ``wav.scp`` and no ``segments``: just
``utt2spk`` (each id mapped to itself by convention), ``spk2utt`` and its text files, e.g.
``text.src``/``text.tgt``. It is detected by the absence of ``wav.scp``; ``write_datadir`` makes
one when ``wav_scp`` is None.

Rules the validator enforces (each error names ``<file>:<line>``):

- valid UTF-8, ``\\n`` line ends, no empty lines, no leading whitespace;
- keys sorted and unique; every line has a value (no empty transcripts);
- ``utt2spk`` lists every utterance; every text file has exactly those utterances;
- with ``segments``: its keys are the utterances, each recording it names is in ``wav.scp``,
  ``0 <= start < end``; without: ``wav.scp`` keys are the utterances;
- ``wav.scp`` entries are plain paths: piped commands (``cmd |``) are rejected because s2s
  never runs shell commands;
- ``spk2utt`` (optional when reading, always written) agrees with ``utt2spk``;
- Kaldi's speaker-order rule: ``utt2spk`` sorted by utterance is also sorted by speaker
  (make speaker ids prefixes of utterance ids, followed by a separator such as ``-`` that sorts
  before the characters of any speaker id), as ``utils/validate_data_dir.sh`` demands.

``load_datadir`` stops at the first problem; ``validate_datadir`` reports them all;
``s2s.data.audio_checks.audio_problems`` opens every audio file's header (unreadable, empty,
too short); and ``s2s-validate-data DIR ...`` (s2s/cli/validate_data.py) runs them from the
shell. This module reads the text files only: it imports no audio or feature code.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PathLike = str | os.PathLike

_TEXT_NAME = re.compile(r"^text(\.[^/\\\s]+)?$")
_FIXED_FILES = ("wav.scp", "segments", "utt2spk", "spk2utt")


class DataDirError(ValueError):
    """A malformed or inconsistent data dir; the message reads ``<file>:<line>: <problem>``."""


@dataclass
class DataDir:
    """An in-memory data dir. ``texts`` maps file name (``"text"``, ``"text.de"``) -> utt -> text.

    ``segments`` maps utt -> (recording id, start s, end s), or is None when every utterance is a
    whole recording. ``wav_scp`` is empty for a text-only dir (``text_only=True``).
    """

    path: Path
    wav_scp: dict[str, str]
    texts: dict[str, dict[str, str]]
    utt2spk: dict[str, str]
    segments: dict[str, tuple[str, float, float]] | None = None
    text_only: bool = False
    _utt_ids: list[str] | None = field(default=None, repr=False, compare=False)

    @property
    def utt_ids(self) -> list[str]:
        """Utterance ids in C-locale order."""
        if self._utt_ids is None:
            self._utt_ids = sorted(self.utt2spk)
        return self._utt_ids

    def __len__(self) -> int:
        return len(self.utt2spk)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        """Speaker -> its utterances, both sorted."""
        out: dict[str, list[str]] = {}
        for utt in self.utt_ids:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return dict(sorted(out.items()))

    def text(self, utt: str, field: str = "text") -> str:
        """The text of ``utt`` in file ``field`` (``"text"``, ``"text.de"``, ...)."""
        if field not in self.texts:
            have = ", ".join(sorted(self.texts)) or "none"
            raise DataDirError(f"{self.path / field}: no such text file (have: {have})")
        try:
            return self.texts[field][utt]
        except KeyError:
            raise DataDirError(f"{self.path / field}: no utterance '{utt}'") from None

    def audio_source(self, utt: str) -> tuple[str, float, float | None]:
        """(audio path, start s, end s or None for the whole file) of ``utt``."""
        if self.text_only:
            raise DataDirError(f"{self.path}: text-only data dir, utterance '{utt}' has no audio")
        if self.segments is not None:
            if utt not in self.segments:
                raise DataDirError(f"{self.path / 'segments'}: no utterance '{utt}'")
            rec, start, end = self.segments[utt]
            return self.wav_scp[rec], start, end
        if utt not in self.wav_scp:
            raise DataDirError(f"{self.path / 'wav.scp'}: no utterance '{utt}'")
        return self.wav_scp[utt], 0.0, None


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data dir: ``kind`` groups problems of one sort (for the CLI's
    per-kind limit); ``message`` reads ``<file>:<line>: <problem>``."""

    kind: str
    message: str


# Reading and checking report each problem through one of these: load_datadir's raises at the
# first, validate_datadir's collects them all and reading goes on past the bad line.
Report = Callable[[str, str], None]


def _raise(kind: str, message: str) -> None:
    raise DataDirError(message)


@dataclass(slots=True)
class Entry:
    """One ``key value`` line of a data dir file and its line number."""

    lineno: int
    key: str
    value: str


def _read_lines(path: Path, strict: bool, report: Report) -> list[Entry]:
    """Parse ``key value`` lines; with ``strict``, also check order and uniqueness of keys.
    A line that cannot be read is reported and skipped, as is a repeated key."""
    entries: list[Entry] = []
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:
        raw_lines = f.read().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the final newline
    for lineno, raw in enumerate(raw_lines, start=1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            report(
                "not UTF-8", f"{where}: not valid UTF-8 ({e.reason} at byte {e.start} of the line)"
            )
            continue
        if line.endswith("\r"):
            report("CR LF line end", f"{where}: Windows (CR LF) line ending; use plain LF")
            continue
        if not line.strip():
            report("empty line", f"{where}: empty line")
            continue
        if line[0].isspace():
            report("leading whitespace", f"{where}: line starts with whitespace")
            continue
        parts = line.split(maxsplit=1)
        key, value = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        if strict:
            if key in first_line:
                report(
                    "duplicate key",
                    f"{where}: duplicate key '{key}' (first on line {first_line[key]})",
                )
                continue
            if entries and key < entries[-1].key:
                report(
                    "not sorted",
                    f"{where}: not sorted: '{key}' comes after '{entries[-1].key}' "
                    "(sort with LC_ALL=C sort)",
                )
            first_line[key] = lineno
        entries.append(Entry(lineno, key, value))
    return entries


def file_entries(path: Path) -> list[Entry]:
    """The lines of one file of a valid data dir (DataDirError at a malformed one), with their
    line numbers, for messages that name ``<file>:<line>``."""
    return _read_lines(path, strict=False, report=_raise)


def _has_value(path: Path, e: Entry, what: str, report: Report) -> bool:
    if not e.value:
        report("empty value", f"{path}:{e.lineno}: {what} for '{e.key}' is empty")
    return bool(e.value)


def _parse_segment(path: Path, e: Entry, report: Report) -> tuple[str, float, float] | None:
    where = f"{path}:{e.lineno}"
    fields = e.value.split()
    if len(fields) != 3:
        report(
            "bad segment",
            f"{where}: expected '<utt> <recording> <start> <end>', got {len(fields) + 1} fields",
        )
        return None
    rec = fields[0]
    try:
        start, end = float(fields[1]), float(fields[2])
    except ValueError:
        report("bad segment", f"{where}: start/end are not numbers: {e.value!r}")
        return None
    if not (math.isfinite(start) and math.isfinite(end)):
        report("bad segment", f"{where}: start/end must be finite, got {start} {end}")
    elif start < 0:
        report("bad segment", f"{where}: segment start {start} is negative")
    elif end <= start:
        report("bad segment", f"{where}: segment end {end} is not after its start {start}")
    else:
        return rec, start, end
    return None


def _text_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_file() and _TEXT_NAME.match(p.name))


def _piped(value: str) -> bool:
    return value.endswith("|")


def _parse_dir(
    path: Path, strict: bool, report: Report
) -> tuple[DataDir, dict[str, list[Entry]]] | None:
    """Read every file of a data dir (format checks only); also return the raw entries.
    None when nothing more can be checked (no directory, no utt2spk), after reporting why."""
    if not path.is_dir():
        report("not a directory", f"{path}: not a directory")
        return None
    raw: dict[str, list[Entry]] = {}
    for name in (*_FIXED_FILES, *_text_files(path)):
        if (path / name).is_file():
            raw[name] = _read_lines(path / name, strict, report)
    if "utt2spk" not in raw:
        report("missing file", f"{path / 'utt2spk'}: missing (every data dir needs utt2spk)")
        return None
    text_only = "wav.scp" not in raw
    if text_only and "segments" in raw:
        report("missing file", f"{path / 'wav.scp'}: missing, but {path / 'segments'} refers to it")
        del raw["segments"]

    utt2spk: dict[str, str] = {}
    for e in raw["utt2spk"]:
        if not _has_value(path / "utt2spk", e, "speaker", report):
            continue
        if len(e.value.split()) != 1:
            report(
                "bad utt2spk line",
                f"{path / 'utt2spk'}:{e.lineno}: expected '<utt> <speaker>', got {e.value!r}",
            )
            continue
        utt2spk[e.key] = e.value
    wav_scp: dict[str, str] = {}
    for e in raw.get("wav.scp", []):
        if not _has_value(path / "wav.scp", e, "audio path", report):
            continue
        if _piped(e.value):
            report(
                "piped command",
                f"{path / 'wav.scp'}:{e.lineno}: piped command entries ('cmd |') are not "
                "supported: s2s does not run shell commands; convert the audio to files "
                "(wav/flac) and list their paths",
            )
        wav_scp[e.key] = e.value
    segments = None
    if "segments" in raw:
        segments = {}
        for e in raw["segments"]:
            seg = _parse_segment(path / "segments", e, report)
            if seg is not None:
                segments[e.key] = seg
    texts: dict[str, dict[str, str]] = {}
    for name in _text_files(path):
        for e in raw[name]:
            _has_value(path / name, e, "transcript", report)
        texts[name] = {e.key: e.value for e in raw[name]}
    dd = DataDir(path, wav_scp, texts, utt2spk, segments, text_only=text_only)
    return dd, raw


def _check_consistency(
    dd: DataDir, raw: dict[str, list[Entry]], check_audio: bool, report: Report
) -> None:
    path = dd.path
    u2s_path = path / "utt2spk"
    if not raw["utt2spk"]:
        report("no utterances", f"{u2s_path}: empty (a data dir needs at least one utterance)")
        return
    # Membership by the lines as written, so a line reported for its value does not make every
    # other file's line of that utterance a second problem.
    utts = {e.key for e in raw["utt2spk"]}
    u2s_line = {e.key: e.lineno for e in raw["utt2spk"]}

    def same_keys(name: str, keys_of: str) -> None:
        """File ``name`` must list exactly the utterances of utt2spk."""
        entries = raw[name]
        for e in entries:
            if e.key not in utts:
                report(
                    "unknown utterance",
                    f"{path / name}:{e.lineno}: utterance '{e.key}' is not in {u2s_path}",
                )
        have = {e.key for e in entries}
        for utt in sorted(utts):
            if utt not in have:
                report(
                    "missing utterance",
                    f"{u2s_path}:{u2s_line[utt]}: utterance '{utt}' has no {keys_of} "
                    f"in {path / name}",
                )

    # Kaldi's rule: sort -k2 utt2spk == utt2spk, i.e. speakers are non-decreasing.
    prev = None
    for e in raw["utt2spk"]:
        if e.key not in dd.utt2spk:
            continue  # its line was reported already
        if prev is not None and e.value < prev.value:
            report(
                "speaker order",
                f"{u2s_path}:{e.lineno}: speaker '{e.value}' of '{e.key}' sorts before speaker "
                f"'{prev.value}' of the previous line; utt2spk must also be sorted by speaker "
                "(Kaldi rule: make speaker ids prefixes of utterance ids)",
            )
        prev = e

    if dd.text_only:
        if not dd.texts:
            report(
                "missing file",
                f"{path}: text-only data dir (no wav.scp) without any text file (text, text.*)",
            )
    elif dd.segments is not None:
        same_keys("segments", "line")
        for e in raw["segments"]:
            if e.key not in dd.segments:
                continue  # its line was reported already
            rec = dd.segments[e.key][0]
            if rec not in dd.wav_scp:
                report(
                    "unknown recording",
                    f"{path / 'segments'}:{e.lineno}: recording '{rec}' of utterance "
                    f"'{e.key}' is not in {path / 'wav.scp'}",
                )
    else:
        same_keys("wav.scp", "audio entry")
    for name in dd.texts:
        same_keys(name, "transcript")

    if "spk2utt" in raw:
        s2u_path = path / "spk2utt"
        expected = dd.spk2utt
        unparsed = utts - dd.utt2spk.keys()  # utt2spk lines reported already
        for e in raw["spk2utt"]:
            listed = [u for u in e.value.split() if u not in unparsed]
            if e.key not in expected:
                report("spk2utt", f"{s2u_path}:{e.lineno}: speaker '{e.key}' is not in {u2s_path}")
            elif sorted(listed) != expected[e.key]:
                wrong = sorted(set(listed) ^ set(expected[e.key])) or listed
                report(
                    "spk2utt",
                    f"{s2u_path}:{e.lineno}: utterances of speaker '{e.key}' disagree with "
                    f"{u2s_path} (e.g. '{wrong[0]}')",
                )
        listed_spks = {e.key for e in raw["spk2utt"]}
        for spk, spk_utts in expected.items():
            if spk not in listed_spks:
                report(
                    "spk2utt",
                    f"{u2s_path}:{u2s_line[spk_utts[0]]}: speaker '{spk}' is missing from "
                    f"{s2u_path}",
                )

    if check_audio and not dd.text_only:
        for e in raw["wav.scp"]:
            if e.value and not _piped(e.value) and not os.path.isfile(e.value):
                report(
                    "audio not found",
                    f"{path / 'wav.scp'}:{e.lineno}: audio file of '{e.key}' not found: {e.value}",
                )


def load_datadir(path: PathLike, validate: bool = True, check_audio: bool = False) -> DataDir:
    """Read a data dir; DataDirError at the first problem. With ``validate`` (default) every
    rule of the module docstring is checked; ``check_audio`` also checks that each ``wav.scp``
    path exists (relative paths are relative to the current directory, as in Kaldi)."""
    parsed = _parse_dir(Path(path), strict=validate, report=_raise)
    assert parsed is not None  # _raise raised on everything that returns None
    if validate:
        _check_consistency(*parsed, check_audio, _raise)
    return parsed[0]


def validate_datadir(path: PathLike, check_audio: bool = True) -> list[Problem]:
    """Every problem of a data dir (the rules of the module docstring, and with ``check_audio``
    the audio paths of ``wav.scp``), in the order found; empty when the dir is valid."""
    problems: list[Problem] = []

    def collect(kind: str, message: str) -> None:
        problems.append(Problem(kind, message))

    parsed = _parse_dir(Path(path), strict=True, report=collect)
    if parsed is not None:
        _check_consistency(*parsed, check_audio, collect)
    return problems


# ----------------------------------------------------------------------------- writing


def _fmt_time(t: float) -> str:
    s = f"{t:.6f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def _check_token(path: Path, what: str, token: str) -> None:
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise DataDirError(f"{path}: {what} {token!r} is empty or contains whitespace")


def _check_value(path: Path, utt: str, value: str) -> str:
    if not isinstance(value, str):
        raise DataDirError(f"{path}: value of '{utt}' is not a string: {value!r}")
    if "\n" in value or "\r" in value:
        raise DataDirError(f"{path}: value of '{utt}' contains a line break; normalise it first")
    return value.strip()


def _write_file(path: Path, rows: Mapping[str, str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for key in sorted(rows):
            f.write(f"{key} {rows[key]}\n")


def write_datadir(
    path: PathLike,
    wav_scp: Mapping[str, str] | None,
    texts: Mapping[str, Mapping[str, str]],
    utt2spk: Mapping[str, str],
    segments: Mapping[str, tuple[str, float, float]] | None = None,
) -> DataDir:
    """Write a data dir (sorted, with spk2utt), validate it and return it as loaded.

    ``wav_scp=None`` writes a text-only dir. Values are stored stripped; a value with a line
    break is an error. Data-dir files of an earlier write that this call does not produce
    (``segments``, ``text.*``, ...) are removed so they cannot leak into the new dir.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if wav_scp is None and segments is not None:
        raise DataDirError(f"{out}: segments given without wav_scp")
    for name in texts:
        if not _TEXT_NAME.match(name):
            raise DataDirError(f"{out / name}: text files are named 'text' or 'text.<field>'")

    files: dict[str, dict[str, str]] = {}
    for utt, spk in utt2spk.items():
        _check_token(out / "utt2spk", "utterance id", utt)
        _check_token(out / "utt2spk", f"speaker of '{utt}'", spk)
    files["utt2spk"] = dict(utt2spk)
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    files["spk2utt"] = {spk: " ".join(us) for spk, us in spk2utt.items()}
    if wav_scp is not None:
        rows = {}
        for key, audio in wav_scp.items():
            _check_token(out / "wav.scp", "recording id", key)
            rows[key] = _check_value(out / "wav.scp", key, str(audio))
        files["wav.scp"] = rows
    if segments is not None:
        rows = {}
        for utt, (rec, start, end) in segments.items():
            _check_token(out / "segments", "utterance id", utt)
            _check_token(out / "segments", f"recording of '{utt}'", rec)
            rows[utt] = f"{rec} {_fmt_time(float(start))} {_fmt_time(float(end))}"
        files["segments"] = rows
    for name, table in texts.items():
        rows = {}
        for utt, text in table.items():
            _check_token(out / name, "utterance id", utt)
            rows[utt] = _check_value(out / name, utt, text)
        files[name] = rows

    stale = [n for n in (*_FIXED_FILES, *_text_files(out)) if n not in files]
    for name in stale:
        (out / name).unlink(missing_ok=True)
    for name, rows in files.items():
        _write_file(out / name, rows)
    return load_datadir(out)


def _as_datadir(src: DataDir | PathLike) -> DataDir:
    return src if isinstance(src, DataDir) else load_datadir(src)


def subset_datadir(src: DataDir | PathLike, dst: PathLike, utt_ids: Iterable[str]) -> DataDir:
    """Write the utterances ``utt_ids`` of ``src`` (and only the recordings they use) to ``dst``."""
    dd = _as_datadir(src)
    keep = sorted(set(utt_ids))
    if not keep:
        raise DataDirError(f"{dst}: subset of {dd.path} with no utterances")
    for utt in keep:
        if utt not in dd.utt2spk:
            raise DataDirError(f"{dd.path / 'utt2spk'}: no utterance '{utt}' to subset")
    utt2spk = {u: dd.utt2spk[u] for u in keep}
    texts = {name: {u: table[u] for u in keep} for name, table in dd.texts.items()}
    if dd.text_only:
        return write_datadir(dst, None, texts, utt2spk)
    if dd.segments is None:
        return write_datadir(dst, {u: dd.wav_scp[u] for u in keep}, texts, utt2spk)
    segments = {u: dd.segments[u] for u in keep}
    recs = {seg[0] for seg in segments.values()}
    wav_scp = {r: dd.wav_scp[r] for r in recs}
    return write_datadir(dst, wav_scp, texts, utt2spk, segments)


def split_datadir(
    src: DataDir | PathLike, dsts: Mapping[str, float], seed: int = 0
) -> dict[str, DataDir]:
    """Randomly split ``src`` by utterance into ``{dst path: fraction}``.

    Fractions must be positive and sum to at most 1; when they sum to 1 every utterance lands
    in exactly one split (largest-remainder rounding), otherwise the rest is left out. The split
    is not speaker-disjoint. Returns ``{dst path: DataDir}`` with the keys as given.
    """
    dd = _as_datadir(src)
    if not dsts:
        raise DataDirError(f"{dd.path}: split_datadir needs at least one destination")
    fracs = dict(dsts)
    for name, frac in fracs.items():
        if not (isinstance(frac, int | float) and frac > 0):
            raise DataDirError(f"{name}: split fraction must be > 0, got {frac!r}")
    total = sum(fracs.values())
    if total > 1 + 1e-9:
        raise DataDirError(f"{dd.path}: split fractions sum to {total:g} > 1")
    utts = list(dd.utt_ids)
    random.Random(seed).shuffle(utts)
    n = len(utts)
    exact = {k: n * f for k, f in fracs.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    target = n if abs(total - 1) <= 1e-9 else math.floor(n * total)
    by_remainder = sorted(fracs, key=lambda k: exact[k] - counts[k], reverse=True)
    for k in by_remainder[: max(0, target - sum(counts.values()))]:
        counts[k] += 1
    out: dict[str, DataDir] = {}
    pos = 0
    for k in fracs:
        part = utts[pos : pos + counts[k]]
        pos += counts[k]
        if not part:
            raise DataDirError(
                f"{k}: split fraction {fracs[k]:g} of {n} utterances in {dd.path} gives none"
            )
        out[k] = subset_datadir(dd, k, part)
    return out


def combine_datadirs(srcs: Sequence[DataDir | PathLike], dst: PathLike) -> DataDir:
    """Union of data dirs into ``dst``. Utterance ids must not repeat; all sources must have the
    same text files and the same kind (text-only, whole recordings, or segments)."""
    dirs = [_as_datadir(s) for s in srcs]
    if not dirs:
        raise DataDirError(f"{dst}: combine_datadirs needs at least one source")
    first = dirs[0]

    def kind(d: DataDir) -> str:
        return "text-only" if d.text_only else ("segments" if d.segments is not None else "wav")

    wav_scp: dict[str, str] = {}
    texts: dict[str, dict[str, str]] = {name: {} for name in first.texts}
    utt2spk: dict[str, str] = {}
    segments: dict[str, tuple[str, float, float]] = {}
    owner: dict[str, Path] = {}
    for d in dirs:
        if kind(d) != kind(first):
            raise DataDirError(
                f"{d.path}: is a '{kind(d)}' data dir but {first.path} is '{kind(first)}'"
            )
        if set(d.texts) != set(first.texts):
            raise DataDirError(
                f"{d.path}: text files {sorted(d.texts)} differ from {sorted(first.texts)} "
                f"of {first.path}"
            )
        for utt in d.utt_ids:
            if utt in owner:
                raise DataDirError(
                    f"{d.path / 'utt2spk'}: utterance '{utt}' is also in {owner[utt]}"
                )
            owner[utt] = d.path
        for rec, audio in d.wav_scp.items():
            if wav_scp.get(rec, audio) != audio:
                raise DataDirError(
                    f"{d.path / 'wav.scp'}: recording '{rec}' has path {audio}, "
                    f"another source has {wav_scp[rec]}"
                )
            wav_scp[rec] = audio
        utt2spk.update(d.utt2spk)
        for name, table in d.texts.items():
            texts[name].update(table)
        if d.segments is not None:
            segments.update(d.segments)
    return write_datadir(
        dst,
        None if first.text_only else wav_scp,
        texts,
        utt2spk,
        segments if first.segments is not None else None,
    )
