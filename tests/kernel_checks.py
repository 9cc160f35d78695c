"""Checks of the Triton kernels against the PyTorch reference, run by tests/test_kernels.py in a
subprocess (TRITON_INTERPRET=1 must be set before triton is first imported, so the CPU run
cannot share the test process): `python tests/kernel_checks.py cpu|cuda [float32|bfloat16]`.

Every buffer is NaN-poisoned outside the slots in use, so a kernel that reads an unused slot
fails the finiteness check. Relative error bound: 1e-5 in float32, 1e-2 in bfloat16. Every
comparison also counts the launches (kernels.launch.counting): the kernel side must have
launched its kernels and the reference side none, or "kernels on equals off" would hold for
a dispatch that never reaches a kernel (tests/test_kernels.py shows the check failing then).
"""

from __future__ import annotations

import itertools
import sys

import torch

from kernels.decode_attention import decode_attention_triton
from kernels.launch import counting
from kernels.mtla_update import mtla_slot_triton
from s2s.attention import VARIANTS, build_attention, sweep_config
from s2s.attention.ops import cached_attention, use_kernels

NAN = float("nan")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def assert_launched(launched, expected: set[str], where) -> None:
    """The kernels in `expected` (and only they) ran, each at least once."""
    assert set(launched) == expected and all(launched.values()), (where, dict(launched))


