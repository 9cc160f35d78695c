"""The Triton kernels (kernels/) against the PyTorch reference (s2s.attention.ops): on CPU
through Triton's interpreter, and at real sizes on the GPU (`pytest -m gpu`). The checks live in
tests/kernel_checks.py and run in a subprocess: TRITON_INTERPRET must be set before triton is
first imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CHECKS = Path(__file__).with_name("kernel_checks.py")
ROOT = Path(__file__).resolve().parents[1]


def run_checks(device: str, dtype: str, env_extra: dict[str, str]) -> None:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, **env_extra}
    res = subprocess.run(
        [sys.executable, str(CHECKS), device, dtype],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_kernels_match_reference_interpreted() -> None:
    """Decode attention (every layout), the MTLA slot update and every variant's step through
    the engine's cache (shared prefix, ancestries diverging at step 0), float32, to 1e-5."""
    run_checks("cpu", "float32", {"TRITON_INTERPRET": "1"})


def test_launches_are_counted_where_they_run() -> None:
    """kernels.launch.counting: every launch that runs, in every open block; a recorded launch
    does not run and is not counted."""
    from kernels.launch import counting, launch, recording

    ran = []

    class Kernel:  # what the launchers see: fn[grid](*args, **kwargs)
        __name__ = "_kernel"

        def __getitem__(self, grid):
            return lambda *args, **kwargs: ran.append(grid)

    with counting() as outer:
        launch(Kernel(), (1,))
        with counting() as inner, recording() as recorded:
            launch(Kernel(), (2,))
        with counting() as inner:
            launch(Kernel(), (3,))
    assert ran == [(1,), (3,)] and len(recorded) == 1
    assert outer == {"_kernel": 2} and inner == {"_kernel": 1}


def test_kernel_checks_fail_when_the_dispatch_reaches_no_kernel(monkeypatch) -> None:
    """Negative control: with the dispatch stopped short of the kernels (both sides on the
    PyTorch path, an error of exactly 0), the module check fails on the launch count."""
    import kernel_checks

    from s2s.attention import ops

    monkeypatch.setattr(ops, "kernels_active", lambda t: False)
    with pytest.raises(AssertionError, match="'mha', 1, True, 0"):
        kernel_checks.check_modules("cpu", torch.float32, 1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernels_match_reference_gpu(dtype: str) -> None:
    run_checks("cuda", dtype, {})


@pytest.mark.gpu
def test_model_step_uses_kernel_on_gpu() -> None:
    """The attention modules' step on CUDA (Triton, the default there) equals their parallel
    forward at a realistic length, and ran the attention kernel (MTLA also its slot update) at
    every step."""
    from kernels.launch import counting
    from s2s.attention import VARIANTS, build_attention, sweep_config

    for variant in VARIANTS:
        for s in [2, 3] if variant == "mtla" else [1]:
            cfg = sweep_config(variant, stride=s, latent_dim=64, rope_dim=16, backend="sdpa")
            m = build_attention(cfg, 128, 8).cuda().eval()
            x = torch.randn(3, 300, 128, device="cuda")
            with torch.no_grad():
                ref = m(x)
                cache = m.new_cache(3, fill=float("nan"), ancestry=True)
                with counting() as launched:
                    out = torch.cat([m.step(x[:, t : t + 1], cache) for t in range(300)], 1)
            assert ((out - ref).norm() / ref.norm()).item() < 1e-4, (variant, s)
            assert launched["_attend_partial"] >= 300, (variant, s, dict(launched))
            assert launched["_mtla_slot"] == (300 if variant == "mtla" else 0), (variant, s)
