"""SLURP (spoken language understanding) -> Kaldi data dirs for ASR and SLU.

Published layout under ``src_root`` (the GitHub repository ``pswietojanski/slurp`` for the
text, plus its audio tarballs unpacked into ``audio/``)::

    <src_root>/dataset/slurp/{train,devel,test}.jsonl     one prompt a line (below)
    <src_root>/dataset/slurp/metadata.json                optional: speaker of each recording
    <src_root>/dataset/slurp/train_synthetic.jsonl        optional: synthetic training prompts
    <src_root>/audio/slurp_real/audio-<id>[-headset].flac real recordings
    <src_root>/audio/slurp_synth/audio-<id>.flac          synthetic (include_synthetic=True)

A prompt line (fields used here; the rest, e.g. entities, is ignored)::

    {"slurp_id": 4489, "sentence": "wake me up at five am this week", "intent": "alarm_set",
     "action": "set", "scenario": "alarm",
     "recordings": [{"file": "audio-1434542201-headset.flac", ...}, ...]}

Every recording of a prompt is one utterance. What ``prepare`` writes, per set
(``out_root/{train,devel,test}/``, names as published and as in ESPnet's recipe):

- ``wav.scp`` (utterance -> absolute flac path), ``utt2spk``;
- ``text``: the transcript (``sentence`` as published);
- ``text.intent``: the intent label ``<scenario>_<action>`` (the ``intent`` field);
- ``text.slu``: the SLU target ``"<intent> <transcript>"``, the intent label as the first
  word followed by the transcript (ESPnet's SLURP convention), e.g.
  ``alarm_set wake me up at five am this week``; intent accuracy is scored on its first word.

Ids: recording ``<file without 'audio-' and '.flac'>``; with ``metadata.json`` the speaker is
``slurp_<usrid>`` and the utterance ``slurp_<usrid>-<recording>``; without it, the utterance is
``slurp-<recording>`` and is its own speaker (Kaldi's convention for unknown speakers).
Synthetic utterances have speaker ``slurp_synthetic``.

Known quirk: a recording can be listed by more than one prompt; as in ESPnet's recipe, only its
first listing (in the order train, devel, test) is kept and the number skipped is logged.

Errors: a missing file/directory raises FileNotFoundError naming it; a line that is not JSON,
lacks a field or has an empty sentence raises ValueError naming file and line; a recording
whose flac is missing raises FileNotFoundError naming the utterance and path.

DOWNLOAD (needs network access; run by the user, not by s2s). Licence CC BY 4.0::

    git clone https://github.com/pswietojanski/slurp downloads   # dataset/slurp/*.jsonl
    cd downloads && mkdir -p audio && cd audio
    wget https://zenodo.org/record/4274930/files/slurp_real.tar.gz    # about 6 GB
    wget https://zenodo.org/record/4274930/files/slurp_synth.tar.gz   # optional
    tar -xzf slurp_real.tar.gz && tar -xzf slurp_synth.tar.gz         # -> slurp_real/, slurp_synth/
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from s2s.data.datadir import DataDir, write_datadir

log = logging.getLogger("local.slurp")  # loaded under a private package name

SETS = ("train", "devel", "test")


def _load_speakers(path: Path) -> dict[str, str]:
    """metadata.json -> {recording file name: usrid}."""
    with open(path, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    speakers: dict[str, str] = {}
    for key, record in meta.items():
        recs = record.get("recordings") if isinstance(record, dict) else None
        if not isinstance(recs, dict):
            raise ValueError(f"{path}: entry {key!r} has no 'recordings' mapping")
        for fname, info in recs.items():
            usrid = info.get("usrid") if isinstance(info, dict) else None
            if not usrid:
                raise ValueError(f"{path}: recording {fname!r} of entry {key!r} has no usrid")
            speakers[fname] = "".join(str(usrid).split())
    return speakers


def _read_prompts(path: Path) -> list[tuple[int, dict[str, Any]]]:
    prompts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            prompts.append((lineno, obj))
    return prompts


def _recording_id(fname: str) -> str:
    stem = Path(fname).name
    stem = stem[: -len(".flac")] if stem.endswith(".flac") else Path(stem).stem
    return stem[len("audio-") :] if stem.startswith("audio-") else stem


def _add_prompts(
    path: Path,
    audio_dir: Path,
    speakers: dict[str, str] | None,
    fixed_speaker: str | None,
    seen: set[str],
    tables: dict[str, dict[str, str]],
) -> int:
    """Add every recording of ``path``'s prompts to ``tables``; return how many were skipped as
    already listed."""
    n_skipped = 0
    for lineno, obj in _read_prompts(path):
        where = f"{path}:{lineno}"
        for key in ("sentence", "recordings"):
            if key not in obj:
                raise ValueError(f"{where}: prompt lacks '{key}'")
        sentence = " ".join(str(obj["sentence"]).split())
        if not sentence:
            raise ValueError(f"{where}: empty sentence")
        intent = obj.get("intent") or f"{obj.get('scenario', '')}_{obj.get('action', '')}"
        intent = str(intent)
        if intent.startswith("_") or intent.endswith("_") or len(intent.split()) != 1:
            raise ValueError(f"{where}: bad or missing intent {intent!r}")
        if not obj["recordings"]:
            log.warning("%s: prompt has no recordings", where)
        for rec in obj["recordings"]:
            fname = rec.get("file") if isinstance(rec, dict) else None
            if not fname:
                raise ValueError(f"{where}: a recording without 'file'")
            rec_id = _recording_id(fname)
            if rec_id in seen:
                n_skipped += 1
                continue
            seen.add(rec_id)
            if fixed_speaker is not None:
                spk = fixed_speaker
            elif speakers is not None:
                if fname not in speakers:
                    raise ValueError(f"{where}: recording {fname} is not in metadata.json")
                spk = f"slurp_{speakers[fname]}"
            else:
                spk = None
            utt = f"{spk}-{rec_id}" if spk is not None else f"slurp-{rec_id}"
            audio = audio_dir / fname
            if not audio.is_file():
                raise FileNotFoundError(f"utterance {utt}: audio file not found: {audio}")
            tables["wav.scp"][utt] = str(audio)
            tables["utt2spk"][utt] = spk if spk is not None else utt
            tables["text"][utt] = sentence
            tables["text.intent"][utt] = intent
            tables["text.slu"][utt] = f"{intent} {sentence}"
    return n_skipped


def prepare(
    src_root: str | os.PathLike,
    out_root: str | os.PathLike,
    sets: Sequence[str] = SETS,
    include_synthetic: bool = False,
) -> dict[str, DataDir]:
    """SLURP -> ``out_root/<set>/`` for each of ``sets``; ``include_synthetic`` adds the
    synthetic prompts (``train_synthetic.jsonl``, ``audio/slurp_synth/``) to ``train``.

    Returns ``{set: DataDir}``.
    """
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise ValueError(f"unknown SLURP sets {unknown}; choose from {SETS}")
    root = Path(src_root).resolve()
    text_dir = root / "dataset" / "slurp"
    real_dir = root / "audio" / "slurp_real"
    for path, what in ((text_dir, "SLURP text directory"), (real_dir, "SLURP audio directory")):
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: {what} not found (see DOWNLOAD in local/slurp.py)")
    meta = text_dir / "metadata.json"
    speakers = _load_speakers(meta) if meta.is_file() else None
    if speakers is None:
        log.warning("%s not found: each utterance is its own speaker", meta)
    seen: set[str] = set()
    out: dict[str, DataDir] = {}
    # Always go through train, devel, test in that order so that a recording listed twice
    # stays in the same set whatever `sets` asks for; unrequested sets only mark recordings.
    for name in SETS:
        path = text_dir / f"{name}.jsonl"
        if name not in sets:
            if path.is_file():
                seen.update(
                    _recording_id(str(r.get("file", "")))
                    for _, obj in _read_prompts(path)
                    for r in obj.get("recordings", [])
                    if isinstance(r, dict)
                )
            continue
        if not path.is_file():
            raise FileNotFoundError(f"{path}: SLURP prompt file not found")
        tables: dict[str, dict[str, str]] = {
            k: {} for k in ("wav.scp", "utt2spk", "text", "text.intent", "text.slu")
        }
        skipped = _add_prompts(path, real_dir, speakers, None, seen, tables)
        if name == "train" and include_synthetic:
            synth = text_dir / "train_synthetic.jsonl"
            synth_dir = root / "audio" / "slurp_synth"
            for p in (synth, synth_dir):
                if not p.exists():
                    raise FileNotFoundError(f"{p}: needed for include_synthetic=True")
            skipped += _add_prompts(synth, synth_dir, None, "slurp_synthetic", seen, tables)
        if skipped:
            log.warning("SLURP %s: skipped %d recordings already listed earlier", name, skipped)
        if not tables["text"]:
            raise ValueError(f"{path}: no recordings")
        texts = {k: v for k, v in tables.items() if k.startswith("text")}
        dd = write_datadir(Path(out_root) / name, tables["wav.scp"], texts, tables["utt2spk"])
        log.info("SLURP %s: %d utterances", name, len(dd))
        out[name] = dd
    return out
