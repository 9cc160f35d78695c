"""Splitting a long recording into speech segments: energy-based voice activity detection on the
log-mel fbank frames the model reads anyway, with a maximum segment length.

Why our own: the locked stack has no segmenter. `torchaudio.functional.vad` (torchaudio 2.11,
SoX's `vad` effect) only trims silence from the *front* of a recording (the SoX recipe runs it
twice around a `reverse`), so it finds where speech starts, not where each utterance of a long
recording starts and ends; there is no webrtcvad, silero or pyannote in the lock.

The rule, per fbank frame (10 ms hop by default):

1. energy (dB) = 10·log10 of the frame's total mel power (logsumexp of the log-mel bins:
   s2s.data.features.frame_energy_db);
2. a frame is speech when its energy is above the level `threshold` of the way from the
   recording's background (the 0.05 quantile of frame energies: its pauses) to its loud level
   (the 0.99 quantile, so one click does not set it), and above `min_level_db`, so a silent
   recording has no segment; frames quieter than `min_level_db` count at it in the quantiles
   (stretches of digital silence would otherwise set the background below any real pause).
   The scale is the fbank's (Kaldi's, on 16-bit sample values):
   digital silence is about -50 dB, 16-bit dither noise about 49 dB, white noise at -60 dBFS
   about 79 dB, speech peaking near -6 dBFS about 109 dB;
3. pauses shorter than `min_silence_s` do not split; bursts shorter than `min_speech_s` are
   dropped; each segment is padded by `pad_s` on both sides (never past the middle of the
   pause to its neighbour). The default pad, 0.1 s, keeps a little of the pause a model
   heard around its training utterances: on the phrases recipe's dev set (utterances recorded
   with 0-0.8 s of pause around them) the long recording scored 2.8-4.1 BLEU more resegmented
   than with no pad, and about as much as 0.2-0.5 s (BENCHMARKS.md §40). A model that never
   heard a pause around its utterances wants 0: one lost half its BLEU to a 0.1 s pad (§11);
4. a segment longer than `max_segment_s` is cut at its quietest frame in the second half of
   the allowed length, repeatedly, so no segment exceeds it.

Works for speech over a quiet background (read speech, talks, meetings with close mics); music
or loud noise between utterances needs a model-based VAD. Returns frame spans; `frame_to_samples`
turns them into sample ranges of the waveform.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.data.features import FbankConfig


@dataclass
class VadConfig:
    """Segmentation settings (module docstring). Times in seconds."""

    threshold: float = 0.3
    min_level_db: float = 55.0
    min_silence_s: float = 0.3
    min_speech_s: float = 0.15
    pad_s: float = 0.1
    max_segment_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if min(self.min_silence_s, self.min_speech_s, self.pad_s) < 0:
            raise ValueError("min_silence_s, min_speech_s and pad_s must be >= 0")
        if self.max_segment_s < 1.0:
            raise ValueError(f"max_segment_s must be >= 1 s, got {self.max_segment_s}")


def _runs(mask: list[bool]) -> list[list[int]]:
    """[start, end) of every run of True."""
    spans, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append([start, i])
            start = None
    return spans


def speech_spans(energy_db: Tensor, frame_shift_s: float, cfg: VadConfig) -> list[tuple[int, int]]:
    """(T,) frame energies -> [start, end) frame spans of speech, in order, non-overlapping,
    none longer than cfg.max_segment_s. Empty when nothing is loud enough."""
    T = energy_db.numel()
    if T == 0:
        return []
    frames = lambda s: int(round(s / frame_shift_s))  # noqa: E731
    # Frames under min_level_db count at it: digital silence (-50 dB) says nothing of the level
    # of a recording's pauses, and where 5% of the frames were such, the background fell to it
    # and pauses of quiet room noise (about 69 dB at -70 dBFS) passed for speech.
    heard = energy_db.double().clamp(min=cfg.min_level_db)
    quiet, loud = torch.quantile(heard, torch.tensor([0.05, 0.99]).double()).tolist()
    level = max(quiet + cfg.threshold * (loud - quiet), cfg.min_level_db)
    spans = _runs((energy_db > level).tolist())

    merged: list[list[int]] = []
    for span in spans:
        if merged and span[0] - merged[-1][1] < frames(cfg.min_silence_s):
            merged[-1][1] = span[1]
        else:
            merged.append(span)
    spans = [s for s in merged if s[1] - s[0] >= max(1, frames(cfg.min_speech_s))]

    pad = frames(cfg.pad_s)
    bare = [tuple(s) for s in spans]
    for i, (a, b) in enumerate(bare):  # never past the middle of the pause to a neighbour
        lo = 0 if i == 0 else (bare[i - 1][1] + a + 1) // 2
        hi = T if i == len(bare) - 1 else (b + bare[i + 1][0]) // 2
        spans[i] = [max(lo, a - pad), min(hi, b + pad)]

    limit = max(2, frames(cfg.max_segment_s))
    out: list[tuple[int, int]] = []
    for start, end in spans:
        while end - start > limit:
            window = energy_db[start + limit // 2 : start + limit]
            cut = start + limit // 2 + int(torch.argmin(window))
            out.append((start, cut))
            start = cut
        out.append((start, end))
    return out


def frame_to_samples(span: tuple[int, int], fbank: FbankConfig, n_samples: int) -> tuple[int, int]:
    """[start, end) frames -> [start, end) samples: frame i covers [i·hop, i·hop + window)."""
    hop = fbank.shift_samples
    return span[0] * hop, min(n_samples, (span[1] - 1) * hop + fbank.window_samples)
