"""MuST-C v1 (English -> German by default) -> Kaldi data dirs for speech translation.

Published layout (the ``MUSTC_v1.0_en-de.tar.gz`` archive unpacked under ``src_root``)::

    <src_root>/en-de/data/{train,dev,tst-COMMON,tst-HE}/
        wav/ted_<talk>.wav            one 16 kHz recording per TED talk
        txt/<split>.yaml              one segment per line, e.g.
            - {duration: 3.5, offset: 16.61, speaker_id: spk.1, wav: ted_1.wav}
        txt/<split>.en                English transcript, line i <-> yaml entry i
        txt/<split>.de                German translation, line i <-> yaml entry i

What ``prepare`` writes, one data dir per split, ``out_root/<split>/`` (names as published):

- ``wav.scp``: recording -> absolute wav path; ``segments``: utterance -> recording, start, end;
- ``text.en`` (transcript), ``text.de`` (translation), ``text`` (= ``text.en``, for ASR);
- ``utt2spk``: the talk is the speaker (MuST-C's ``speaker_id`` ``spk.N`` is talk ``ted_N``).

Ids follow ESPnet's MuST-C recipe: recording = speaker = ``ted_%05d`` (the talk number zero
padded so that ids sort like numbers and Kaldi's speaker-order rule holds), utterance =
``<talk>_<start ms, 7 digits>_<end ms, 7 digits>``, e.g. ``ted_00001_0016610_0020110``.
Segment times are those milliseconds / 1000. Unlike ESPnet, segments shorter than 0.2 s are
not stretched (the recipe's length filter drops what is too short). Texts are kept as published
(true case, punctuation); normalisation is the tokenizer stage's job.

Errors: a missing directory/file raises FileNotFoundError naming it; a malformed yaml entry, an
empty text line, or yaml/text files of different lengths raise ValueError naming file and line;
a yaml entry whose wav is missing raises FileNotFoundError naming the utterance and path.

DOWNLOAD (needs network access; run by the user, not by s2s)::

    # Request access at https://ict.fbk.eu/must-c/ (free for research; licence
    # CC BY-NC-ND 4.0, inherited from the TED talks). The form returns download links.
    # Then, for v1.0 En-De (about 180 GB unpacked):
    mkdir -p downloads && tar -xzf MUSTC_v1.0_en-de.tar.gz -C downloads
    # -> downloads/en-de/data/...; the recipe's corpus_root is then "downloads".
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from s2s.data.datadir import DataDir, write_datadir

log = logging.getLogger("local.must_c")  # loaded under a private package name

SPLITS = ("train", "dev", "tst-COMMON", "tst-HE")
_REQUIRED_KEYS = ("duration", "offset", "wav")
# `- {duration: 3.5, offset: 16.61, speaker_id: spk.1, wav: ted_1.wav}`: one flow mapping a line.
_FLOW_LINE = re.compile(r"^-\s*\{(.*)\}\s*$")
_TED = re.compile(r"^ted_(\d+)$")


def _parse_yaml(path: Path) -> list[tuple[int, dict[str, str]]]:
    """Segments of a MuST-C yaml as ``(line number, {key: value})``.

    The published files hold one flow mapping per line; those are read line by line (fast on
    the 230k-line train file, and errors name the line). Any other layout goes through PyYAML,
    and then the "line" is the entry's position in the list.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    entries: list[tuple[int, dict[str, str]]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        m = _FLOW_LINE.match(line)
        if m is None:
            return _parse_yaml_generic(path)
        seg: dict[str, str] = {}
        for item in m.group(1).split(","):
            key, sep, value = item.partition(":")
            if not sep:
                raise ValueError(f"{path}:{lineno}: cannot parse {item.strip()!r} as 'key: value'")
            seg[key.strip()] = value.strip()
        entries.append((lineno, seg))
    return entries


def _parse_yaml_generic(path: Path) -> list[tuple[int, dict[str, str]]]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=loader)  # noqa: S506 (a safe loader)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a YAML list of segments, got {type(data).__name__}")
    out = []
    for i, seg in enumerate(data, start=1):
        if not isinstance(seg, dict):
            raise ValueError(f"{path}:{i}: entry {i} is not a mapping: {seg!r}")
        out.append((i, {str(k): str(v) for k, v in seg.items()}))
    return out


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    return lines