def check_decode_attention(dev: str, dtype: torch.dtype, tol: float) -> None:
    """The split-KV kernel over one part: G-head layouts (MHA, GQA, MQA) and the latent layout,
    with and without an ancestry table, 1 or several splits, lengths 1..S (not multiples of the
    block), one sequence of length 1."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dev, dtype)

    def case(N, H, G, DK, DV, R, S, with_owner, splits, latent=False):
        if latent:
            kv = torch.full((R, S + 5, DK), NAN, device=dev, dtype=dtype)
            k, v = kv[:, :, None], kv[:, :, None, :DV]
        else:
            k = torch.full((R, S + 5, G, DK), NAN, device=dev, dtype=dtype)
            v = torch.full((R, S + 5, G, DV), NAN, device=dev, dtype=dtype)
        num = torch.randint(1, S + 1, (N,), generator=gen)
        num[0] = 1
        owner = torch.randint(0, R, (N, S + 5), generator=gen) if with_owner else None
        rows = owner if with_owner else torch.arange(N)[:, None].expand(N, S + 5)
        for n in range(N):  # fill only the slots each sequence uses
            for s in range(int(num[n])):
                if latent:
                    kv[rows[n, s], s] = randn(DK)
                else:
                    k[rows[n, s], s] = randn(G, DK)
                    v[rows[n, s], s] = randn(G, DV)
        q = randn(N, H, DK)
        owner = None if owner is None else owner.to(dev)
        ref, ref_lse = cached_attention(
            q.cpu().float(),
            k.cpu().float(),
            v.cpu().float(),
            None if owner is None else owner.cpu(),
            num,
            0.3,
        )
        with counting() as launched:
            got, lse = decode_attention_triton(
                q, k, v, owner, num.to(dev), 0.3, num_splits=splits, block_s=16
            )
        assert_launched(launched, {"_attend_partial"}, (H, G, with_owner, splits, latent))
        assert torch.isfinite(got).all(), "NaN leaked from unused slots"
        err = max(rel(got.cpu(), ref), rel(lse.cpu(), ref_lse))
        assert err < tol, (N, H, G, DK, DV, S, with_owner, splits, latent, err)

    for (H, G), owner, splits in itertools.product([(4, 4), (4, 2), (4, 1)], [False, True], [1, 3]):
        case(N=3, H=H, G=G, DK=8, DV=8, R=3, S=37, with_owner=owner, splits=splits)
    for owner, splits in itertools.product([False, True], [1, 2]):
        case(N=4, H=4, G=1, DK=20, DV=16, R=4, S=29, with_owner=owner, splits=splits, latent=True)


def check_mtla_update(dev: str, dtype: torch.dtype, tol: float) -> None:
    """The fused slot update against its formula, reading parents through an ancestry table
    (and without one), chunks opening and continuing, poisoned unwritten slots."""
    gen = torch.Generator().manual_seed(1)
    N, R, DR, S = 5, 24, 8, 6
    kv = torch.full((N, S, R + DR), NAN)
    owner = torch.randint(0, N, (N, S), generator=gen)
    j = torch.tensor([0, 2, 3, 5, 1])
    first = torch.tensor([True, False, False, True, False])
    for n in range(N):
        if not first[n]:
            kv[owner[n, j[n]], j[n]] = torch.randn(R + DR, generator=gen)
    c, k_rope = torch.randn(N, R, generator=gen), torch.randn(N, DR, generator=gen)
    a, b = torch.randn(N, R // 4, generator=gen), torch.randn(N, R // 4, generator=gen)
    for use_owner in (True, False):
        rows = owner[torch.arange(N), j] if use_owner else torch.arange(N)
        if not use_owner:  # without ancestry each row reads its own slot
            for n in range(N):
                if not first[n]:
                    kv[n, j[n]] = kv[owner[n, j[n]], j[n]]
        w = torch.sigmoid((a * b).sum(-1))[:, None]
        prev = torch.where(first[:, None], 0.0, kv[rows, j][:, :R].nan_to_num())
        ref = torch.cat((prev + w * c, k_rope), -1)
        with counting() as launched:
            got = mtla_slot_triton(
                *(t.to(dev, dtype) for t in (c, k_rope, a, b, kv)),
                owner.to(dev) if use_owner else None,
                j.to(dev),
                first.to(dev),
            )
        assert_launched(launched, {"_mtla_slot"}, use_owner)
        assert torch.isfinite(got).all(), "NaN leaked from an unwritten slot"
        err = rel(got.cpu(), ref)
        assert err < tol, (use_owner, err)


def check_modules(dev: str, dtype: torch.dtype, tol: float) -> None:
    """Every variant's decode step with kernels on equals the PyTorch path, through the
    engine's cache: a ragged prefix stored once per utterance (lengths 1, 5 and 8 frames: MTLA
    chunks left incomplete), beams expanded from it, then steps with reorders whose ancestries
    diverge from step 0; and the cross arrangement's cache (own part only). Each step with
    kernels on launches the attention kernel (and MTLA's its slot update), with them off none."""
    gen = torch.Generator().manual_seed(2)
    K, steps = 3, 6
    frame_lens = torch.tensor([5, 1, 8])
    U = len(frame_lens)
    cases = [(v, 2 if v == "mtla" else 1) for v in VARIANTS] + [("mtla", 3)]
    merges = {"mtla"}  # the variants whose step runs the slot update kernel
    for (variant, stride), prefixed in itertools.product(cases, [True, False]):
        cfg = sweep_config(variant, stride=stride, latent_dim=16, rope_dim=8, backend="sdpa")
        torch.manual_seed(0)
        m = build_attention(cfg, 32, 4).to(dev, dtype).eval()
        expected = {"_attend_partial"} | ({"_mtla_slot"} if variant in merges else set())
        caches = []
        for _ in range(2):
            if prefixed:
                cache = m.new_cache(U, fill=NAN, ancestry=True)
                frames = torch.randn(U, 8, 32, generator=torch.Generator().manual_seed(3))
                m.prefill(frames.to(dev, dtype), frame_lens.to(dev), cache)
                cache.expand(K, own_slots=-(-(8 + steps) // stride))
            else:
                cache = m.new_cache(U * K, fill=NAN, ancestry=True, capacity=steps, growable=False)
            caches.append(cache)
        for t in range(steps):
            x = torch.randn(U * K, 1, 32, generator=gen).to(dev, dtype)
            with torch.no_grad():
                with use_kernels("on"), counting() as on:
                    got = m.step(x, caches[0])
                with use_kernels("off"), counting() as off:
                    ref = m.step(x, caches[1])
            where = (variant, stride, prefixed, t)
            assert_launched(on, expected, where)
            assert not off, (where, "the PyTorch path launched", dict(off))
            assert torch.isfinite(got).all(), (variant, stride, prefixed, t, "NaN")
            err = rel(got.float().cpu(), ref.float().cpu())
            assert err < tol, (variant, stride, prefixed, t, err)
            # each utterance's next beams: random parents within its group
            parents = torch.randint(0, K, (U, K), generator=gen)
            rows = (torch.arange(U)[:, None] * K + parents).view(-1).to(dev)
            for cache in caches:
                cache.reorder(rows)


def main(dev: str, dtype_name: str = "float32") -> None:
    dtype = getattr(torch, dtype_name)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    check_decode_attention(dev, dtype, tol)
    check_mtla_update(dev, dtype, tol)
    check_modules(dev, dtype, tol)
    print("ok")


if __name__ == "__main__":
    main(*sys.argv[1:])
