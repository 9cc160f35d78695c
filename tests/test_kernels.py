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


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernels_match_reference_gpu(dtype: str) -> None:
    run_checks("cuda", dtype, {})


@pytest.mark.gpu
def test_model_step_uses_kernel_on_gpu() -> None:
    """The attention modules' step on CUDA (Triton, the default there) equals their parallel
    forward at a realistic length."""
    from s2s.attention import VARIANTS, build_attention, sweep_config

    for variant in VARIANTS:
        for s in [2, 3] if variant == "mtla" else [1]:
            cfg = sweep_config(variant, stride=s, latent_dim=64, rope_dim=16, backend="sdpa")
            m = build_attention(cfg, 128, 8).cuda().eval()
            x = torch.randn(3, 300, 128, device="cuda")
            with torch.no_grad():
                ref = m(x)
                cache = m.new_cache(3, fill=float("nan"), ancestry=True)
                out = torch.cat([m.step(x[:, t : t + 1], cache) for t in range(300)], 1)
            assert ((out - ref).norm() / ref.norm()).item() < 1e-4, (variant, s)
