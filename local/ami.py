"""AMI meeting corpus, individual headset microphones (IHM) -> Kaldi data dirs for ASR.

Accepted layout under ``src_root``::

    <src_root>/amicorpus/<meeting>/audio/<meeting>.Headset-<n>.wav    16 kHz, one per headset
    <src_root>/annotations/transcripts2                              segment table (below)

The segment table is the manual annotation exported as plain text the way Kaldi's AMI recipe
does it (``egs/ami/s5/local/ami_text_prep.sh``: NXT export of ``ami_public_manual_1.6.1``, then
``local/ami_split_segments.pl``, which splits long segments at punctuation, upper-cases and
normalises the words). That script's output, ``data/local/annotations/transcripts2``, has one
segment a line::

    <meeting> <channel> <speaker> <start s> <end s> <WORDS ...>
    ES2011a H00 FEE041 34.15 34.84 OKAY

``<channel>`` ``H0<n>`` (or just ``<n>``) is headset ``<n>``, i.e. audio file
``<meeting>.Headset-<n>.wav``. Kaldi's per-set files ``{train,dev,eval}.txt`` have the same
format; pass one of them (or their concatenation) as ``transcripts=``.

Sets: the official "full-corpus-ASR" partition (embedded below as ``DEV_MEETINGS`` and
``EVAL_MEETINGS``, as in Kaldi's ``local/split_{dev,eval}.orig``); ``train`` is every other
meeting of the table. Data dirs ``out_root/{train,dev,eval}/``.

Ids as in Kaldi's ``ami_ihm_data_prep.sh``: recording ``AMI_<meeting>_H0<n>``, speaker
``AMI_<meeting>_H0<n>_<speaker>``, utterance ``<speaker id>_<start>_<end>`` with times in 10 ms
units on 7 digits (``AMI_ES2011a_H00_FEE041_0003415_0003484``); ``segments`` holds those times
in seconds. ``text`` holds the words as given.

Known quirk: some (rare) segments appear twice in the export; exact duplicates (same id and
words) are kept once and their number is logged, as Kaldi's ``sort | uniq`` does. The same id
with different words is an error.

Errors: a missing table/directory raises FileNotFoundError naming it; a line with too few
fields (no words), bad times or a bad channel raises ValueError naming file and line; a segment
whose headset wav is missing raises FileNotFoundError naming the utterance and path.

DOWNLOAD (needs network access; run by the user, not by s2s). Licence CC BY 4.0::

    # Audio: headset wavs of every meeting (about 70 GB), e.g. with Kaldi's
    #   egs/ami/s5/local/ami_download.sh ihm downloads     (writes downloads/amicorpus/...)
    # or per meeting and headset:
    wget https://groups.inf.ed.ac.uk/ami/AMICorpusMirror/amicorpus/ES2011a/audio/ES2011a.Headset-0.wav
    # Annotations -> transcripts2, from a Kaldi checkout's egs/ami/s5 (needs Java for NXT):
    local/ami_text_prep.sh downloads      # downloads ami_public_manual_1.6.1.zip and exports
    mkdir -p downloads/annotations && cp data/local/annotations/transcripts2 downloads/annotations/
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from s2s.data.datadir import DataDir, write_datadir

log = logging.getLogger("local.ami")  # loaded under a private package name

# Official full-corpus-ASR partition (Kaldi egs/ami/s5/local/split_{dev,eval}.orig).
DEV_MEETINGS = (
    "ES2011a", "ES2011b", "ES2011c", "ES2011d", "IB4001", "IB4002", "IB4003", "IB4004",
    "IB4010", "IB4011", "IS1008a", "IS1008b", "IS1008c", "IS1008d", "TS3004a", "TS3004b",
    "TS3004c", "TS3004d",
)  # fmt: skip
EVAL_MEETINGS = (
    "EN2002a", "EN2002b", "EN2002c", "EN2002d", "ES2004a", "ES2004b", "ES2004c", "ES2004d",
    "IS1009a", "IS1009b", "IS1009c", "IS1009d", "TS3003a", "TS3003b", "TS3003c", "TS3003d",
)  # fmt: skip
SETS = ("train", "dev", "eval")
_CHANNEL = re.compile(r"^(?:H0)?(\d)$")


def set_of(meeting: str) -> str:
    """The full-corpus-ASR set (train, dev or eval) of a meeting."""
    if meeting in DEV_MEETINGS:
        return "dev"
    return "eval" if meeting in EVAL_MEETINGS else "train"


_Row = tuple[str, str, str, int, int, str]  # meeting, headset n, speaker, start/end in 10 ms, words


def _parse_table(path: Path) -> dict[str, list[_Row]]:
    """Segments of the table grouped by set, one per distinct utterance."""
    by_set: dict[str, list[_Row]] = {s: [] for s in SETS}
    seen: dict[str, tuple[int, str]] = {}
    n_dup = 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, start=1):
        where = f"{path}:{lineno}"
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 6:
            raise ValueError(
                f"{where}: expected '<meeting> <channel> <speaker> <start> <end> <words>', "
                f"got {len(fields)} fields (empty transcript?)"
            )
        meeting, channel, speaker = fields[:3]
        m = _CHANNEL.match(channel)
        if m is None:
            raise ValueError(f"{where}: channel {channel!r} is not a headset 'H0<n>'")
        try:
            start, end = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(
                f"{where}: start/end are not numbers: {fields[3]} {fields[4]}"
            ) from None
        start_cs, end_cs = int(100 * start + 0.5), int(100 * end + 0.5)
        if start < 0 or end_cs <= start_cs:
            raise ValueError(f"{where}: bad segment times {fields[3]} {fields[4]}")
        words = " ".join(fields[5:])
        utt = f"AMI_{meeting}_H0{m.group(1)}_{speaker}_{start_cs:07d}_{end_cs:07d}"
        if utt in seen:
            first, first_words = seen[utt]
            if first_words != words:
                raise ValueError(
                    f"{where}: segment {utt} repeats line {first} with different words"
                )
            n_dup += 1
            continue
        seen[utt] = (lineno, words)
        by_set[set_of(meeting)].append((meeting, m.group(1), speaker, start_cs, end_cs, words))
    if n_dup:
        log.warning("%s: %d exact duplicate segment lines kept once", path, n_dup)
    return by_set


def prepare(
    src_root: str | os.PathLike,
    out_root: str | os.PathLike,
    transcripts: str | os.PathLike | None = None,
    sets: Sequence[str] = SETS,
) -> dict[str, DataDir]:
    """AMI IHM -> ``out_root/<set>/`` for each of ``sets`` (train, dev, eval).

    ``transcripts``: the segment table (default ``<src_root>/annotations/transcripts2``).
    Returns ``{set: DataDir}``.
    """
    root = Path(src_root).resolve()
    table = Path(transcripts) if transcripts is not None else root / "annotations" / "transcripts2"
    if not table.is_file():
        raise FileNotFoundError(
            f"{table}: AMI segment table not found (see DOWNLOAD in local/ami.py)"
        )
    audio_root = root / "amicorpus"
    if not audio_root.is_dir():
        raise FileNotFoundError(f"{audio_root}: AMI audio directory not found")
    for name in sets:
        if name not in SETS:
            raise ValueError(f"unknown AMI set {name!r}; choose from {SETS}")
    by_set = _parse_table(table)
    out: dict[str, DataDir] = {}
    for name in sets:
        rows = by_set[name]
        if not rows:
            raise ValueError(f"{table}: no segments of the {name} meetings")
        wav_scp: dict[str, str] = {}
        segments: dict[str, tuple[str, float, float]] = {}
        text: dict[str, str] = {}
        utt2spk: dict[str, str] = {}
        for meeting, n, speaker, start_cs, end_cs, words in rows:
            rec = f"AMI_{meeting}_H0{n}"
            spk = f"{rec}_{speaker}"
            utt = f"{spk}_{start_cs:07d}_{end_cs:07d}"
            if rec not in wav_scp:
                wav = audio_root / meeting / "audio" / f"{meeting}.Headset-{n}.wav"
                if not wav.is_file():
                    raise FileNotFoundError(f"utterance {utt}: audio file not found: {wav}")
                wav_scp[rec] = str(wav)
            segments[utt] = (rec, start_cs / 100, end_cs / 100)
            text[utt] = words
            utt2spk[utt] = spk
        dd = write_datadir(Path(out_root) / name, wav_scp, {"text": text}, utt2spk, segments)
        log.info("AMI IHM %s: %d segments, %d headset recordings", name, len(dd), len(wav_scp))
        out[name] = dd
    return out
