"""A speech data dir's audio checked from the files' headers, against the front end's frames.

``audio_problems`` opens every ``wav.scp`` file's header (soundfile.info: rate, channels,
length) without reading its samples and reports what recipe stage 3 would stop at: a file that
cannot be opened or holds no audio (at its ``wav.scp`` line), an utterance (a whole file, or a
``segments`` line) that gives fewer than ``min_frames`` fbank frames (``FbankConfig.num_frames``,
the front end's own rule), or a segment that ends past its recording (beyond load_audio's
slack). ``s2s-validate-data --audio`` runs it.

It sits beside the front end, not in datadir.py, so that the data dir reader imports no audio
or feature code: audio <- features <- audio_checks, datadir <- features, datadir <- audio_checks.
"""

from __future__ import annotations

import math
import os

from s2s.data.audio import END_SLACK_S
from s2s.data.datadir import PathLike, Problem, file_entries, load_datadir
from s2s.data.features import FbankConfig


def audio_problems(
    path: PathLike, min_frames: int = 10, fbank: FbankConfig | None = None
) -> list[Problem]:
    """Every audio problem of a valid speech data dir (module docstring), in file order;
    fbank: the features' settings (default FbankConfig()). Missing files are left to
    ``validate_datadir(check_audio=True)``."""
    import soundfile as sf

    fbank = fbank if fbank is not None else FbankConfig()
    dd = load_datadir(path)
    if dd.text_only:
        return []
    problems: list[Problem] = []
    scp = dd.path / "wav.scp"
    headers: dict[str, tuple[int, int]] = {}  # recording -> (frames, rate)
    for e in file_entries(scp):
        if not os.path.isfile(e.value):
            continue
        try:
            info = sf.info(e.value)
        except (sf.SoundFileError, RuntimeError) as err:  # LibsndfileError: a RuntimeError
            why = f"cannot read audio: {' '.join(str(err).split())}"
            where = f"{scp}:{e.lineno}: audio of '{e.key}' ({e.value})"
            problems.append(Problem("unreadable audio", f"{where}: {why}"))
            continue
        if info.frames <= 0 or info.samplerate <= 0:
            where = f"{scp}:{e.lineno}: audio of '{e.key}' ({e.value})"
            problems.append(Problem("empty audio", f"{where}: zero-length audio"))
            continue
        headers[e.key] = (info.frames, info.samplerate)

    def judge(where: str, frames: int, sr: int) -> None:
        # the samples once resampled to the front end's rate, then its frames
        n = fbank.num_frames(math.ceil(frames * fbank.sample_rate / sr))
        if n < min_frames:
            why = f"too short: {n} frames < min_frames {min_frames} ({1000 * frames / sr:.0f} ms)"
            problems.append(Problem("too short", f"{where}: {why}"))

    if dd.segments is None:
        for e in file_entries(scp):
            if e.key in headers:
                judge(f"{scp}:{e.lineno}: audio of '{e.key}' ({e.value})", *headers[e.key])
        return problems
    seg = dd.path / "segments"
    for e in file_entries(seg):
        rec, start, end = dd.segments[e.key]
        if rec not in headers:
            continue  # its file was reported already
        total, sr = headers[rec]
        if end * sr > total + max(1, round(END_SLACK_S * sr)):  # load_audio's slack
            problems.append(
                Problem(
                    "segment past the end",
                    f"{seg}:{e.lineno}: utterance '{e.key}' ends at {end} s, after the end of "
                    f"recording '{rec}' ({total / sr:.3f} s)",
                )
            )
            continue
        judge(f"{seg}:{e.lineno}: utterance '{e.key}' ({rec})", round((end - start) * sr), sr)
    return problems
