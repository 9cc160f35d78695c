"""Text to speech with espeak-ng, through ctypes into the library ``espeakng-loader`` ships.

``synthesize(text, voice, rate, pitch, ...)`` returns (N,) float32 mono at 16 kHz (espeak
speaks at 22050 Hz; torchaudio's sinc resampler converts), optionally with white
noise at a given SNR (s2s.synth.scene.render).

Determinism: espeak-ng keeps synthesis state between utterances that no API resets (a static
pitch-flutter phase in its wave generator), so the same call gives slightly different audio
depending on what was spoken before. To make every utterance a pure function of its arguments,
each call loads the library afresh (``dlopen``), initialises it, speaks, and unloads it
(``dlclose``); this costs about 7 ms per utterance. The random seed of espeak-ng's own noise
sources (klatt voices) is set from ``seed`` as well.

Processes: each call is self-contained, so any number of worker processes (fork or spawn) can
synthesise at once; within a process a lock serialises calls (the library is not thread-safe).
If something else in the process keeps libespeak-ng loaded, ``dlclose`` cannot unload it and
output may then depend on call order (still valid audio).

Files: ``synthesize_files(jobs, nj)`` speaks many ``SpeechJob``s into 16-bit wav files, each
recorded in its scene (pauses, level, noise, room: s2s.synth.scene), in ``nj`` spawned
worker processes (the embedded phrases corpus, local/phrases, uses it).

Voices: an espeak-ng voice name (``en``, ``en-us``, ``en-gb-scotland``, ...) optionally with a
variant (``en+f3``, ``en-us+m7``); unknown names and variants raise ``TTSError``.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing as mp
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor

from s2s.synth.scene import Scene, render
from s2s.threads import torch_threads

SAMPLE_RATE = 16000

# English voices and variants that sound clearly different from each other.
ENGLISH_VOICES = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us-nyc",
    "en-us+f3",
    "en+f2",
    "en+m3",
    "en-us+m7",
    "en-gb-x-rp+f4",
    "en+klatt",
)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER values

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_LOCK = threading.Lock()
_chunks: list[np.ndarray] = []


def _collect(wav: ctypes._Pointer, n: int, events: int) -> int:  # espeak's synth callback
    if n > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0  # 0 = continue synthesis


_CALLBACK_REF = _CALLBACK(_collect)  # kept alive for as long as the module


class TTSError(RuntimeError):
    """espeak-ng is missing, rejects a voice or parameter, or produced no audio."""


def _paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError as e:
        raise TTSError(
            "the espeakng-loader package (libespeak-ng and its data) is not installed"
        ) from e
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


@contextmanager
def _engine() -> Iterator[tuple[ctypes.CDLL, int]]:
    """A freshly loaded, initialised libespeak-ng and its native sample rate; unloaded after."""
    lib_path, data_path = _paths()
    lib = ctypes.CDLL(lib_path)
    try:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        # 1000 ms callback buffers: fewer Python callbacks per utterance
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 1000, data_path.encode(), 0)
        if rate <= 0:
            raise TTSError(f"espeak_Initialize failed (data path {data_path})")
        lib.espeak_SetSynthCallback(_CALLBACK_REF)
        yield lib, rate
    finally:
        lib.espeak_Terminate()
        handle = lib._handle
        del lib
        import _ctypes  # dlclose is only exposed here

        _ctypes.dlclose(handle)  # so the next call starts from a pristine library state


def _check_voice(voice: str, data_path: str) -> None:
    if not voice or any(c.isspace() for c in voice):
        raise TTSError(f"invalid voice name {voice!r}")
    if "+" in voice:
        variant = voice.split("+", 1)[1]
        if not (Path(data_path) / "voices" / "!v" / variant).is_file():
            raise TTSError(f"voice {voice!r}: espeak-ng has no variant {variant!r}")


def synthesize_native(
    text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
    seed: int = 0,
) -> tuple[np.ndarray, int]:  # fmt: skip
    """espeak-ng's own output: ((N,) int16 samples, sample rate in Hz, 22050).

    ``rate`` is words per minute (80..450), ``pitch`` and ``pitch_range`` 0..100 (50 = the
    voice's default)."""
    if not text.strip():
        raise TTSError(f"nothing to say: {text!r}")
    if not 80 <= rate <= 450:
        raise TTSError(f"rate must be 80..450 words per minute, got {rate}")
    for name, v in (("pitch", pitch), ("pitch_range", pitch_range)):
        if not 0 <= v <= 100:
            raise TTSError(f"{name} must be 0..100, got {v}")
    _check_voice(voice, _paths()[1])
    data = text.encode("utf-8")
    with _LOCK, _engine() as (lib, sr):
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise TTSError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            if lib.espeak_SetParameter(param, int(value), 0) != _EE_OK:
                raise TTSError(f"espeak_SetParameter({param}, {value}) failed")
        lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
        _chunks.clear()
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
    if err != _EE_OK:
        raise TTSError(f"espeak_Synth failed with code {err} for {text!r} (voice {voice})")
    if not np.any(samples):
        raise TTSError(f"espeak-ng produced no audio for {text!r} (voice {voice})")
    return samples, sr


@functools.lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # = torchaudio.functional.resample, with the sinc kernel built once instead of per call
    return torchaudio.transforms.Resample(orig, new)


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    snr_db: float | None = None,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
) -> Tensor:
    """Speak ``text``: (N,) float32 mono in [-1, 1] at ``sample_rate``.

    ``snr_db`` adds Gaussian noise (None: clean). The result is a pure function of the
    arguments (``seed`` drives the noise and espeak's own random sources)."""
    samples, sr = synthesize_native(text, voice, rate, pitch, pitch_range, seed)
    wave = torch.from_numpy(samples.astype(np.float32) / 32768.0)
    if sr != sample_rate:
        with torch.no_grad():
            wave = _resampler(sr, sample_rate)(wave)
    if snr_db is not None:
        scene = Scene(peak=None, noise="white", snr_db=float(snr_db), noise_scale="expected")
        wave = render(wave, scene, sample_rate, torch.Generator().manual_seed(int(seed)))
    return wave.clamp_(-1.0, 1.0)


