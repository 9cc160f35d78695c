"""ONNX export against PyTorch on one experiment: export sizes, decoding speed on the CPU, and
whether the hypotheses are the same (docs/export.md; BENCHMARKS.md).

Exports the experiment (s2s-export, timed) unless --bundle names one, then decodes the data
dir's utterances with both backends, same features, same batches, same beam search, at each
--beams size: utterances per second of each (the beam search alone, features computed once
beforehand), the share of utterances whose n-best texts are identical, and the peak
self-attention cache bytes of each. Then a lockstep pass (s2s.decode.compare) over the first
batch at the largest beam: the largest deviation of the exported step's log-probabilities and
cache slots from PyTorch's, relative to max(|value|, 1). PyTorch gets --threads threads (also
for the beam search around onnxruntime), onnxruntime --ort-threads (default the same).

    python -m s2s.evaluate.onnx_decode --model exp/NAME --data data/test [--beams 1 5]
        [--limit 0] [--threads 2] [--ort-threads N] [--bundle OUT] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from s2s.data.audio import load_utterance
from s2s.data.datadir import load_datadir
from s2s.data.sampler import plan_batches
from s2s.data.tokenizer import BOS_ID, EOS_ID
from s2s.decode.beam_search import beam_search
from s2s.decode.compare import Lockstep
from s2s.decode.inference import Speech2Text
from s2s.decode.scorers import Weighted
from s2s.threads import torch_threads


def decode_timed(s2t: Speech2Text, feats: list) -> tuple[list, float]:
    t = time.perf_counter()
    nbests = s2t.decode_batched(feats)
    return nbests, time.perf_counter() - t


@torch.no_grad()
def lockstep_first_batch(pt: Speech2Text, ort: Speech2Text, feats: list) -> dict:
    """Both encoders on the first batch, then both decoders in lockstep (s2s.decode.compare)
    at pt's beam: the largest deviations, relative to max(|value|, 1)."""
    first = plan_batches([f.shape[0] for f in feats], 8000, 32, longest_first=True)[0]
    src = torch.nn.utils.rnn.pad_sequence([feats[i] for i in first], batch_first=True)
    lens = torch.tensor([feats[i].shape[0] for i in first])
    memory, memory_lens = pt.model.encode(src, lens)
    memory_ort, _ = ort.model.encode(src, lens)
    enc_dev = float(((memory_ort - memory).abs() / memory.abs().clamp(min=1)).max())
    lock = Lockstep(pt.model.decoder, ort.model.decoder)
    scorers = {"decoder": Weighted(lock, 1.0)}  # the decoders alone, at pt's beam
    beam_search(scorers, memory, memory_lens, pt.decode_cfg, bos_id=BOS_ID, eos_id=EOS_ID)
    return {
        "utterances": len(first), "steps": lock.steps, "encoder_max_dev": enc_dev,
        "step_max_dev": lock.max_dev,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s2s.evaluate.onnx_decode", description=__doc__)
    p.add_argument("--model", required=True, help="experiment directory")
    p.add_argument("--data", required=True, help="a data dir with audio")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    p.add_argument("--limit", type=int, default=0, help="first N utterances (0: all)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--ort-threads", type=int, default=0, help="onnxruntime's (0: --threads)")
    p.add_argument("--bundle", type=Path, help="an existing bundle of --model (else exported)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    ort_threads = args.ort_threads or args.threads
    report: dict = {"model": args.model, "threads": args.threads, "ort_threads": ort_threads}
    tmp = None
    bundle = args.bundle
    if bundle is None:
        from s2s.export.onnx_export import export_experiment

        tmp = tempfile.TemporaryDirectory(prefix="s2s-onnx-")
        bundle = Path(tmp.name) / "bundle"
        t = time.perf_counter()
        export_experiment(args.model, bundle)
        report["export_s"] = time.perf_counter() - t
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    report["files"] = {n: f["bytes"] for n, f in manifest["files"].items()}
    report["onnx_bytes"] = sum(b for n, b in report["files"].items() if n.endswith(".onnx"))
    weights = Path(args.model) / "model_avg.pt"
    report["model_avg_pt_bytes"] = weights.stat().st_size if weights.is_file() else None

    dd = load_datadir(args.data)
    utts = dd.utt_ids[: args.limit] if args.limit else dd.utt_ids
    report["utterances"] = len(utts)
    rows, feats = [], None
    for beam in args.beams:
        over = [f"decode.beam_size={beam}", f"decode.nbest={beam}"]
        pt = Speech2Text.from_pretrained(args.model, decode_overrides=over, backend="torch")
        ort = Speech2Text.from_bundle(bundle, decode_overrides=over, threads=ort_threads)
        if feats is None:  # the same features for every beam and both backends
            sr = pt.sample_rate
            feats = [pt.model_features(load_utterance(dd, u, target_sr=sr), u) for u in utts]
        decode_timed(pt, feats[:4])  # warm both up (first-call allocations, session setup)
        decode_timed(ort, feats[:4])
        want, t_pt = decode_timed(pt, feats)
        got, t_ort = decode_timed(ort, feats)
        same = sum([r.text for r in g] == [r.text for r in w] for g, w in zip(got, want)) / len(
            utts
        )
        rows.append(
            {
                "beam": beam,
                "pytorch_utt_per_s": len(utts) / t_pt,
                "onnxruntime_utt_per_s": len(utts) / t_ort,
                "speedup": t_pt / t_ort,
                "same_nbest": same,
                "pytorch_peak_cache_bytes": pt.peak_cache_bytes,
                "onnxruntime_peak_cache_bytes": ort.peak_cache_bytes,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report["lockstep"] = lockstep_first_batch(pt, ort, feats)
    report["beams"] = rows
    print(json.dumps(report["lockstep"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
