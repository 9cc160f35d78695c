"""Stage 2: a speed-perturbed copy of a data dir (Kaldi/ESPnet style: 0.9/1.1 change both
tempo and pitch). s2s never runs shell pipes in wav.scp, so perturbed audio is written out."""

from __future__ import annotations

import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from s2s.data.audio import load_utterance
from s2s.data.datadir import DataDir, load_datadir, write_datadir
from s2s.data.perturb import speed_perturb

log = logging.getLogger(__name__)


def _prefix(factor: float) -> str:
    return f"sp{factor:g}-"


def _write_one(args: tuple[DataDir, str, float, Path, int]) -> str:
    src, utt, factor, wav_dir, sr = args
    wave = speed_perturb(load_utterance(src, utt, target_sr=sr), sr, factor)
    path = wav_dir / f"{_prefix(factor)}{utt}.wav"
    sf.write(path, wave.numpy(), sr, subtype="PCM_16")
    return str(path)


def speed_perturb_datadir(
    src_dir: Path, dst_dir: Path, factors: list[float], sample_rate: int = 16000, nj: int = 1
) -> DataDir:
    """dst_dir = src_dir's utterances as they are, plus one copy per factor with ids, speakers
    and recordings prefixed `sp<factor>-`, audio at `sample_rate` under dst_dir/wav/."""
    src = load_datadir(src_dir)
    wav_dir = Path(dst_dir) / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(src, u, f, wav_dir, sample_rate) for f in factors for u in src.utt_ids]
    # spawn: forking after torch's OpenMP pool has started can deadlock the children
    spawn = mp.get_context("spawn")
    with ProcessPoolExecutor(nj, mp_context=spawn) if nj > 1 else _Serial() as pool:
        paths = list(
            tqdm(
                pool.map(_write_one, jobs, chunksize=16),
                total=len(jobs),
                desc=f"speed perturbation {factors}",
            )
        )
    # The originals keep their recordings and segments; perturbed copies are whole files.
    wav_scp, utt2spk = {}, {}
    texts: dict[str, dict[str, str]] = {name: {} for name in src.texts}
    for u in src.utt_ids:
        path, start, end = src.audio_source(u)
        if src.segments is None:
            wav_scp[u] = path
        utt2spk[u] = src.utt2spk[u]
        for name, t in src.texts.items():
            texts[name][u] = t[u]
    segments = None
    if src.segments is not None:
        wav_scp.update(src.wav_scp)
        segments = dict(src.segments)
    for (_, u, f, _, _), path in zip(jobs, paths):
        new = _prefix(f) + u
        wav_scp[new] = path
        utt2spk[new] = _prefix(f) + src.utt2spk[u]
        for name, t in src.texts.items():
            texts[name][new] = t[u]
        if segments is not None:  # a whole-file "segment" keeps the segments file consistent
            info = sf.info(path)
            segments[new] = (new, 0.0, info.frames / info.samplerate)
    log.info("%s: %d utterances (%d perturbed)", dst_dir, len(utt2spk), len(jobs))
    return write_datadir(dst_dir, wav_scp, texts, utt2spk, segments)


class _Serial:
    """ProcessPoolExecutor's map for nj == 1, without processes."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map(self, fn, it, chunksize: int = 1):
        return map(fn, it)
