"""Audio loading: whatever libsndfile reads (wav, flac, ogg, ...) -> mono float32 at a given rate.

`soundfile` does the reading, not `torchaudio.load` (whose backend needs FFmpeg). Only the
[start, end) region of a recording is read, so a segment of a long meeting recording costs the
segment, not the file. Multi-channel audio is down-mixed by averaging the channels, and
`torchaudio.functional.resample` converts to `target_sr`.

soundfile is imported when a file is first opened, not with the module: s2s.data.features
(and through it the training-step benchmark) imports this module and never reads a file.

Values: integer PCM is scaled to [-1, 1) by soundfile; float files are passed through unscaled.

Paths only: like the data dir reader, s2s never runs Kaldi `cmd |` pipes. Relative paths are
relative to the current directory, as in Kaldi.

Segment ends: `segments` files store times rounded to 10 ms, so an end up to
`END_SLACK_S` (10 ms, and at least one sample) past the end of the recording is clamped to the
end; anything further is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

if TYPE_CHECKING:
    import soundfile as sf

END_SLACK_S = 0.01


class AudioSources(Protocol):
    """Where an utterance's audio is: s2s.data.datadir.DataDir (a protocol, so this module
    does not import the data dir reader, which imports nothing of audio)."""

    def audio_source(self, utt: str) -> tuple[str, float, float | None]: ...


class AudioError(RuntimeError):
    """An utterance's audio cannot be loaded, or (s2s.decode.inference) is too short or too
    long for the model; the message names the utterance id or the path. `reason` is the
    message without them (what a list of bad utterances shows beside the id and path)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def _error(where: str, reason: str) -> AudioError:
    return AudioError(f"{where}: {reason}", reason)


def _where(path: str | Path, utt_id: str | None) -> str:
    return f"utterance {utt_id!r} ({path})" if utt_id is not None else str(path)


def _open(path: str | Path, utt_id: str | None) -> sf.SoundFile:
    import soundfile as sf

    if not Path(path).is_file():
        raise _error(_where(path, utt_id), "audio file not found")
    try:
        return sf.SoundFile(str(path))
    except (sf.SoundFileError, RuntimeError) as e:  # LibsndfileError is a RuntimeError
        raise _error(_where(path, utt_id), f"cannot read audio: {e}") from e


def audio_duration(path: str | Path) -> float:
    """Length of an audio file in seconds, from its header (AudioError naming it when it
    cannot be read)."""
    with _open(path, None) as f:
        return f.frames / f.samplerate


def load_audio(
    path: str | Path,
    start: float = 0.0,
    end: float | None = None,
    target_sr: int = 16000,
    utt_id: str | None = None,
) -> Tensor:
    """Reads [start, end) seconds of an audio file as mono float32 at `target_sr`.

    Returns (N,) float32. Raises AudioError naming `utt_id` and `path` for a missing, unreadable
    or truncated file, zero-length audio, non-finite samples, or a region outside the recording.
    """
    import soundfile as sf

    if target_sr <= 0:
        raise ValueError(f"target_sr must be > 0, got {target_sr}")
    where = _where(path, utt_id)
    if start < 0 or (end is not None and end <= start):
        raise _error(where, f"invalid region [{start}, {end}) s")
    f = _open(path, utt_id)
    with f:
        sr, total = f.samplerate, f.frames
        if total <= 0:
            raise _error(where, "zero-length audio")
        first = int(round(start * sr))
        last = total if end is None else int(round(end * sr))
        if last > total:
            slack = max(1, int(round(END_SLACK_S * sr)))
            if last - total > slack:
                raise _error(
                    where,
                    f"segment end {end:.3f} s is past the end of the recording "
                    f"({total / sr:.3f} s)",
                )
            last = total
        if first >= last:
            raise _error(
                where,
                f"region [{start:.3f}, {end}) s is empty or starts after the end "
                f"of the recording ({total / sr:.3f} s)",
            )
        try:
            f.seek(first)
            data = f.read(last - first, dtype="float32", always_2d=True)  # (n, C)
        except (sf.SoundFileError, RuntimeError) as e:
            raise _error(where, f"cannot read audio: {e}") from e
    if data.shape[0] != last - first:
        raise _error(where, f"truncated file: read {data.shape[0]} of {last - first} frames")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise _error(where, "audio contains NaN or infinite samples")
    wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    if sr != target_sr:
        wave = AF.resample(wave, sr, target_sr)
    return wave


def load_utterance(datadir: AudioSources, utt_id: str, target_sr: int = 16000) -> Tensor:
    """Audio of one utterance of a data dir (through `segments` when present). Returns (N,).

    An utterance the data dir lacks raises its DataDirError."""
    path, start, end = datadir.audio_source(utt_id)
    return load_audio(path, start, end, target_sr=target_sr, utt_id=utt_id)
