"""The five variants from the literature (mfa, mfa_kr, mlra, gla, gta) against their equations
in docs/attention.md, written out head by head with the module's own weights. The equivalence
tests every variant shares (parallel == step, padding, arrangements, beam search) live in
test_attention.py, test_decoder.py and test_beam_search.py."""

from __future__ import annotations

import math

import pytest
import torch

from s2s.attention import build_attention, sweep_config
from s2s.attention.positions import apply_rope

d, H, Dh, R, Dr, T = 32, 4, 8, 16, 4, 9


def build(variant: str, seed: int = 0):
    m = build_attention(
        sweep_config(
            variant, d_model=d, n_heads=H, head_dim=Dh, latent_dim=R, rope_dim=Dr, backend="sdpa"
        )
    ).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights everywhere, the gates and norms too
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """One head: q (T, Dk), k (T, Dk), v (T, Dv) -> (T, Dv), causal softmax."""
    s = (q @ k.T) * scale
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v


def rope(x: torch.Tensor) -> torch.Tensor:
    """x: (T, D) at positions 0..T-1."""
    return apply_rope(x[None], torch.arange(T)[None])[0]


def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps) * weight


def reference(m, variant: str, x: torch.Tensor) -> torch.Tensor:
    """x: (T, d) -> (T, d) from the equations, one head at a time."""
    heads = []
    if variant in ("mfa", "mfa_kr"):
        C = m.kv_dim
        qb = rms(x @ m.q_a.weight.T, m.q_norm.weight) @ m.q_b.weight.T
        kv = x @ m.kv_proj.weight.T + m.kv_proj.bias
        k_raw = kv[:, :C]
        if variant == "mfa":
            v = kv[:, C:]
        else:  # v = k̃ + α ⊙ (N k̃), from the un-rotated key
            v = k_raw + m.v_gate * (k_raw @ m.v_mix.weight.T)
        for h in range(m.n_heads):
            heads.append(causal(rope(qb[:, h * C : (h + 1) * C]), rope(k_raw), v, C**-0.5))
    elif variant in ("mlra", "gla"):
        n = m.n_blocks
        w = R // n
        q = (x @ m.q_proj.weight.T + m.q_proj.bias).view(T, H, Dh + Dr)
        lat = x @ m.dkv_proj.weight.T + m.dkv_proj.bias
        c, k_rope = lat[:, :R], rope(lat[:, R:])
        blocks = [
            rms(c[:, b * w : (b + 1) * w], m.kv_norm.norms[b].weight) * math.sqrt(d / w)
            for b in range(n)
        ]
        for h in range(H):
            qh = torch.cat((q[:, h, :Dh], rope(q[:, h, Dh:])), -1)
            if variant == "mlra":  # every block, own softmax, summed / √n
                pairs = [(b * H + h, b) for b in range(n)]
                out_scale = n**-0.5
            else:  # latent head h // (H / h_c) only
                pairs = [(h, h // (H // n))]
                out_scale = 1.0
            o = 0
            for p, b in pairs:
                k = torch.cat((blocks[b] @ m.uk[p].T, k_rope), -1)
                o = o + causal(qh, k, blocks[b] @ m.uv[p].T, (Dh + Dr) ** -0.5)
            heads.append(o * out_scale)
    else:  # gta
        G, half = m.n_kv, Dh // 2
        q = (x @ m.q_proj.weight.T + m.q_proj.bias).view(T, H, Dh)
        kv = x @ m.kv_proj.weight.T + m.kv_proj.bias
        k_r = rope(kv[:, G * Dh :])
        for h in range(H):
            tied = kv[:, (h // (H // G)) * Dh :][:, :Dh]  # KV_g: key half and value
            qh = torch.cat((q[:, h, :half], rope(q[:, h, half:])), -1)
            heads.append(causal(qh, torch.cat((tied[:, :half], k_r), -1), tied, Dh**-0.5))
    return torch.cat(heads, -1) @ m.out_proj.weight.T + m.out_proj.bias


@pytest.mark.parametrize("variant", ["mfa", "mfa_kr", "mlra", "gla", "gta"])
def test_forward_is_the_papers_equations(variant: str) -> None:
    m = build(variant)
    x = torch.randn(1, T, d)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], reference(m, variant, x[0]), rtol=1e-4, atol=1e-4)


def test_mfa_kr_starts_from_values_equal_to_keys() -> None:
    """α = 0 at initialisation: v = k̃, whatever N is."""
    m = build_attention(sweep_config("mfa_kr", d_model=d, n_heads=H))
    assert torch.equal(m.v_gate, torch.zeros_like(m.v_gate))
    k = torch.randn(3, m.kv_dim)
    assert torch.equal(m.values_of(k), k)


def test_cache_holds_only_what_each_paper_caches() -> None:
    x = torch.randn(1, T, d)
    with torch.no_grad():
        kr = build("mfa_kr")
        cache = kr.new_cache(1)
        kr(x, cache=cache)
        # the un-rotated key only: x W_k + b, no value buffer
        assert set(cache.buffers) == {"k"}
        want = x[0] @ kr.kv_proj.weight.T + kr.kv_proj.bias
        torch.testing.assert_close(cache.shared["k"][0, :, 0], want)
        gta = build("gta")
        cache = gta.new_cache(1)
        gta(x, cache=cache)
        kv = x[0] @ gta.kv_proj.weight.T + gta.kv_proj.bias
        G = gta.n_kv
        torch.testing.assert_close(cache.shared["kv"][0, :, : G * Dh], kv[:, : G * Dh])
        torch.testing.assert_close(cache.shared["kv"][0, :, G * Dh :], rope(kv[:, G * Dh :]))


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"type": "mlra", "blocks": 3}, "mlra needs blocks"),
        ({"type": "gla", "latent_heads": 3}, "gla needs latent_heads"),
        ({"type": "gta", "n_kv_heads": 3}, "gta needs n_kv_heads"),
        ({"type": "mfa", "kv_dim": 7}, "even kv_dim"),
    ],
)
def test_sizes_that_do_not_divide_are_errors(cfg: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_attention(cfg, d_model=64, n_heads=8)


def test_block_queries_pick_their_block() -> None:
    """blocks.py: q · [b_0 ; b_1 ; b_2] with q in block i's columns == q · b_i."""
    from s2s.attention.blocks import block_outputs, block_queries

    q, slot = torch.randn(2, 3, 4), torch.randn(2, 12)
    block = torch.tensor([2, 0, 2])
    full = block_queries(q, block, 3)
    got = torch.einsum("nqw,nw->nq", full, slot)
    want = torch.einsum("nqw,nqw->nq", q, slot.view(2, 3, 4)[:, block])
    torch.testing.assert_close(got, want)
    o = slot[:, None].expand(2, 3, 12)
    assert torch.equal(block_outputs(o, block, 4), slot.view(2, 3, 4)[:, block])
