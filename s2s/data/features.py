"""Kaldi-compatible log-mel filterbank features, the on-disk feature dump, and CMVN.

Dump layout (one directory per data set, written by `dump_features`):

    feats.<job>.npy    float32 (frames, F), every utterance of job <job> concatenated; opened
                       with numpy's mmap so training reads a slice without loading the shard
    feats.index        `<utt> <shard file> <offset> <frames>` per line, sorted by utt
    utt2num_frames     `<utt> <frames>` per line (Kaldi's name), used for length bucketing
    feats.json         the FbankConfig, speed factor, feature dim and totals
    bad_utts           only with skip_bad=True: `<utt> <path> <reason>` for each utterance
                       left out (unreadable audio, or fewer than min_frames frames)

With speed != 1.0 the keys are the data dir's utterance ids prefixed `sp<factor>-` (ESPnet's
`sp0.9-<utt>`); the matching texts need a data dir with the same prefixed ids.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue as queue_mod
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor
from tqdm import tqdm

from s2s.data.audio import AudioError, load_audio
from s2s.data.perturb import speed_perturb
from s2s.threads import torch_threads

INDEX = "feats.index"
UTT2NUM_FRAMES = "utt2num_frames"
META = "feats.json"
BAD_UTTS = "bad_utts"
LEVELS = ("none", "max_frame")


@dataclass
class FbankConfig:
    """Log-mel filterbank settings (Kaldi `compute-fbank-feats` with dither 0 by default, so
    features are deterministic). `sample_rate` is the rate audio is resampled to first.

    level: "none" (Kaldi's features as they are) or "max_frame": every bin lowered by the
    loudest frame's log energy (`normalize_level`), so the features do not depend on the
    recording's gain, and silence before or after the speech does not move them."""

    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    sample_rate: int = 16000
    level: str = "none"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"features.level {self.level!r} not in {LEVELS}")
        if self.num_mel_bins < 1:
            raise ValueError(f"num_mel_bins must be >= 1, got {self.num_mel_bins}")
        if self.frame_length_ms <= 0 or self.frame_shift_ms <= 0:
            raise ValueError("frame_length_ms and frame_shift_ms must be > 0")
        if self.dither < 0:
            raise ValueError(f"dither must be >= 0, got {self.dither}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {self.sample_rate}")

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def shift_samples(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    def num_frames(self, samples: int) -> int:
        """Frames compute_fbank gives `samples` samples at sample_rate (Kaldi's snip_edges):
        0 below one window. The one frame-count rule, for checks and plans that do not read
        the audio."""
        if samples < self.window_samples:
            return 0
        return 1 + (samples - self.window_samples) // self.shift_samples


def compute_fbank(wave: Tensor, cfg: FbankConfig | None = None) -> Tensor:
    """Log-mel fbank of a (N,) waveform in [-1, 1] at cfg.sample_rate -> (T, num_mel_bins).

    T = floor((N - window) / shift) + 1 (Kaldi's snip_edges). Raises ValueError when N is
    shorter than one window.
    """
    cfg = cfg if cfg is not None else FbankConfig()
    if wave.dim() != 1:
        raise ValueError(f"expected a (N,) waveform, got shape {tuple(wave.shape)}")
    if wave.numel() < cfg.window_samples:
        raise ValueError(
            f"audio of {wave.numel()} samples is shorter than one {cfg.frame_length_ms} ms "
            f"window ({cfg.window_samples} samples)"
        )
    # Kaldi works on 16-bit sample values, not [-1, 1] floats
    return kaldi.fbank(
        wave.float()[None] * 32768.0,
        num_mel_bins=cfg.num_mel_bins,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
        dither=cfg.dither,
        sample_frequency=float(cfg.sample_rate),
    )


def normalize_level(feats: Tensor, level: str) -> Tensor:
    """(T, F) log-mel fbank (natural log of mel power) -> (T, F), for FbankConfig.level.

    "max_frame": a gain g on the waveform adds 2 ln g to every bin of every frame; taking the
    loudest frame's log energy (logsumexp over its bins) off every bin removes it. The loudest
    frame is speech, so pauses, or silence added before or after, leave it where it was."""
    if level == "none":
        return feats
    if level != "max_frame":
        raise ValueError(f"level {level!r} not in {LEVELS}")
    return feats - feats.logsumexp(-1).max()


def compute_features(wave: Tensor, cfg: FbankConfig) -> Tensor:
    """What the model reads: compute_fbank, then normalize_level as cfg.level says (T, F).
    Voice activity detection reads compute_fbank's raw levels instead."""
    return normalize_level(compute_fbank(wave, cfg), cfg.level)


def speed_key(utt: str, speed: float) -> str:
    """The dump key of `utt` at a speed factor: the id itself at 1.0, else `sp<factor>-<utt>`."""
    return utt if speed == 1.0 else f"sp{speed:g}-{utt}"


# (dump key, utterance id, audio path, start s, end s or None)
_Item = tuple[str, str, str, float, float | None]
# a bad utterance: (dump key, audio path, reason)
BadUtt = tuple[str, str, str]
# index entries (key, shard file, offset, frames) and the bad utterances of one shard
_ShardResult = tuple[list[tuple[str, str, int, int]], list[BadUtt]]


class BadAudioError(AudioError):
    """Some utterances of a data dir cannot be used (unreadable or too short); `bad` lists
    them all as (utt, path, reason), and the message has one line each and a count."""

    def __init__(self, message: str, bad: list[BadUtt] | None = None) -> None:
        super().__init__(message)
        self.bad = bad or []


def bad_audio_lines(bad: list[BadUtt]) -> list[str]:
    """One `utterance <utt> (<path>): <reason>` line per bad utterance."""
    return [f"utterance {k!r} ({path}): {why}" for k, path, why in bad]


def _features(
    utt: str,
    path: str,
    start: float,
    end: float | None,
    cfg: FbankConfig,
    speed: float,
    min_frames: int,
) -> Tensor:
    """(T, F) fbank of one utterance; AudioError (its reason without the id) when its audio
    cannot be read or gives fewer than min_frames frames."""
    wave = load_audio(path, start, end, target_sr=cfg.sample_rate, utt_id=utt)
    if speed != 1.0:
        wave = speed_perturb(wave, cfg.sample_rate, speed)
    ms = 1000 * wave.numel() / cfg.sample_rate
    try:
        feats = compute_features(wave, cfg)
    except ValueError as e:
        raise AudioError(f"utterance {utt!r} ({path}): too short: {e}", f"too short: {e}") from e
    if feats.shape[0] < min_frames:
        why = f"too short: {feats.shape[0]} frames ({ms:.0f} ms), the model needs {min_frames}"
        raise AudioError(f"utterance {utt!r} ({path}): {why}", why)
    return feats


def _write_npy_header(f, frames: int, dim: int) -> int:
    np.lib.format.write_array_header_1_0(
        f, {"descr": "<f4", "fortran_order": False, "shape": (frames, dim)}
    )
    return f.tell()


def _dump_shard(
    job: int,
    items: list[_Item],
    out_dir: str,
    cfg: FbankConfig,
    speed: float,
    min_frames: int,
    progress: Callable[[], None],
) -> _ShardResult:
    """Computes features of `items` into out_dir/feats.<job>.npy, reading on past bad ones.

    Returns index entries (key, shard file, offset, frames) and the bad utterances.
    """
    name = f"feats.{job}.npy"
    entries: list[tuple[str, str, int, int]] = []
    bad: list[BadUtt] = []
    offset = 0
    # same numerics whatever nj is (and no oversubscription)
    with torch_threads(1), open(Path(out_dir) / name, "wb") as f:
        # numpy pads the header so the first axis can grow in place: rewrite it at the end
        header_len = _write_npy_header(f, 0, cfg.num_mel_bins)
        for key, utt, path, start, end in items:
            try:
                feats = _features(utt, path, start, end, cfg, speed, min_frames)
            except AudioError as e:
                bad.append((key, path, " ".join(e.reason.split())))  # one line each
                progress()
                continue
            f.write(feats.numpy().astype("<f4", copy=False).tobytes())
            entries.append((key, name, offset, feats.shape[0]))
            offset += feats.shape[0]
            progress()
        f.seek(0)
        if _write_npy_header(f, offset, cfg.num_mel_bins) != header_len:
            raise RuntimeError(f"{name}: npy header changed size; dump is corrupt")
    return entries, bad


def _worker(
    job: int,
    items: list[_Item],
    out_dir: str,
    cfg: FbankConfig,
    speed: float,
    min_frames: int,
    q: mp.Queue,
) -> None:
    """Process entry point: runs one shard, reporting progress and the result through `q`."""
    try:
        result = _dump_shard(job, items, out_dir, cfg, speed, min_frames, lambda: q.put(("tick",)))
        q.put(("done", job, result))
    except BaseException:
        q.put(("error", job, RuntimeError(f"feature job {job} failed:\n{traceback.format_exc()}")))


def _run_parallel(
    jobs: list[tuple[int, list[_Item]]],
    out_dir: str,
    cfg: FbankConfig,
    speed: float,
    min_frames: int,
    bar: tqdm,
) -> list[_ShardResult]:
    """Runs one spawned process per job; returns their results in job order."""
    ctx = mp.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(j, items, out_dir, cfg, speed, min_frames, q))
        for j, items in jobs
    ]
    results: dict[int, _ShardResult] = {}
    try:
        for p in procs:
            p.start()
        while len(results) < len(procs):
            try:
                msg = q.get(timeout=1.0)
            except queue_mod.Empty:
                msg = None
            if msg is None:  # a worker killed (e.g. out of memory) never reports: look
                for (j, _), p in zip(jobs, procs):
                    if j not in results and p.exitcode not in (None, 0):
                        raise RuntimeError(f"feature job {j} died with exit code {p.exitcode}")
                continue
            if msg[0] == "tick":
                bar.update(1)
            elif msg[0] == "error":
                raise msg[2]
            else:
                results[msg[1]] = msg[2]
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    return [results[j] for j, _ in jobs]