@dataclass(frozen=True)
class SpeechJob:
    """One utterance to speak into a wav file: the arguments of ``synthesize`` (without noise),
    the recording conditions (``scene``: pauses, level, noise, room; s2s.synth.scene) and,
    for babble noise, the other utterances that talk in the background (their ``path`` and
    ``scene`` unused). The file is a pure function of these fields."""

    text: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    seed: int
    path: Path | None = None
    scene: Scene = Scene()
    babble: tuple[SpeechJob, ...] = ()

    def clean(self) -> Tensor:
        """The clean speech, (N,) float32 at SAMPLE_RATE."""
        return synthesize(
            self.text, self.voice, self.rate, self.pitch, self.pitch_range, None, self.seed
        )


@functools.lru_cache(maxsize=64)
def _clean_cached(job: SpeechJob) -> Tensor:
    return job.clean()  # babble talkers recur across a set's utterances


def synthesize_to_file(job: SpeechJob) -> tuple[Path, float]:
    """Speak ``job`` into ``job.path`` (16 kHz 16-bit PCM mono) in its scene; returns
    (path, duration s)."""
    if job.path is None:
        raise ValueError(f"speech job {job.text!r} has no path to write")
    babble = [_clean_cached(b) for b in job.babble]
    wave = render(
        job.clean(), job.scene, SAMPLE_RATE, torch.Generator().manual_seed(job.seed), babble
    )
    pcm = np.round(wave.clamp(-1.0, 32767 / 32768).numpy() * 32768).astype(np.int16)
    sf.write(str(job.path), pcm, SAMPLE_RATE, subtype="PCM_16")
    return job.path, len(pcm) / SAMPLE_RATE


def _init_worker() -> None:
    torch.set_num_threads(1)  # nj processes share the cores; intra-op threads would oversubscribe


def synthesize_files(jobs: Sequence[SpeechJob], nj: int = 1) -> dict[Path, float]:
    """Run every job, in ``nj`` processes; returns path -> duration in s."""
    if nj <= 1 or len(jobs) < 2:
        # One intra-op thread, as in the workers: a float reduction's order (an SNR's power)
        # follows the thread count, and the files must not depend on nj.
        with torch_threads(1):
            return dict(synthesize_to_file(j) for j in jobs)
    # spawn, not fork: a child forked after the parent's OpenMP pool started deadlocks in its
    # first threaded op (seen with resampling's torch.cos in the test suite). The workers
    # import this module by name, so the job and its runner live here, not in local/.
    ctx = mp.get_context("spawn")
    with ctx.Pool(nj, initializer=_init_worker) as pool:
        return dict(pool.imap_unordered(synthesize_to_file, jobs, chunksize=16))
