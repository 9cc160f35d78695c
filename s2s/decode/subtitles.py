"""Subtitles from timed segments: SubRip (.srt) and WebVTT (.vtt), what `s2s-decode --format
srt|vtt` prints for a long recording (Speech2Text.transcribe's segments)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Timed(Protocol):
    start: float
    end: float

    @property
    def text(self) -> str: ...


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments: Sequence[Timed]) -> str:
    """Numbered cues "HH:MM:SS,mmm --> HH:MM:SS,mmm", a blank line after each."""
    cues = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Sequence[Timed]) -> str:
    """A "WEBVTT" header, then cues "HH:MM:SS.mmm --> HH:MM:SS.mmm", a blank line between."""
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in segments]
    return "\n".join(["WEBVTT\n", *cues])