def _talk_id(wav: str) -> str:
    """``ted_1.wav`` -> ``ted_00001`` (the recording and speaker id)."""
    stem = Path(wav).stem
    m = _TED.match(stem)
    return f"ted_{int(m.group(1)):05d}" if m else stem


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found (MuST-C layout, see local/must_c.py)")
    return path


def prepare_split(data_dir: Path, split: str, out_dir: Path, lang: str = "de") -> DataDir:
    """One MuST-C split ``data_dir/<split>/`` -> the data dir ``out_dir``."""
    split_dir = _require(data_dir / split, f"MuST-C split directory '{split}'")
    wav_dir = _require(split_dir / "wav", "wav directory")
    yaml_path = _require(split_dir / "txt" / f"{split}.yaml", "segment list")
    src_path = _require(split_dir / "txt" / f"{split}.en", "English transcripts")
    tgt_path = _require(split_dir / "txt" / f"{split}.{lang}", "translations")

    segs = _parse_yaml(yaml_path)
    src, tgt = _read_lines(src_path), _read_lines(tgt_path)
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        if len(lines) != len(segs):
            raise ValueError(
                f"{path}: {len(lines)} lines but {yaml_path} has {len(segs)} segments "
                "(they must be line-aligned)"
            )

    wav_scp: dict[str, str] = {}
    segments: dict[str, tuple[str, float, float]] = {}
    text_en: dict[str, str] = {}
    text_tgt: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for i, (lineno, seg) in enumerate(segs):
        where = f"{yaml_path}:{lineno}"
        missing = [k for k in _REQUIRED_KEYS if k not in seg]
        if missing:
            raise ValueError(f"{where}: segment lacks {', '.join(missing)}")
        try:
            offset, duration = float(seg["offset"]), float(seg["duration"])
        except ValueError:
            raise ValueError(
                f"{where}: offset/duration are not numbers: {seg['offset']!r} {seg['duration']!r}"
            ) from None
        start_ms, end_ms = int(1000 * offset + 0.5), int(1000 * (offset + duration) + 0.5)
        if offset < 0 or end_ms <= start_ms:
            raise ValueError(f"{where}: bad segment offset {offset} duration {duration}")
        rec = _talk_id(seg["wav"])
        utt = f"{rec}_{start_ms:07d}_{end_ms:07d}"
        if utt in first_line:
            raise ValueError(
                f"{where}: segment {utt} repeats the segment on line {first_line[utt]}"
            )
        first_line[utt] = lineno
        for path, lines, table in ((src_path, src, text_en), (tgt_path, tgt, text_tgt)):
            line = " ".join(lines[i].split())
            if not line:
                raise ValueError(f"{path}:{i + 1}: empty text for segment {utt}")
            table[utt] = line
        if rec not in wav_scp:
            wav = wav_dir / seg["wav"]
            if not wav.is_file():
                raise FileNotFoundError(f"utterance {utt}: audio file not found: {wav}")
            wav_scp[rec] = str(wav)
        segments[utt] = (rec, start_ms / 1000, end_ms / 1000)
        utt2spk[utt] = rec
    texts = {"text": text_en, "text.en": text_en, f"text.{lang}": text_tgt}
    dd = write_datadir(out_dir, wav_scp, texts, utt2spk, segments)
    log.info("MuST-C %s: %d segments of %d talks -> %s", split, len(dd), len(wav_scp), out_dir)
    return dd


def prepare(
    src_root: str | os.PathLike,
    out_root: str | os.PathLike,
    lang: str = "de",
    splits: Sequence[str] = SPLITS,
) -> dict[str, DataDir]:
    """MuST-C ``<src_root>/en-<lang>/data/<split>/`` -> ``out_root/<split>/`` for each split.

    Returns ``{split: DataDir}``. See the module docstring for ids, fields and errors.
    """
    data_dir = _require(Path(src_root).resolve() / f"en-{lang}" / "data", "MuST-C data directory")
    out = Path(out_root)
    return {s: prepare_split(data_dir, s, out / s, lang=lang) for s in splits}
