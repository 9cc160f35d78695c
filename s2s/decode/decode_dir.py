"""Decode a whole data dir in length-sorted batches, writing what scoring reads:

<out>/hyp.txt     utt hypothesis        (best of the n-best)
<out>/ref.txt     utt reference         (normalised like the training targets)
<out>/nbest.txt   utt rank score log_prob hypothesis
<out>/stats.json  wall time, utterances/s, tokens/s, peak decode-cache MiB (and GPU peak
                  memory on CUDA), cache bytes per token
<out>/decode.yaml the decode settings used (a `decode:` section, usable as --decode-config)

A directory holds one decoding run's settings: decoding into one that holds other settings is an
error, so results of different settings are never mixed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from s2s.decode.efficiency import DecodeStats
from s2s.decode.inference import Speech2Text, plan_batches

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
        from s2s.data.features import FeatureReader, utterance_cmvn

        reader = FeatureReader(dump_dir)
        missing = [u for u in dd.utt_ids if u not in reader]
        if missing:
            raise ValueError(
                f"{dump_dir}: no features for {len(missing)} utterances, e.g. {missing[:3]}"
            )

        def get(u: str) -> torch.Tensor:
            feats = reader[u]
            return s2t.cmvn(feats) if s2t.cmvn is not None else utterance_cmvn(feats)

        return get, {u: reader.num_frames(u) for u in dd.utt_ids}
    from s2s.data.audio import load_utterance

    def from_audio(u: str) -> torch.Tensor:
        wave = load_utterance(dd, u, target_sr=s2t.sample_rate)
        return s2t.model_features(wave, f"utterance {u!r} ({dd.audio_source(u)[0]})")

    lengths = {u: 1 for u in dd.utt_ids}  # unknown before reading: keep the data dir's order
    return from_audio, lengths


def decode_datadir(
    s2t: Speech2Text,
    data_dir: str | Path,
    out_dir: str | Path,
    dump_dir: str | Path | None = None,
    batch_frames: int = 8000,
    max_batch: int = 32,
) -> dict:
    """Decode every utterance of data_dir; returns the efficiency summary (also in stats.json)."""
    from s2s.data.datadir import load_datadir
    from s2s.data.tokenizer import normalize_text

    out = Path(out_dir)
    settings = {"decode": asdict(s2t.decode_cfg)}
    if (out / "decode.yaml").is_file():
        held = OmegaConf.to_container(OmegaConf.load(out / "decode.yaml"))
        if held != settings:
            raise ValueError(
                f"{out} holds a decoding run with other settings ({out / 'decode.yaml'}): "
                "decode into another directory or remove it"
            )
    dd = load_datadir(data_dir)
    cfg = s2t.cfg.data
    if cfg.target_field not in dd.texts:
        raise ValueError(f"{data_dir}: no {cfg.target_field} file for the references")
    get, lengths = datadir_sources(s2t, dd, Path(dump_dir) if dump_dir else None)
    utts = dd.utt_ids
    plan = plan_batches([lengths[u] for u in utts], batch_frames, max_batch)
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
        for u in dd.utt_ids:
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
