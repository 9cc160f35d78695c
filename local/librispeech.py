"""LibriSpeech (OpenSLR 12) -> Kaldi data dirs for ASR.

Published layout (the ``*.tar.gz`` archives unpacked under ``src_root``; each unpacks into
``LibriSpeech/``)::

    <src_root>/LibriSpeech/<subset>/<speaker>/<chapter>/
        <speaker>-<chapter>-<utt>.flac          16 kHz FLAC, one utterance each
        <speaker>-<chapter>.trans.txt           "<speaker>-<chapter>-<utt> UPPER CASE WORDS"

with ``<subset>`` one of ``train-clean-100``, ``train-clean-360``, ``train-other-500``,
``dev-clean``, ``dev-other``, ``test-clean``, ``test-other``.

What ``prepare`` writes: one data dir per subset, named with ``-`` -> ``_``
(``out_root/train_clean_100/``, ``out_root/dev_clean/``, ...), holding ``wav.scp`` (utterance ->
absolute flac path), ``text`` (upper case, as published), ``utt2spk``/``spk2utt``. As in the
Kaldi and ESPnet recipes, the speaker of an utterance is ``<speaker>-<chapter>`` (one reader in
one chapter), a prefix of the utterance id.

Errors: a missing subset/transcript file raises FileNotFoundError naming it; a transcript line
that is empty, has no words, or names an utterance of another chapter raises ValueError naming
file and line; a transcript line whose flac is missing raises FileNotFoundError naming the
utterance and path.

DOWNLOAD (needs network access). Licence CC BY 4.0. Recipe stage 0 calls ``download`` (the
subsets of the 100 h recipe from openslr.org); by hand::

    mkdir -p downloads && cd downloads
    # also train-clean-360 and train-other-500 for the 960 h set
    for part in train-clean-100 dev-clean dev-other test-clean test-other; do
        wget https://www.openslr.org/resources/12/$part.tar.gz
        tar -xzf $part.tar.gz          # -> LibriSpeech/$part/
    done
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from s2s.data.datadir import DataDir, write_datadir

log = logging.getLogger("local.librispeech")  # loaded under a private package name

SUBSETS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)


OPENSLR_URL = "https://www.openslr.org/resources/12"
DOWNLOAD_SUBSETS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")


def download(
    root: str | os.PathLike,
    subsets: Sequence[str] = DOWNLOAD_SUBSETS,
    base_url: str = OPENSLR_URL,
) -> None:
    """Fetch ``<base_url>/<subset>.tar.gz`` and unpack it under ``root`` (-> ``LibriSpeech/``).

    A subset already unpacked is skipped; the archive is fetched to ``*.part`` and renamed only
    when complete, so an interrupted download restarts cleanly instead of unpacking a stub."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for subset in subsets:
        if subset not in SUBSETS:
            raise ValueError(f"unknown LibriSpeech subset {subset!r}; known: {', '.join(SUBSETS)}")
        if (root / "LibriSpeech" / subset).is_dir():
            log.info("%s already unpacked under %s: skipped", subset, root / "LibriSpeech")
            continue
        archive = root / f"{subset}.tar.gz"
        if not archive.is_file():
            url = f"{base_url}/{subset}.tar.gz"
            log.info("downloading %s", url)
            part = archive.with_suffix(".gz.part")
            with urllib.request.urlopen(url) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f, length=1 << 20)
            part.rename(archive)
        log.info("unpacking %s", archive)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")  # refuses absolute paths and links out of root
        if not (root / "LibriSpeech" / subset).is_dir():
            raise RuntimeError(f"{archive} did not unpack into {root / 'LibriSpeech' / subset}")


def set_name(subset: str) -> str:
    """``train-clean-100`` -> ``train_clean_100`` (the data dir name)."""
    return subset.replace("-", "_")


def prepare_subset(subset_dir: Path, out_dir: Path) -> DataDir:
    """One subset directory (``.../LibriSpeech/dev-clean``) -> the data dir ``out_dir``."""
    if not subset_dir.is_dir():
        raise FileNotFoundError(f"{subset_dir}: LibriSpeech subset directory not found")
    trans_files = sorted(subset_dir.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise FileNotFoundError(
            f"{subset_dir}: no <speaker>/<chapter>/<speaker>-<chapter>.trans.txt files"
        )
    wav_scp: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    for trans in trans_files:
        chapter = trans.name[: -len(".trans.txt")]  # "<speaker>-<chapter>"
        with open(trans, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for lineno, line in enumerate(lines, start=1):
            where = f"{trans}:{lineno}"
            parts = line.split(maxsplit=1)
            if not parts:
                raise ValueError(f"{where}: empty line")
            utt = parts[0]
            words = " ".join(parts[1].split()) if len(parts) > 1 else ""
            if not words:
                raise ValueError(f"{where}: empty transcript for {utt}")
            if not utt.startswith(chapter + "-"):
                raise ValueError(f"{where}: utterance {utt} does not belong to chapter {chapter}")
            if utt in text:
                raise ValueError(f"{where}: utterance {utt} is listed twice")
            flac = trans.parent / f"{utt}.flac"
            if not flac.is_file():
                raise FileNotFoundError(f"utterance {utt}: audio file not found: {flac}")
            wav_scp[utt] = str(flac)
            text[utt] = words
            utt2spk[utt] = chapter
    dd = write_datadir(out_dir, wav_scp, {"text": text}, utt2spk)
    log.info("LibriSpeech %s: %d utterances -> %s", subset_dir.name, len(dd), out_dir)
    return dd


def prepare(
    src_root: str | os.PathLike,
    out_root: str | os.PathLike,
    subsets: Sequence[str] | None = None,
) -> dict[str, DataDir]:
    """``<src_root>/LibriSpeech/<subset>/`` -> ``out_root/<subset with _>/`` for each subset.

    ``subsets=None`` prepares every official subset that is present (at least one must be).
    Returns ``{set name: DataDir}``, e.g. ``{"dev_clean": ...}``.
    """
    root = Path(src_root).resolve() / "LibriSpeech"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: LibriSpeech directory not found (unpack the archives)")
    if subsets is None:
        subsets = [s for s in SUBSETS if (root / s).is_dir()]
        if not subsets:
            raise FileNotFoundError(f"{root}: none of the subsets {', '.join(SUBSETS)} is there")
    out = Path(out_root)
    return {set_name(s): prepare_subset(root / s, out / set_name(s)) for s in subsets}
