"""Embedded spoken-phrases corpus: synthesised English speech with German translations.

Nothing to download: ``prepare`` samples distinct sentence pairs from the phrase grammar
(``grammar.py``), speaks the English with espeak-ng (``s2s.synth.tts``) and writes

- ``out_root/wav/<set>/<utt>.wav``: 16 kHz 16-bit PCM mono;
- ``out_root/<set>/``: a data dir with ``wav.scp``, ``utt2spk``, ``spk2utt``, ``text`` (the English
  transcript, the ASR target), ``text.en`` (the same) and ``text.de`` (the German translation).

Sets ``train``, ``dev`` and ``test`` have disjoint sentences. Train and dev are spoken by
``TRAIN_VOICES``; test only by ``TEST_VOICES``, which training never hears. Each utterance
draws its voice, speaking rate (words per minute), pitch and pitch range, and how it is
recorded (``s2s.synth.scene.Scene``): a leading and a trailing pause of 0-0.8 s, a peak
level, background noise (most of the time: white, pink, or babble of three other utterances
of the same set) at 5-30 dB SNR, and for some a synthetic room's reverberation. Every set,
test included, is recorded this way, so reported scores are on varied speech. The draws
come from a random stream seeded by (seed, set, index), so the corpus is a pure function of
the arguments: re-running gives identical files, whatever ``nj``.

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
from dataclasses import dataclass, replace
from pathlib import Path

from s2s.data.datadir import DataDir, write_datadir
from s2s.synth.acoustics import NOISE_KINDS
from s2s.synth.scene import Scene
from s2s.synth.tts import ENGLISH_VOICES, SpeechJob, synthesize_files

from .grammar import Pair, generate_pairs

# local/ is loaded under a private package name (s2s/recipe/corpus.py): name the logger.
log = logging.getLogger("local.phrases.prepare")

TEST_VOICES = ("en-gb-x-rp+f4", "en-us-nyc")
TRAIN_VOICES = tuple(v for v in ENGLISH_VOICES if v not in TEST_VOICES)
RATE_RANGE = (130, 220)  # espeak words per minute (its default is 175)
PITCH_RANGE = (25, 75)  # espeak pitch, 0..100
INTONATION_RANGE = (25, 75)  # espeak pitch range (monotone 0 .. lively 100)
PAUSE_RANGE_S = (0.0, 0.8)  # each of the leading and the trailing pause
LEVEL_RANGE_DB = (-26.0, -1.0)  # peak level, dB full scale
NOISE_PROB = 0.8  # the rest are clean (apart from the pauses, level and room)
SNR_RANGE_DB = (5.0, 30.0)
BABBLE_TALKERS = 3
BABBLE_POOL = 24  # babble talkers come from a set's first utterances (each worker caches them)
REVERB_PROB = 0.3
RT60_RANGE_S = (0.2, 0.7)
DRR_RANGE_DB = (0.0, 10.0)


@dataclass(frozen=True)
class Utterance:
    """Everything needed to synthesise one utterance (a pure function of these fields);
    ``babble`` holds the indices, within its set, of the utterances talking behind it."""

    utt_id: str
    speaker: str
    pair: Pair
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    scene: Scene
    babble: tuple[int, ...]
    seed: int
    path: Path


def speaker_id(voice: str) -> str:
    """``en-us+f3`` -> ``en_us_f3`` (only ``[a-z0-9_]``, which sort after the ``-`` separator)."""
    return re.sub(r"[^a-z0-9]", "_", voice.lower())


def plan_scene(rng: random.Random) -> Scene:
    """How one utterance is recorded, drawn from ``rng`` (see the module docstring)."""
    noise = rng.choice(NOISE_KINDS) if rng.random() < NOISE_PROB else "none"
    reverb = rng.random() < REVERB_PROB
    return Scene(
        lead_s=round(rng.uniform(*PAUSE_RANGE_S), 3),
        trail_s=round(rng.uniform(*PAUSE_RANGE_S), 3),
        peak=round(10 ** (rng.uniform(*LEVEL_RANGE_DB) / 20), 4),
        noise=noise,
        snr_db=round(rng.uniform(*SNR_RANGE_DB), 1),
        rt60_s=round(rng.uniform(*RT60_RANGE_S), 2) if reverb else 0.0,
        drr_db=round(rng.uniform(*DRR_RANGE_DB), 1),
    )


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
        scene = plan_scene(rng)
        if scene.noise == "babble" and len(pairs) < 2:  # nobody else to talk behind it
            scene = replace(scene, noise="white")
        others = [j for j in range(min(len(pairs), BABBLE_POOL)) if j != i]
        utts.append(
            Utterance(
                utt_id=utt_id,
                speaker=spk,
                pair=pair,
                voice=voice,
                rate=rng.randint(*RATE_RANGE),
                pitch=rng.randint(*PITCH_RANGE),
                pitch_range=rng.randint(*INTONATION_RANGE),
                scene=scene,
                babble=tuple(rng.sample(others, min(BABBLE_TALKERS, len(others))))
                if scene.noise == "babble"
                else (),
                seed=rng.randrange(2**31),
                path=wav_dir / f"{utt_id}.wav",
            )
        )
    return utts


def speech_job(u: Utterance, others: list[Utterance]) -> SpeechJob:
    """What s2s.synth.tts needs to speak ``u`` (the English side of its pair) in its scene, with
    ``others`` (its set) for the babble behind it."""
    return SpeechJob(
        u.pair.en, u.voice, u.rate, u.pitch, u.pitch_range, u.seed, u.path, u.scene,
        tuple(_clean_job(others[j]) for j in u.babble),
    )  # fmt: skip


def _clean_job(u: Utterance) -> SpeechJob:
    return SpeechJob(u.pair.en, u.voice, u.rate, u.pitch, u.pitch_range, u.seed)


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
        durations = synthesize_files([speech_job(u, utts) for u in utts], nj)
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
