"""ONNX export at the MTLA paper's model size (random weights): onnxruntime against PyTorch
decoding, same run, for each variant and thread count (BENCHMARKS.md §13).

The model of conf/model/paper.yaml (12-layer encoder, 9-layer prefix decoder, d = 512) with
each --variants attention (conf/attention/<variant>.yaml), random weights (seed 0), exported
as s2s-export does (s2s.export.onnx_export.export_model) and decoded from the same random
features (--utts utterances of 300-600 frames) by the same beam search (beam --beam, exactly
--tokens tokens each: min_len = max_len, so random weights do the work of a trained model),
in batches of 8. Reports utterances per second of both, whether the hypotheses are the same,
and the peak self-attention cache bytes.

    python -m s2s.bench.onnx_paper [--variants mha mla mtla] [--threads 1 2] [--utts 16]
        [--tokens 40] [--beam 5] [--model-config conf/model/paper.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from s2s.data.sampler import plan_batches
from s2s.data.tokenizer import BOS_ID, EOS_ID
from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.decode.scorer_set import search_scorers
from s2s.decode.scorers import DecoderScorer
from s2s.experiment import build_model, load_experiment_config
from s2s.export.bundle import write_manifest
from s2s.export.onnx_export import export_model
from s2s.export.runtime import OnnxModel
from s2s.threads import torch_threads

CONF = Path(__file__).resolve().parents[2] / "conf"
VOCAB = 256


def decode(model, feats: list, cfg: BeamSearchConfig) -> tuple[list, float, int]:
    """(best tokens per utterance, seconds, peak cache bytes) over batches of 8."""
    out: list = [None] * len(feats)
    peak = 0
    t = time.perf_counter()
    for batch in plan_batches([f.shape[0] for f in feats], 10**9, 8, longest_first=True):
        src = torch.nn.utils.rnn.pad_sequence([feats[i] for i in batch], batch_first=True)
        lens = torch.tensor([feats[i].shape[0] for i in batch])
        memory, memory_lens = model.encode(src, lens)
        stats: dict = {}
        hyps = beam_search(search_scorers(cfg, DecoderScorer(model.decoder)), memory,
                           memory_lens, cfg, bos_id=BOS_ID, eos_id=EOS_ID, stats=stats)  # fmt: skip
        peak = max(peak, stats["peak_cache_bytes"])
        for i, nb in zip(batch, hyps):
            out[i] = nb[0].tokens
    return out, time.perf_counter() - t, peak


@torch.no_grad()
def run(
    variant: str, threads: list[int], utts: int, tokens: int, beam: int, model_config: Path
) -> list[dict]:
    cfg = load_experiment_config(
        [model_config, CONF / "attention" / f"{variant}.yaml"],
        ["model.encoder.dropout=0", "model.decoder.dropout=0"],
    )
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB).eval()
    search = BeamSearchConfig(beam_size=beam, max_len_a=0.0, max_len_b=tokens, min_len=tokens)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(300 + 300 * i // max(1, utts - 1), 80, generator=g) for i in range(utts)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        info = export_model(model, cfg, Path(tmp))
        export_s = time.perf_counter() - t
        manifest = write_manifest(Path(tmp), {"model": info})
        onnx_bytes = sum(f["bytes"] for f in manifest["files"].values())
        for n in threads:
            ort = OnnxModel(tmp, threads=n, manifest=manifest)
            with torch_threads(n):
                decode(model, feats[:2], search)  # warm-up
                decode(ort, feats[:2], search)
                want, t_pt, peak_pt = decode(model, feats, search)
                got, t_ort, peak_ort = decode(ort, feats, search)
            rows.append(
                {
                    "variant": variant, "threads": n, "export_s": export_s,
                    "onnx_bytes": onnx_bytes, "pytorch_utt_per_s": utts / t_pt,
                    "onnxruntime_utt_per_s": utts / t_ort, "ratio": t_pt / t_ort,
                    "same_hypotheses": got == want, "pytorch_peak_cache_bytes": peak_pt,
                    "onnxruntime_peak_cache_bytes": peak_ort,
                }
            )  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s2s.bench.onnx_paper", description=__doc__)
    p.add_argument("--variants", nargs="+", default=["mha", "mla", "mtla"])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--utts", type=int, default=16)
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--model-config", type=Path, default=CONF / "model" / "paper.yaml")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = []
    for v in args.variants:
        rows += run(v, args.threads, args.utts, args.tokens, args.beam, args.model_config)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
