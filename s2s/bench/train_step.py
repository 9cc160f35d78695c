"""Training-step benchmark of the whole model per decoder self-attention variant, side by side in
one run: forward, backward and the optimiser step of the paper-sized model (conf/model/paper.yaml
with conf/attention/<variant>.yaml), on a random batch of speech features and targets.

The figure the paper's claim rests on is the ratio to MHA measured in the same run (MTLA's
hyper-network and stride-aware mask must not make training much slower). Times are medians
(CUDA events on GPU).

    python -m s2s.bench.train_step [--size paper|tiny] [--batch 8] [--frames 1200]
        [--tokens 60] [--device cuda] [--amp] [--variants mha mla mtla:2 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from s2s.bench.attention import DEFAULT_VARIANTS, median_time
from s2s.data.dataset import Batch
from s2s.experiment import build_model, load_experiment_config

REPO = Path(__file__).resolve().parents[2]
SIZES = {  # model YAML and the overrides that make it small (tests, CPU smoke runs)
    "paper": [],
    "tiny": [
        "model.encoder.d_model=64",
        "model.encoder.n_layers=2",
        "model.encoder.n_heads=4",
        "model.encoder.ffn_dim=128",
        "model.decoder.d_model=64",
        "model.decoder.n_layers=2",
        "model.decoder.n_heads=4",
        "model.decoder.ffn_dim=128",
    ],
}
VOCAB = 8000  # the paper's SentencePiece unigram size


def build(spec: str, size: str):
    name, _, stride = spec.partition(":")
    overrides = list(SIZES[size])
    if stride:
        overrides.append(f"model.decoder.attention.stride={stride}")
    cfg = load_experiment_config(
        [REPO / "conf/model/paper.yaml", REPO / f"conf/attention/{name}.yaml"], overrides
    )
    return build_model(cfg, VOCAB)


def random_batch(args: argparse.Namespace, device: torch.device) -> Batch:
    """Features (B, T, 80) and targets (B, L) with lengths from 3/4 to all of the maximum."""
    g = torch.Generator().manual_seed(0)
    B = args.batch
    src_lens = torch.randint(args.frames * 3 // 4, args.frames + 1, (B,), generator=g)
    tgt_lens = torch.randint(args.tokens * 3 // 4, args.tokens + 1, (B,), generator=g)
    src_lens[0], tgt_lens[0] = args.frames, args.tokens
    return Batch(
        utt_ids=[f"utt{i}" for i in range(B)],
        src=torch.randn(B, args.frames, 80, generator=g).to(device),
        src_lens=src_lens.to(device),
        tgt=torch.randint(4, VOCAB, (B, args.tokens), generator=g).to(device),
        tgt_lens=tgt_lens.to(device),
    )


def bench(spec: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(spec, args.size).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = random_batch(args, device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = model(batch)["loss"]
        loss.backward()
        opt.step()

    seconds = median_time(step, device, args.repeats)
    return {
        "variant": spec,
        "step_s": seconds,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    p.add_argument("--size", choices=sorted(SIZES), default="paper")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=1200, help="input frames (before subsampling)")
    p.add_argument("--tokens", type=int, default=60, help="target tokens per utterance")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (the trainer's amp)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = [bench(spec, args) for spec in args.variants]
    ref = next((r for r in rows if r["variant"] == "mha"), rows[0])
    print(
        f"# {args.size} model, B={args.batch} frames={args.frames} tokens={args.tokens} on "
        f"{args.device}{' bf16 autocast' if args.amp else ''}; ratios to {ref['variant']}"
    )
    print(f"{'variant':<10}{'params M':>10}{'step ms':>10}{'vs ' + ref['variant']:>10}")
    for r in rows:
        r["ratio"] = r["step_s"] / ref["step_s"]
        ms = r["step_s"] * 1e3
        print(f"{r['variant']:<10}{r['params_m']:>10.1f}{ms:>10.1f}{r['ratio']:>10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
