"""Triton decode attention against the PyTorch reference (s2s.attention.ops), on CPU through
Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported) and, where present, on
the GPU. Buffers are NaN-poisoned outside the used slots."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

CHECK = textwrap.dedent(
    """
    import itertools, torch
    from kernels.decode_attention import decode_attention_triton
    from s2s.attention.ops import cached_attention
    dev = "{device}"
    torch.manual_seed(0)

    def rel(a, b):
        return ((a.double() - b.double()).norm() / b.double().norm()).item()

    def case(N, H, G, DK, DV, R, S, with_owner, splits, latent=False):
        nan = float("nan")
        if latent:
            kv = torch.full((R, S + 5, DK), nan, device=dev)
            k, v = kv[:, :, None], kv[:, :, None, :DV]
        else:
            k = torch.full((R, S + 5, G, DK), nan, device=dev)
            v = torch.full((R, S + 5, G, DV), nan, device=dev)
        num = torch.randint(1, S + 1, (N,), device=dev)
        owner = torch.randint(0, R, (N, S + 5), device=dev) if with_owner else None
        rows = owner if with_owner else torch.arange(N, device=dev)[:, None].expand(N, S + 5)
        for n in range(N):  # fill only the slots each sequence uses
            for s in range(int(num[n])):
                if latent:
                    kv[rows[n, s], s] = torch.randn(DK, device=dev)
                else:
                    k[rows[n, s], s] = torch.randn(G, DK, device=dev)
                    v[rows[n, s], s] = torch.randn(G, DV, device=dev)
        q = torch.randn(N, H, DK, device=dev)
        ref, ref_lse = cached_attention(q.cpu(), k.cpu(), v.cpu(),
                                        None if owner is None else owner.cpu(), num.cpu(), 0.3)
        got, lse = decode_attention_triton(q, k, v, owner, num, 0.3, num_splits=splits,
                                           block_s=16)
        assert torch.isfinite(got).all(), "NaN leaked from unused slots"
        err = max(rel(got.cpu(), ref), rel(lse.cpu(), ref_lse))
        assert err < {tol}, (N, H, G, DK, DV, S, with_owner, splits, latent, err)

    # MHA (G = H), GQA, MQA, and the latent layout (r + d_r keys, r-column values)
    for (H, G), owner, splits in itertools.product([(4, 4), (4, 2), (4, 1)], [False, True], [1, 3]):
        case(N=3, H=H, G=G, DK=8, DV=8, R=3, S=37, with_owner=owner, splits=splits)
    for owner, splits in itertools.product([False, True], [1, 2]):
        case(N=4, H=4, G=1, DK=20, DV=16, R=4, S=29, with_owner=owner, splits=splits, latent=True)
    print("ok")
    """
)


def run_check(device: str, tol: float, env_extra: dict[str, str]) -> None:
    env = {**os.environ, **env_extra}
    code = CHECK.format(device=device, tol=tol)
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_decode_kernel_matches_reference_interpreted() -> None:
    # A subprocess: TRITON_INTERPRET must be set before triton is first imported.
    run_check("cpu", 1e-5, {"TRITON_INTERPRET": "1"})


@pytest.mark.gpu
def test_decode_kernel_matches_reference_gpu() -> None:
    run_check("cuda", 1e-5, {})


@pytest.mark.gpu
def test_model_step_uses_kernel_on_gpu() -> None:
    """The attention modules' step on CUDA (Triton) equals their parallel forward."""
    from s2s.attention import build_attention, sweep_config

    for variant, s in [("mha", 1), ("gqa", 1), ("mla", 1), ("mtla", 2)]:
        cfg = sweep_config(variant, stride=s, latent_dim=64, rope_dim=16, backend="sdpa")
        m = build_attention(cfg, 128, 8).cuda().eval()
        x = torch.randn(3, 50, 128, device="cuda")
        with torch.no_grad():
            ref = m(x)
            cache = m.new_cache(3, fill=float("nan"), ancestry=True)
            out = torch.cat([m.step(x[:, t : t + 1], cache) for t in range(50)], 1)
        assert ((out - ref).norm() / ref.norm()).item() < 1e-4, variant