def dump_features(
    datadir_path: str | Path,
    out_dir: str | Path,
    cfg: FbankConfig | None = None,
    nj: int = 1,
    speed: float = 1.0,
    skip_bad: bool = False,
    min_frames: int = 1,
) -> Path:
    """Computes fbank features of every utterance of a data dir into `out_dir` (layout above).

    Utterances are split into `nj` contiguous runs of the sorted ids, one shard and one process
    each; the features do not depend on nj. Every utterance is read, in one pass; bad ones
    (audio that cannot be read, or gives fewer than `min_frames` frames) are collected. Then,
    when there are any: without `skip_bad`, BadAudioError listing them all (no index is
    written); with it, they are left out, listed in out_dir/bad_utts, and a warning says how
    many. Returns out_dir.
    """
    from s2s.data.datadir import load_datadir  # written alongside; imported when used

    cfg = cfg if cfg is not None else FbankConfig()
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    datadir = load_datadir(datadir_path)
    utts = datadir.utt_ids
    if not utts:
        raise ValueError(f"data dir {datadir_path} has no utterances")
    items: list[_Item] = [(speed_key(u, speed), u, *datadir.audio_source(u)) for u in utts]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # a previous dump with another nj leaves other shard names: remove our own outputs only
    for old in [
        *out.glob("feats.*.npy"),
        out / INDEX,
        out / UTT2NUM_FRAMES,
        out / META,
        out / BAD_UTTS,
    ]:
        old.unlink(missing_ok=True)

    nj = min(nj, len(items))
    bounds = [round(i * len(items) / nj) for i in range(nj + 1)]
    jobs = [(j + 1, items[bounds[j] : bounds[j + 1]]) for j in range(nj)]
    with tqdm(total=len(items), desc=f"fbank {Path(datadir_path).name}", unit="utt") as bar:
        if nj == 1:
            results = [
                _dump_shard(1, jobs[0][1], str(out), cfg, speed, min_frames, lambda: bar.update(1))
            ]
        else:
            results = _run_parallel(jobs, str(out), cfg, speed, min_frames, bar)

    entries = [e for shard_entries, _ in results for e in shard_entries]
    bad = [b for _, shard_bad in results for b in shard_bad]
    if bad and not skip_bad:
        raise BadAudioError(
            "\n".join(
                [
                    *bad_audio_lines(bad),
                    f"{len(bad)} of {len(items)} utterances of {datadir_path} have unreadable "
                    "or too short audio (listed above)",
                ]
            ),
            bad,
        )
    if skip_bad:
        (out / BAD_UTTS).write_text("".join(f"{k} {path} {why}\n" for k, path, why in bad))
        if bad:
            warnings.warn(
                f"skipped {len(bad)} of {len(items)} utterances of {datadir_path}; "
                f"see {out / BAD_UTTS}",
                stacklevel=2,
            )
    if not entries:
        raise AudioError(f"no utterance of {datadir_path} could be read; see {out / BAD_UTTS}")
    (out / UTT2NUM_FRAMES).write_text("".join(f"{k} {n}\n" for k, _, _, n in entries))
    meta = {
        "fbank": asdict(cfg),
        "speed": speed,
        "dim": cfg.num_mel_bins,
        "num_utts": len(entries),
        "num_frames": sum(n for *_, n in entries),
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    # the index last: a dump interrupted before this point has none and cannot be opened
    (out / INDEX).write_text("".join(f"{k} {s} {o} {n}\n" for k, s, o, n in entries))
    return out


class FeatureReader:
    """Random access to a feature dump: reader[utt] -> (T, F) float32 tensor.

    Shards are opened lazily with numpy mmap; a pickled reader (DataLoader workers) reopens them.
    """

    def __init__(self, feat_dir: str | Path) -> None:
        self.dir = Path(feat_dir)
        index = self.dir / INDEX
        if not index.is_file():
            raise FileNotFoundError(f"{index}: no feature index (run dump_features first)")
        self._entries: dict[str, tuple[str, int, int]] = {}
        self._shard_end: dict[str, int] = {}  # frames the index needs in each shard
        with open(index) as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    utt, shard, offset, frames = parts[0], parts[1], int(parts[2]), int(parts[3])
                    if len(parts) != 4 or offset < 0 or frames < 1:
                        raise ValueError
                except (ValueError, IndexError):
                    raise ValueError(
                        f"{index}:{lineno}: expected '<utt> <shard> <offset> <frames>', "
                        f"got {line.rstrip()!r}"
                    ) from None
                if utt in self._entries:
                    raise ValueError(f"{index}:{lineno}: duplicate utterance {utt!r}")
                self._entries[utt] = (shard, offset, frames)
                self._shard_end[shard] = max(self._shard_end.get(shard, 0), offset + frames)
        self._shards: dict[str, np.ndarray] = {}

    def _shard(self, name: str) -> np.ndarray:
        arr = self._shards.get(name)
        if arr is None:
            path = self.dir / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard named in {self.dir / INDEX} is missing")
            arr = np.load(path, mmap_mode="r")
            if arr.ndim != 2 or arr.dtype != np.float32 or arr.shape[0] < self._shard_end[name]:
                raise ValueError(
                    f"{path}: shard is {arr.dtype} {arr.shape}, but {self.dir / INDEX} needs "
                    f"float32 (>= {self._shard_end[name]}, F)"
                )
            self._shards[name] = arr
        return arr

    def array(self, utt: str) -> np.ndarray:
        """Read-only (T, F) float32 view into the mmapped shard (no copy)."""
        try:
            shard, offset, frames = self._entries[utt]
        except KeyError:
            raise KeyError(f"utterance {utt!r} not in feature dump {self.dir}") from None
        return self._shard(shard)[offset : offset + frames]

    def __getitem__(self, utt: str) -> Tensor:
        return torch.from_numpy(np.array(self.array(utt)))

    def __contains__(self, utt: object) -> bool:
        return utt in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)

    def num_frames(self, utt: str) -> int:
        if utt not in self._entries:
            raise KeyError(f"utterance {utt!r} not in feature dump {self.dir}")
        return self._entries[utt][2]

    @property
    def dim(self) -> int:
        """Feature dimension F."""
        return int(self._shard(next(iter(self._shard_end))).shape[1])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = {}  # mmaps are reopened in the receiving process
        return state


