"""Rotary position embedding (RoPE) and sinusoidal encodings at explicit per-sample positions.

Both are functions of integer positions only. On the CPU, outside torch.compile and export,
they are read from a table of positions 0..n-1 kept per (kind, width, base, dtype) and grown
by doubling: a decode step asks for them in every layer (RoPE twice), and at the demo's sizes
computing them (seven small kernels) cost more than the rotation itself. The table holds the
values the formula gives for those positions (the same elementwise products and cos / sin).
Compiled graphs and CUDA compute them inline: there a table would need the largest position
on the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

_TABLES: dict[tuple, Tensor] = {}
_FIRST_TABLE = 1024  # positions in a new table; it doubles past the largest one asked for
_LAST_TABLE = 1 << 16  # positions beyond it are computed: a table lives as long as the process


def _lookup(
    kind: str, width: int, base: float, dtype: torch.dtype, positions: Tensor
) -> Tensor | None:
    """table[positions] of the `kind` table ("rope": complex rotations (n, width // 2);
    "sin": sinusoidal encodings (n, width)); positions (...) long. None off the CPU, while
    compiling or exporting, and where positions are empty, negative (relative ones) or past
    _LAST_TABLE: the caller computes those."""
    if (
        positions.device.type != "cpu"
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or positions.numel() == 0
    ):
        return None
    lo, hi = torch.aminmax(positions)
    need = int(hi) + 1
    if int(lo) < 0 or need > _LAST_TABLE:
        return None
    key = (kind, width, base, dtype)
    table = _TABLES.get(key)
    if table is None or table.shape[0] < need:
        n = min(max(need, 2 * table.shape[0] if table is not None else _FIRST_TABLE), _LAST_TABLE)
        with torch.inference_mode(False), torch.no_grad():  # a plain tensor, read anywhere
            grid = torch.arange(n)[None]  # (1, n)
            if kind == "rope":
                table = torch.complex(*rope_angles(grid, width, base, dtype))[0]
            else:
                table = _sinusoidal(grid, width, base, dtype)[0]
        _TABLES[key] = table
    return table[positions]


def rope_angles(
    positions: Tensor, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """cos/sin tables for integer positions.

    positions: (B, T) long. Returns cos, sin: (B, T, dim // 2) in dtype (float32 or float64).
    """
    inv_freq = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=dtype) / dim)
    angles = positions.to(dtype)[..., None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of the last dim by angle pos * base^(-2i/D).

    x: (B, T, D) or (B, T, H, D); positions: (B, T) long. Same shape and dtype out.
    Computed in at least float32 so bf16 inputs keep exact angles (float64 ones in float64).
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        # Written out: inductor generates no code for complex numbers (it calls back into
        # eager kernels, with a warning), and ONNX has none.
        cos, sin = rope_angles(positions, x.shape[-1], base, acc)
        if x.dim() == 4:
            cos, sin = cos[:, :, None], sin[:, :, None]
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
        return out.to(x.dtype)
    # The same rotation as one complex product (x[2i] + i x[2i+1]) (cos + i sin): one kernel
    # over x instead of seven, a third of the time at a decode step's sizes, where the
    # per-kernel cost dominates (the products may round as fused multiply-adds: ~1 ulp).
    rot = _lookup("rope", x.shape[-1], base, acc, positions)
    if rot is None:
        rot = torch.complex(*rope_angles(positions, x.shape[-1], base, acc))
    if x.dim() == 4:
        rot = rot[:, :, None]
    pairs = torch.view_as_complex(xf.unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * rot).flatten(-2).to(x.dtype)


def _sinusoidal(positions: Tensor, dim: int, base: float, dtype: torch.dtype) -> Tensor:
    half = dim // 2
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=dtype) / half)
    angles = positions.to(dtype)[..., None] * inv_freq
    pe = torch.cat((angles.sin(), angles.cos()), dim=-1)
    return torch.nn.functional.pad(pe, (0, dim - 2 * half))


def sinusoidal_encoding(
    positions: Tensor, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Transformer sinusoidal encoding [sin ; cos] of integer positions.

    positions: (...) long. Returns (..., dim) in dtype (float32 or float64).
    """
    pe = _lookup("sin", dim, base, dtype, positions)
    return _sinusoidal(positions, dim, base, dtype) if pe is None else pe
