"""Kaldi-compatible log-mel filterbank features, the on-disk feature dump, and CMVN.

Dump layout (one directory per data set, written by `dump_features`):

    feats.<k>.npy      float32 (frames, F), the utterances of shard <k> (a run of at most
                       SHARD_UTTS sorted ids) concatenated; FeatureReader reads one
                       utterance with one positioned read
    feats.<k>.done     while a dump runs: shard <k> is complete (its index entries), so a
    feats.plan         killed dump, run again, redoes only unfinished shards; removed at the end
    feats.index        `<utt> <shard file> <offset> <frames>` per line, sorted by utt
    utt2num_frames     `<utt> <frames>` per line (Kaldi's name), used for length bucketing
    feats.json         the FbankConfig, speed factor, feature dim and totals
    bad_utts           only with skip_bad=True: `<utt> <path> <reason>` for each utterance
                       left out (unreadable audio, or fewer than min_frames frames)

With speed != 1.0 the keys are the data dir's utterance ids prefixed `sp<factor>-` (ESPnet's
`sp0.9-<utt>`); the matching texts need a data dir with the same prefixed ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import queue as queue_mod
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor
from tqdm import tqdm

from s2s.data.audio import AudioError, load_audio
from s2s.data.perturb import speed_perturb
from s2s.threads import torch_threads

log = logging.getLogger(__name__)

INDEX = "feats.index"
UTT2NUM_FRAMES = "utt2num_frames"
META = "feats.json"
BAD_UTTS = "bad_utts"
PLAN = "feats.plan"  # while a dump runs: what its finished shards were computed for
SHARD_UTTS = 10_000  # utterances a shard at most: what a killed dump may have to redo
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


def frame_energy_db(feats: Tensor) -> Tensor:
    """(T, F) log-mel fbank (natural log of mel power) -> (T,) frame energy in dB."""
    return feats.float().logsumexp(-1) * (10.0 / math.log(10.0))


#: speech_onset's loudness: the loudest level held for this many frames (30 ms at a 10 ms
#: shift), so that a click of a frame or two does not set it
ONSET_HOLD_FRAMES = 3


def speech_onset(energy_db: Tensor, below_db: float) -> int:
    """(T,) frame energies -> the first frame within `below_db` dB of the input's loudness,
    the loudest level held for ONSET_HOLD_FRAMES frames in a row (0 for T = 0). Measured from
    the loudness, so near-silence put in front moves it by exactly the frames put there, a
    gain not at all, and a noise floor under `below_db` not at all; a click of a frame or two
    does not count, however loud (with the loudest single frame, a click at the end would
    move the onset past the speech)."""
    if energy_db.numel() == 0:
        return 0
    hold = min(ONSET_HOLD_FRAMES, energy_db.numel())
    loudness = energy_db.unfold(0, hold, 1).amin(-1).max()
    loud = energy_db >= loudness - below_db
    return int(loud.to(torch.uint8).argmax())


def align_onset(feats: Tensor, pad_frames: int, below_db: float) -> Tensor:
    """(T, F) log-mel fbank (natural log of mel power, at any constant offset) -> (T', F)
    whose speech onset (`speech_onset`) is frame `pad_frames`: the frames further in front
    cut, or copies of the quietest frame put in front (as the training's time shift pads).
    T' = T - onset + pad_frames >= pad_frames + 1."""
    energy = frame_energy_db(feats)
    onset = speech_onset(energy, below_db)
    if onset >= pad_frames:
        return feats[onset - pad_frames :]
    return torch.cat([feats[energy.argmin()].expand(pad_frames - onset, -1), feats])


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


def _shard_done(out_dir: Path, name: str) -> Path:
    return out_dir / (name.removesuffix(".npy") + ".done")


def _dump_shard(
    name: str,
    items: list[_Item],
    out_dir: str,
    cfg: FbankConfig,
    speed: float,
    min_frames: int,
    progress: Callable[[], None],
) -> _ShardResult:
    """Computes features of `items` into out_dir/<name>, reading on past bad ones.

    The shard is written under a temporary name and renamed when complete; then its index
    entries and bad utterances go to <name minus .npy>.done, the mark a restarted dump
    trusts. Returns index entries (key, shard file, offset, frames) and the bad utterances.
    """
    out = Path(out_dir)
    entries: list[tuple[str, str, int, int]] = []
    bad: list[BadUtt] = []
    offset = 0
    tmp = out / (name + ".partial")
    # same numerics whatever nj is (and no oversubscription)
    with torch_threads(1), open(tmp, "wb") as f:
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
    tmp.replace(out / name)
    done = _shard_done(out, name)
    mark = {"entries": [[k, o, n] for k, _, o, n in entries], "bad": [list(b) for b in bad]}
    done.with_suffix(".partial").write_text(json.dumps(mark))
    done.with_suffix(".partial").replace(done)
    return entries, bad


def _read_done(out: Path, name: str) -> _ShardResult | None:
    """A finished shard's result from its .done mark, None when it has none (or a torn one)."""
    done = _shard_done(out, name)
    if not (done.is_file() and (out / name).is_file()):
        return None
    try:
        mark = json.loads(done.read_text())
        entries = [(k, name, int(o), int(n)) for k, o, n in mark["entries"]]
        return entries, [(k, p, why) for k, p, why in mark["bad"]]
    except (ValueError, KeyError, TypeError):
        return None


def _run_shards(
    shards: list[tuple[str, list[_Item]]],
    out_dir: str,
    cfg: FbankConfig,
    speed: float,
    min_frames: int,
    progress: Callable[[], None],
) -> list[tuple[str, _ShardResult]]:
    return [
        (name, _dump_shard(name, items, out_dir, cfg, speed, min_frames, progress))
        for name, items in shards
    ]


def _worker(
    job: int,
    shards: list[tuple[str, list[_Item]]],
    out_dir: str,
    cfg: FbankConfig,
    speed: float,
    min_frames: int,
    q: mp.Queue,
) -> None:
    """Process entry point: runs its shards, reporting progress and the results through `q`."""
    try:
        results = _run_shards(shards, out_dir, cfg, speed, min_frames, lambda: q.put(("tick",)))
        q.put(("done", job, results))
    except BaseException:
        q.put(("error", job, RuntimeError(f"feature job {job} failed:\n{traceback.format_exc()}")))


def _run_parallel(
    jobs: list[tuple[int, list[tuple[str, list[_Item]]]]],
    out_dir: str,
    cfg: FbankConfig,
    speed: float,
    min_frames: int,
    bar: tqdm,
) -> list[tuple[str, _ShardResult]]:
    """Runs one spawned process per job (a list of shards); returns their shards' results."""
    ctx = mp.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(j, shards, out_dir, cfg, speed, min_frames, q))
        for j, shards in jobs
    ]
    results: dict[int, list[tuple[str, _ShardResult]]] = {}
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
    return [r for j, _ in jobs for r in results[j]]


