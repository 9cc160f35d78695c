"""How a training step is run fast, each choice a `train.*` setting (docs/training.md has the
measurements behind the defaults):

- amp: "auto" resolves to bfloat16 autocast where the device computes bfloat16 natively (CUDA
  with bf16 support; CPUs with AVX512-BF16 or AMX, where oneDNN runs bf16 matmuls and convs on
  those units) and to float32 elsewhere (a CPU without them emulates bf16, slower than float32).
  Weights, the optimiser's state and the loss stay float32 (autocast only lowers the matmuls
  and convs).
- optim_impl: "auto" is the fused Adam/AdamW kernel (one pass over all parameters per step)
  where the parameters' device has one, else the foreach one; "for_loop" is the parameter-at-a-
  time loop torch falls back to on CPU.
- compile: torch.compile of the encoder's and decoder's layers (regional: one graph per layer
  type, reused by every layer of that type, compiled once for any shape).
- channels_last: the speech frontend's 2-D convolutions in NHWC, oneDNN's own layout (an NCHW
  tensor is reordered to it and back in every call, forward and backward).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# oneDNN (CPU matmuls and convs in bf16, convs in fp32) JIT-compiles a kernel per shape and
# keeps 1024 of them. A training run meets a few thousand shapes (every bucket of lengths, of
# batch sizes, forward and backward): past 1024 the cache thrashes, and each miss costs about
# 0.7 ms of JIT, about 30 ms a step at the demo's size. Read when oneDNN first runs, so it is
# set before any training step (a value set by the user wins).
ONEDNN_CACHE = "4096"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: AMX tiles or AVX512-BF16."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(getattr(torch.cpu, p)() for p in probes)
    except AttributeError:  # a torch without the (private) probes: read the flags ourselves
        flags = Path("/proc/cpuinfo")
        if not flags.is_file():
            return False
        text = flags.read_text()
        return " amx_bf16 " in text or " avx512_bf16 " in text


def resolve_amp(amp: str, device: torch.device) -> str:
    """train.amp with "auto" resolved for `device`: "bf16" where it is native, else "none"."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "none"
    return "none"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved train.amp ("none", "bf16", "fp16")."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def optimizer_impl(impl: str, device: torch.device) -> dict[str, bool]:
    """torch.optim keyword arguments for train.optim_impl on `device`."""
    if impl == "auto":
        impl = "fused" if device.type in ("cpu", "cuda") else "foreach"
    return {
        "fused": {"fused": True},
        "foreach": {"foreach": True},
        "for_loop": {"foreach": False},
    }[impl]


def prepare_onednn() -> None:
    """Raise oneDNN's kernel cache before the first training step (see ONEDNN_CACHE)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE)


@contextlib.contextmanager
def compile_options() -> Iterator[None]:
    """The settings every compiled training graph is built with (they act when a graph is first
    compiled, inside the forward that triggers it).

    Inductor's CPU code stores a boolean mask about 30x slower than a float tensor (torch 2.11:
    the store goes through a generic per-element path), and its partitioner saves ReLU's mask
    for the backward by default; allowing it to recompute the mask from the ReLU output, which
    the next Linear's backward keeps anyway, removes those stores."""
    import torch._functorch.config as functorch_config

    with functorch_config.patch(
        ban_recompute_materialized_backward=False,
        ban_recompute_used_far_apart=False,
        ban_recompute_long_fusible_chains=False,
    ):
        yield


def compile_layers(model: nn.Module) -> int:
    """Compile, in place, every module of `model` that declares itself a compile region
    (`compile_region = True`: the encoder's and decoder's layers), with dynamic shapes so one
    graph serves every batch. Returns how many modules were compiled."""
    n = 0
    for module in model.modules():
        if getattr(module, "compile_region", False):
            module.compile(dynamic=True)
            n += 1
    return n
