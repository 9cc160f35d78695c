"""Decode a whole data dir in length-sorted batches, writing what scoring reads:

<out>/hyp.txt     utt hypothesis        (best of the n-best)
<out>/ref.txt     utt reference         (normalised like the training targets)
<out>/nbest.txt   utt rank score log_prob hypothesis
<out>/stats.json  wall time, utterances/s, tokens/s, peak decode-cache MiB (and GPU peak
                  memory on CUDA), cache bytes per token
<out>/decode.yaml the decode settings used (a `decode:` section, usable as --decode-config)

A directory holds one decoding run's settings: decoding into one that holds other settings is an
error, so results of different settings are never mixed.

Sharded decoding (recipe stage 9 with --nj N on the CPU or --ngpu N): shard K of N decodes the
data dir's utterances K-1, K-1+N, K-1+2N, ... (ESPnet's JOB ids are 1-based; every shard gets
short and long ones alike) into a directory of its own, and `merge_shards` writes the files
above for the whole data dir, in its order, from the shards' directories.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from s2s.data.sampler import plan_batches
from s2s.decode.efficiency import DecodeStats
from s2s.decode.inference import BATCH_FRAMES, MAX_BATCH, Speech2Text

log = logging.getLogger(__name__)


def datadir_sources(s2t: Speech2Text, dd, dump_dir: Path | None):
    """utt -> source tensor getter and utt -> length."""
    cfg = s2t.cfg.data
    if cfg.source == "text":
        tok = s2t.tokenizer
        limit = cfg.max_src_len or None
        texts = dd.texts[cfg.source_field]
        ids = {u: torch.tensor(tok.encode(texts[u])[:limit] or [tok.unk_id]) for u in dd.utt_ids}
        return ids.__getitem__, {u: len(v) for u, v in ids.items()}
    if dump_dir is not None:
        from s2s.data.features import FeatureReader

        reader = FeatureReader(dump_dir)
        missing = [u for u in dd.utt_ids if u not in reader]
        if missing:
            raise ValueError(
                f"{dump_dir}: no features for {len(missing)} utterances, e.g. {missing[:3]}"
            )

        def get(u: str) -> torch.Tensor:
            return s2t.normalize(reader[u])

        return get, {u: reader.num_frames(u) for u in dd.utt_ids}
    from s2s.data.audio import load_utterance

    def from_audio(u: str) -> torch.Tensor:
        wave = load_utterance(dd, u, target_sr=s2t.sample_rate)
        return s2t.model_features(wave, f"utterance {u!r} ({dd.audio_source(u)[0]})")

    lengths = {u: 1 for u in dd.utt_ids}  # unknown before reading: keep the data dir's order
    return from_audio, lengths


def check_settings(out: Path, settings: dict) -> None:
    """ValueError when the decode dir `out` already holds a run with other decode settings."""
    if (out / "decode.yaml").is_file():
        held = OmegaConf.to_container(OmegaConf.load(out / "decode.yaml"))
        if held != settings:
            raise ValueError(
                f"{out} holds a decoding run with other settings ({out / 'decode.yaml'}): "
                "decode into another directory or remove it"
            )


def decode_datadir(
    s2t: Speech2Text,
    data_dir: str | Path,
    out_dir: str | Path,
    dump_dir: str | Path | None = None,
    batch_frames: int = BATCH_FRAMES,
    max_batch: int = MAX_BATCH,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Decode every utterance of data_dir (shard (K, N): only shard K of N, see above); returns
    the efficiency summary (also in stats.json)."""
    if shard is not None and not 1 <= shard[0] <= shard[1]:
        raise ValueError(f"shard {shard[0]}/{shard[1]}: need 1 <= K <= N")
    from s2s.data.datadir import load_datadir
    from s2s.data.tokenizer import normalize_text

    out = Path(out_dir)
    settings = {"decode": asdict(s2t.decode_cfg)}
    check_settings(out, settings)
    dd = load_datadir(data_dir)
    cfg = s2t.cfg.data
    if cfg.target_field not in dd.texts:
        raise ValueError(f"{data_dir}: no {cfg.target_field} file for the references")
    get, lengths = datadir_sources(s2t, dd, Path(dump_dir) if dump_dir else None)
    utts = dd.utt_ids if shard is None else dd.utt_ids[shard[0] - 1 :: shard[1]]
    plan = plan_batches([lengths[u] for u in utts], batch_frames, max_batch, longest_first=True)
    batches = [[utts[i] for i in batch] for batch in plan]

    stats = DecodeStats(
        device=str(s2t.device), cache_bytes_per_token=s2t.model.decoder.cache_bytes_per_token()
    )
    results = {}
    stats.start()
    for batch in tqdm(batches, desc=f"decoding {Path(data_dir).name}", unit="batch"):
        for u, nbest in zip(batch, s2t.decode_sources([get(u) for u in batch])):
            results[u] = nbest
            stats.utterances += 1
            stats.tokens += len(nbest[0].tokens) + 1  # + EOS
    stats.stop()
    stats.peak_cache_mib = s2t.peak_cache_bytes / 2**20

    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.yaml").write_text(OmegaConf.to_yaml(settings))
    refs = dd.texts[cfg.target_field]
    with (
        open(out / "hyp.txt", "w") as hyp,
        open(out / "ref.txt", "w") as ref,
        open(out / "nbest.txt", "w") as nb,
    ):
        for u in utts:  # the data dir's order (a shard is a slice of it)
            hyp.write(f"{u} {results[u][0].text}\n".replace(" \n", "\n"))
            ref.write(f"{u} {normalize_text(refs[u], cfg.normalize)}\n")
            for rank, r in enumerate(results[u], 1):
                nb.write(f"{u} {rank} {r.score:.4f} {r.log_prob:.4f} {r.text}\n")
    summary = stats.summary() | {"beam_size": s2t.decode_cfg.beam_size}
    (out / "stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "%d utterances in %.1f s: %.2f utt/s, %.1f tokens/s",
        stats.utterances,
        stats.wall_time_s,
        summary["utterances_per_s"],
        summary["tokens_per_s"],
    )
    return summary