def compute_cmvn_stats(dump_dir: str | Path, out_path: str | Path) -> Path:
    """Global per-dimension mean and std (population, ddof=0) over every frame of a dump.

    Accumulates in float64, merging per-utterance moments (Chan et al.) for stability. Writes
    {"count", "mean", "std"} as JSON, or with torch.save when out_path ends in `.pt`.
    """
    reader = FeatureReader(dump_dir)
    count = 0
    mean = m2 = None
    for utt in reader:
        x = np.asarray(reader.array(utt), dtype=np.float64)  # (T, F)
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        n = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / n)
        m2 = m2 + m2_b + delta**2 * (count * n_b / n)
        count = n
    if mean is None:
        raise ValueError(f"feature dump {dump_dir} is empty")
    stats = {"count": count, "mean": mean.tolist(), "std": np.sqrt(m2 / count).tolist()}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt":
        torch.save(stats, out)
    else:
        out.write_text(json.dumps(stats) + "\n")
    return out


class GlobalCMVN:
    """(x - mean) / max(std, std_floor) per feature dimension, with dataset-wide statistics."""

    def __init__(self, mean: Tensor, std: Tensor, std_floor: float = 1e-5) -> None:
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"mean and std must be (F,), got {mean.shape} and {std.shape}")
        self.mean = mean.float()
        self.std = std.float().clamp(min=std_floor)

    @classmethod
    def from_file(cls, path: str | Path, std_floor: float = 1e-5) -> GlobalCMVN:
        """Loads statistics written by compute_cmvn_stats (.json or .pt)."""
        path = Path(path)
        if path.suffix == ".pt":
            stats = torch.load(path, weights_only=True)
        else:
            stats = json.loads(path.read_text())
        try:
            mean, std = stats["mean"], stats["std"]
        except (KeyError, TypeError):
            raise ValueError(f"{path}: not a CMVN stats file (needs 'mean' and 'std')") from None
        return cls(torch.tensor(mean), torch.tensor(std), std_floor)

    def __call__(self, feats: Tensor) -> Tensor:
        """(T, F) -> (T, F), on feats' device and dtype."""
        if feats.shape[-1] != self.mean.shape[0]:
            raise ValueError(
                f"features have dim {feats.shape[-1]}, CMVN stats have {self.mean.shape[0]}"
            )
        mean = self.mean.to(feats.device, feats.dtype)
        std = self.std.to(feats.device, feats.dtype)
        return (feats - mean) / std


def utterance_cmvn(feats: Tensor, norm_vars: bool = True, std_floor: float = 1e-5) -> Tensor:
    """Per-utterance mean (and variance) normalisation over time, fairseq's utterance_cmvn:
    (T, F) -> (T, F). The std is the population std, floored at `std_floor`."""
    if feats.dim() != 2:
        raise ValueError(f"expected (T, F) features, got {tuple(feats.shape)}")
    centred = feats - feats.mean(dim=0, keepdim=True)
    if not norm_vars:
        return centred
    std = centred.pow(2).mean(dim=0, keepdim=True).sqrt().clamp(min=std_floor)
    return centred / std