def _plan_key(
    items: list[_Item], bounds: list[int], cfg: FbankConfig, speed: float, min_frames: int
) -> str:
    """What a dump's shards depend on: a restarted dump reuses finished shards only when its
    plan is the same (same utterances and audio, shards, settings)."""
    h = hashlib.sha256()
    h.update(json.dumps([asdict(cfg), speed, min_frames, bounds]).encode())
    for item in items:
        h.update(repr(item).encode())
    return h.hexdigest()


def dump_features(
    datadir_path: str | Path,
    out_dir: str | Path,
    cfg: FbankConfig | None = None,
    nj: int = 1,
    speed: float = 1.0,
    skip_bad: bool = False,
    min_frames: int = 1,
    shard_utts: int = SHARD_UTTS,
) -> Path:
    """Computes fbank features of every utterance of a data dir into `out_dir` (layout above).

    The sorted ids are cut into contiguous shards of at most `shard_utts` utterances (and at
    least `nj` shards), shared by `nj` processes; the features do not depend on nj. A dump
    that was interrupted (no index written) and is run again with the same data dir, settings
    and shards keeps the shards it finished (their .done marks) and computes only the rest.
    Every utterance is read, in one pass; bad ones (audio that cannot be read, or gives fewer
    than `min_frames` frames) are collected. Then, when there are any: without `skip_bad`,
    BadAudioError listing them all (no index is written); with it, they are left out, listed
    in out_dir/bad_utts, and a warning says how many. Returns out_dir.
    """
    from s2s.data.datadir import load_datadir  # written alongside; imported when used

    cfg = cfg if cfg is not None else FbankConfig()
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    if shard_utts < 1:
        raise ValueError(f"shard_utts must be >= 1, got {shard_utts}")
    datadir = load_datadir(datadir_path)
    utts = datadir.utt_ids
    if not utts:
        raise ValueError(f"data dir {datadir_path} has no utterances")
    items: list[_Item] = [(speed_key(u, speed), u, *datadir.audio_source(u)) for u in utts]
    n_shards = min(len(items), max(nj, -(-len(items) // shard_utts)))
    bounds = [round(i * len(items) / n_shards) for i in range(n_shards + 1)]
    shards = [(f"feats.{k + 1}.npy", items[bounds[k] : bounds[k + 1]]) for k in range(n_shards)]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan_key(items, bounds, cfg, speed, min_frames)
    finished: dict[str, _ShardResult] = {}
    if (out / PLAN).is_file() and (out / PLAN).read_text().strip() == plan:
        for name, _ in shards:
            if (result := _read_done(out, name)) is not None:
                finished[name] = result
    else:  # another dump's outputs (another nj, settings or data): remove our own files only
        for old in [
            *out.glob("feats.*.npy"),
            *out.glob("feats.*.partial"),
            *out.glob("feats.*.done"),
            out / INDEX,
            out / UTT2NUM_FRAMES,
            out / META,
            out / BAD_UTTS,
        ]:
            old.unlink(missing_ok=True)
        (out / PLAN).write_text(plan + "\n")
    todo = [(name, shard) for name, shard in shards if name not in finished]
    if finished:
        n_done = sum(len(s) for name, s in shards if name in finished)
        log.info(
            "%s: %d of %d shards (%d utterances) finished by an earlier run: kept",
            out,
            len(finished),
            n_shards,
            n_done,
        )

    n_todo = sum(len(s) for _, s in todo)
    with tqdm(total=n_todo, desc=f"fbank {Path(datadir_path).name}", unit="utt") as bar:
        if not todo:
            computed = []
        elif nj == 1 or len(todo) == 1:
            computed = _run_shards(todo, str(out), cfg, speed, min_frames, lambda: bar.update(1))
        else:
            nj = min(nj, len(todo))
            jobs = [(j + 1, todo[j::nj]) for j in range(nj)]
            computed = _run_parallel(jobs, str(out), cfg, speed, min_frames, bar)
    by_name = finished | dict(computed)
    results = [by_name[name] for name, _ in shards]

    entries = [e for shard_entries, _ in results for e in shard_entries]
    bad = [b for _, shard_bad in results for b in shard_bad]
    if bad and not skip_bad:
        # the shards with bad audio are computed again next time: the audio may be repaired
        for (name, _), (_, shard_bad) in zip(shards, results):
            if shard_bad:
                _shard_done(out, name).unlink(missing_ok=True)
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
    # complete: the next run computes afresh (the audio may have changed since)
    for name, _ in shards:
        _shard_done(out, name).unlink(missing_ok=True)
    (out / PLAN).unlink(missing_ok=True)
    return out


class FeatureReader:
    """Random access to a feature dump: reader[utt] -> (T, F) float32 tensor.

    Each utterance is read from its shard with one positioned read (os.preadv), not through a
    memory map: a map keeps every page read in the process's resident set, so a pass over a
    large corpus (an epoch, the CMVN statistics) would grow the RSS to the size of the dump.
    Shards are opened lazily; a pickled reader (DataLoader workers) reopens them.
    """

    def __init__(self, feat_dir: str | Path) -> None:
        self.dir = Path(feat_dir)
        index = self.dir / INDEX
        if not index.is_file():
            raise FileNotFoundError(f"{index}: no feature index (run dump_features first)")
        self._entries: dict[str, tuple[str, int, int]] = {}
        self._names: dict[str, str] = {}
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
                shard = self._names.setdefault(shard, shard)  # one string per shard
                self._entries[utt] = (shard, offset, frames)
                self._shard_end[shard] = max(self._shard_end.get(shard, 0), offset + frames)
        self._shards: dict[str, tuple[BinaryIO, int, int]] = {}  # file, data start, F

    def _shard(self, name: str) -> tuple[BinaryIO, int, int]:
        """(open file, byte offset of its data, F) of a shard, checked against the index."""
        shard = self._shards.get(name)
        if shard is None:
            path = self.dir / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard named in {self.dir / INDEX} is missing")
            f = open(path, "rb")  # noqa: SIM115 (kept open for the reader's life)
            try:
                version = np.lib.format.read_magic(f)
                read_header = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }.get(version)
                if read_header is None:
                    raise ValueError(f"npy format version {version}")
                shape, fortran, dtype = read_header(f)
            except ValueError as e:
                f.close()
                raise ValueError(f"{path}: not a feature shard ({e})") from None
            if (
                len(shape) != 2
                or dtype != np.dtype("<f4")
                or fortran
                or shape[0] < (need := self._shard_end[name])
            ):
                f.close()
                raise ValueError(
                    f"{path}: shard is {dtype} {shape}, but {self.dir / INDEX} needs "
                    f"float32 (>= {need}, F)"
                )
            shard = self._shards[name] = (f, f.tell(), int(shape[1]))
        return shard

    def array(self, utt: str) -> np.ndarray:
        """(T, F) float32 array of one utterance, read from its shard."""
        try:
            name, offset, frames = self._entries[utt]
        except KeyError:
            raise KeyError(f"utterance {utt!r} not in feature dump {self.dir}") from None
        f, start, dim = self._shard(name)
        buf = bytearray(4 * frames * dim)
        got = os.preadv(f.fileno(), [buf], start + 4 * offset * dim)
        if got != len(buf):
            raise ValueError(f"{self.dir / name}: truncated at utterance {utt!r}")
        return np.frombuffer(buf, dtype="<f4").reshape(frames, dim)

    def __getitem__(self, utt: str) -> Tensor:
        return torch.from_numpy(self.array(utt))

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
        return self._shard(next(iter(self._shard_end)))[2]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = {}  # files are reopened in the receiving process
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
