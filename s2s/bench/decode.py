"""Beam-search decoding benchmark per attention variant, side by side in one run (the paper's
speed/memory comparison, DESIGN §6, on random weights).

Every variant decodes exactly `--steps` tokens per hypothesis (EOS is held back until then), so
the work is the same and only the attention differs. Reported per variant: decode time (median
of repeats), hypotheses x steps per second, the self-attention cache in use at the end (bytes),
and on CUDA the peak allocated memory; ratios are to MHA in the same run.

    python -m s2s.bench.decode [--size paper|tiny] [--arrangement prefix|cross] [--batch 4]
                               [--beam 10] [--prefix 100] [--steps 50] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from s2s.attention import AttentionConfig
from s2s.bench.attention import DEFAULT_VARIANTS
from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.models.decoder import ARRANGEMENTS, Decoder, DecoderConfig

SIZES = {  # decoder sizes: (layers, d_model, heads, ffn, latent r, rope d_r)
    "paper": (9, 512, 8, 2048, 256, 32),
    "tiny": (2, 64, 4, 128, 32, 8),
}
BOS, EOS, VOCAB = 2, 3, 1000


def build(variant: str, size: str, arrangement: str) -> Decoder:
    layers, d, h, ffn, r, dr = SIZES[size]
    name, _, stride = variant.partition(":")
    attn = AttentionConfig(type=name, stride=int(stride or 2), latent_dim=r, rope_dim=dr)
    cfg = DecoderConfig(
        n_layers=layers,
        d_model=d,
        n_heads=h,
        ffn_dim=ffn,
        dropout=0.0,
        arrangement=arrangement,
        attention=attn,
    )
    return Decoder(cfg, VOCAB, memory_dim=d).eval()


def bench(variant: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    dec = build(variant, args.size, args.arrangement).to(device)
    d = dec.cfg.d_model
    memory = torch.randn(args.batch, args.prefix, d, device=device)
    lens = torch.full((args.batch,), args.prefix, device=device)
    cfg = BeamSearchConfig(beam_size=args.beam, max_len_b=args.steps, min_len=args.steps)
    times, peak = [], None  # peak allocated memory is measured on CUDA only
    for _ in range(args.repeats + 1):  # the first run warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        beam_search(dec, memory, lens, cfg, bos_id=BOS, eos_id=EOS)
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        times.append(time.perf_counter() - t0)
    state = dec.init_state(memory, lens, beam=args.beam, ancestry=True)
    tokens = torch.full((args.batch * args.beam,), BOS, device=device)
    for _ in range(args.steps):
        dec.step(tokens, state)
    seconds = statistics.median(times[1:])
    name = variant if ":" not in variant else f"mtla s={variant.partition(':')[2]}"
    return {
        "variant": name,
        "decode_s": seconds,
        "hyp_steps_per_s": args.batch * args.beam * args.steps / seconds,
        "cache_bytes_per_token": dec.cache_bytes_per_token(),
        "cache_mib_at_end": state.cache_bytes() / 2**20,
        "peak_mib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    p.add_argument("--size", choices=sorted(SIZES), default="paper")
    p.add_argument("--arrangement", choices=ARRANGEMENTS, default="prefix")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--prefix", type=int, default=100, help="encoder frames per utterance")
    p.add_argument("--steps", type=int, default=50, help="tokens decoded per hypothesis")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = [bench(v, args) for v in args.variants]
    ref = next((r for r in rows if r["variant"] == "mha"), rows[0])
    print(
        f"# {args.size} decoder, {args.arrangement} arrangement, B={args.batch} beam={args.beam} "
        f"prefix={args.prefix} steps={args.steps} on {args.device}; ratios to MHA in this run"
    )
    print(
        f"{'variant':<11}{'decode s':>10}{'speed-up':>10}{'cache B/tok':>13}{'cache MiB':>11}"
        f"{'reduction':>11}{'peak MiB':>10}"
    )
    for r in rows:
        r["speedup_vs_mha"] = ref["decode_s"] / r["decode_s"]
        r["cache_reduction_vs_mha"] = ref["cache_bytes_per_token"] / r["cache_bytes_per_token"]
        print(
            f"{r['variant']:<11}{r['decode_s']:>10.3f}{r['speedup_vs_mha']:>10.2f}"
            f"{r['cache_bytes_per_token']:>13.0f}{r['cache_mib_at_end']:>11.2f}"
            f"{r['cache_reduction_vs_mha']:>11.2f}"
            f"{'n/a' if r['peak_mib'] is None else format(r['peak_mib'], '.1f'):>10}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
