"""Embedded spoken-phrases corpus: synthesised English speech with German translations.

Nothing to download: ``prepare`` samples distinct sentence pairs from the phrase grammar
(``grammar.py``), speaks the English with espeak-ng (``s2s.data.tts``) and writes

- ``out_root/wav/<set>/<utt>.wav``: 16 kHz 16-bit PCM mono;
- ``out_root/<set>/``: a data dir with ``wav.scp``, ``utt2spk``, ``spk2utt``, ``text`` (the English
  transcript, the ASR target), ``text.en`` (the same) and ``text.de`` (the German translation).

Sets ``train``, ``dev`` and ``test`` have disjoint sentences. Train and dev are spoken by
``TRAIN_VOICES``; test only by ``TEST_VOICES``, which training never hears. Each utterance
draws its voice, speaking rate (words per minute), pitch, pitch range, loudness and (half of
the time) a noise level from a random stream seeded by (seed, set, index), so the corpus is a
pure function of the arguments: re-running gives identical files, whatever ``nj``.

The speaker of an utterance is its voice; speaker ids are the voice names with every
character outside ``[a-z0-9]`` replaced by ``_`` (``en-us+f3`` -> ``en_us_f3``) and utterance
ids are ``<speaker>-<set><index>``, so utt2spk sorted by utterance is sorted by speaker.
``wav.scp`` paths are ``out_root`` joined with the relative path above (relative when
``out_root`` is relative, as in Kaldi).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from s2s.data.datadir import DataDir, write_datadir
from s2s.data.tts import ENGLISH_VOICES, SpeechJob, synthesize_files

from .grammar import Pair, generate_pairs

# local/ is loaded under a private package name (s2s/recipe/corpus.py): name the logger.
log = logging.getLogger("local.phrases.prepare")

TEST_VOICES = ("en-gb-x-rp+f4", "en-us-nyc")
TRAIN_VOICES = tuple(v for v in ENGLISH_VOICES if v not in TEST_VOICES)
RATE_RANGE = (130, 220)  # espeak words per minute (its default is 175)
PITCH_RANGE = (25, 75)  # espeak pitch, 0..100
INTONATION_RANGE = (25, 75)  # espeak pitch range (monotone 0 .. lively 100)
SNR_RANGE_DB = (10.0, 35.0)
NOISE_PROB = 0.5
PEAK_RANGE = (0.3, 0.9)  # loudness: peak amplitude after scaling


@dataclass(frozen=True)
class Utterance:
    """Everything needed to synthesise one utterance (a pure function of these fields)."""

    utt_id: str
    speaker: str
    pair: Pair
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    snr_db: float | None
    peak: float
    seed: int
    path: Path


def speaker_id(voice: str) -> str:
    """``en-us+f3`` -> ``en_us_f3`` (only ``[a-z0-9_]``, which sort after the ``-`` separator)."""
    return re.sub(r"[^a-z0-9]", "_", voice.lower())


def plan_set(
    name: str, pairs: list[Pair], voices: tuple[str, ...], seed: int, wav_dir: Path
) -> list[Utterance]:
    """Per-utterance synthesis settings for one set, each from its own seeded stream."""
    if not voices:
        raise ValueError(f"set {name!r}: no voices to speak it")
    utts = []
    for i, pair in enumerate(pairs):
        rng = random.Random(f"phrases/{seed}/{name}/{i}")  # str seeds hash stably (SHA-512)
        voice = rng.choice(voices)
        spk = speaker_id(voice)
        utt_id = f"{spk}-{name}{i:05d}"
        noisy = rng.random() < NOISE_PROB
        snr = round(rng.uniform(*SNR_RANGE_DB), 1) if noisy else None
        utts.append(
            Utterance(
                utt_id=utt_id,
                speaker=spk,
                pair=pair,
                voice=voice,
                rate=rng.randint(*RATE_RANGE),
                pitch=rng.randint(*PITCH_RANGE),
                pitch_range=rng.randint(*INTONATION_RANGE),
                snr_db=snr,
                peak=rng.uniform(*PEAK_RANGE),
                seed=rng.randrange(2**31),
                path=wav_dir / f"{utt_id}.wav",
            )
        )
    return utts


def speech_job(u: Utterance) -> SpeechJob:
    """What s2s.data.tts needs to speak ``u`` (the English side of its pair)."""
    return SpeechJob(
        u.pair.en, u.voice, u.rate, u.pitch, u.pitch_range, u.snr_db, u.peak, u.seed, u.path
    )


def prepare(
    out_root: str | Path,
    n_train: int = 3000,
    n_dev: int = 200,
    n_test: int = 200,
    seed: int = 0,
    nj: int = 2,
    train_voices: tuple[str, ...] = TRAIN_VOICES,
    test_voices: tuple[str, ...] = TEST_VOICES,
) -> dict[str, DataDir]:
    """Generate the corpus under ``out_root`` (see the module docstring); returns
    ``{"train": DataDir, "dev": DataDir, "test": DataDir}``."""
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    for name, n in sizes.items():
        if n < 1:
            raise ValueError(f"n_{name} must be >= 1, got {n}")
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    shared = set(train_voices) & set(test_voices)
    if shared:
        raise ValueError(f"test voices must be unseen in training; shared: {sorted(shared)}")
    spk_clash = {speaker_id(v) for v in train_voices} & {speaker_id(v) for v in test_voices}
    if spk_clash:
        raise ValueError(f"train and test voices map to the same speaker ids {sorted(spk_clash)}")
    out_root = Path(out_root)
    pairs = generate_pairs(sum(sizes.values()), seed=seed)
    voices = {"train": train_voices, "dev": train_voices, "test": test_voices}

    out: dict[str, DataDir] = {}
    start = 0
    for name, n in sizes.items():
        wav_dir = out_root / "wav" / name
        wav_dir.mkdir(parents=True, exist_ok=True)
        for old in wav_dir.glob("*.wav"):  # a previous run with other sizes leaves no strays
            old.unlink()
        utts = plan_set(name, pairs[start : start + n], voices[name], seed, wav_dir)
        start += n
        durations = synthesize_files([speech_job(u) for u in utts], nj)
        out[name] = write_datadir(
            out_root / name,
            wav_scp={u.utt_id: str(u.path) for u in utts},
            texts={
                "text": {u.utt_id: u.pair.en for u in utts},
                "text.en": {u.utt_id: u.pair.en for u in utts},
                "text.de": {u.utt_id: u.pair.de for u in utts},
            },
            utt2spk={u.utt_id: u.speaker for u in utts},
        )
        log.info(
            "phrases %s: %d utterances, %.1f min of speech, %d voices",
            name, n, sum(durations.values()) / 60, len({u.voice for u in utts}),
        )  # fmt: skip
    return out