def merge_shards(parts: list[Path], data_dir: str | Path, out_dir: str | Path) -> dict:
    """The shards' decode dirs (parts, all of one decoding run of data_dir) merged into out_dir:
    hyp.txt, ref.txt and nbest.txt in the data dir's order, decode.yaml, and stats.json over
    the whole set (the shards ran side by side: the wall time is the slowest shard's, the peak
    cache the largest). Raises ValueError naming the shard that lacks an utterance or was
    decoded with other settings."""
    from s2s.data.datadir import load_datadir

    out = Path(out_dir)
    order = load_datadir(data_dir).utt_ids
    settings = OmegaConf.to_container(OmegaConf.load(parts[0] / "decode.yaml"))
    for p in parts[1:]:
        if OmegaConf.to_container(OmegaConf.load(p / "decode.yaml")) != settings:
            raise ValueError(f"{p}: decoded with other settings than {parts[0]}")
    lines: dict[str, dict[str, list[str]]] = {"hyp.txt": {}, "ref.txt": {}, "nbest.txt": {}}
    for p in parts:
        for name, by_utt in lines.items():
            for line in (p / name).read_text().splitlines():
                by_utt.setdefault(line.split(" ", 1)[0], []).append(line)
    missing = [u for u in order if u not in lines["hyp.txt"]]
    if missing:
        raise ValueError(
            f"{len(missing)} utterances of {data_dir} are in no shard of {parts[0].parent}, "
            f"e.g. {missing[0]!r}"
        )
    check_settings(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.yaml").write_text(OmegaConf.to_yaml(settings))
    for name, by_utt in lines.items():
        (out / name).write_text("".join(line + "\n" for u in order for line in by_utt[u]))
    stats = [json.loads((p / "stats.json").read_text()) for p in parts]
    peaks = [s["peak_memory_mib"] for s in stats if s.get("peak_memory_mib") is not None]
    merged = DecodeStats(
        device=stats[0]["device"],
        cache_bytes_per_token=stats[0]["cache_bytes_per_token"],
        utterances=sum(s["utterances"] for s in stats),
        tokens=sum(s["tokens"] for s in stats),
        wall_time_s=max(s["wall_time_s"] for s in stats),
        peak_cache_mib=max(s["peak_cache_mib"] for s in stats),
        peak_memory_mib=max(peaks) if peaks else None,
    )
    summary = merged.summary() | {"beam_size": stats[0]["beam_size"], "shards": len(parts)}
    (out / "stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
