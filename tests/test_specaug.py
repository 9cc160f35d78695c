"""SpecAugment: mask widths and shapes, determinism, no-op config, time warp."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from s2s.data.specaug import SpecAugConfig, SpecAugment, time_shift, time_warp


def masked_band(zero: torch.Tensor) -> tuple[int, int]:
    """(start, width) of the zeroed entries of a 1-D bool mask; asserts they are contiguous."""
    idx = zero.nonzero().flatten()
    if idx.numel() == 0:
        return 0, 0
    start, width = int(idx[0]), int(idx.numel())
    assert int(idx[-1]) - start + 1 == width, "mask is not one contiguous band"
    return start, width


def test_noop_config_returns_identical_copy() -> None:
    feats = torch.randn(120, 80)
    aug = SpecAugment(SpecAugConfig(freq_masks=0, time_masks=0, time_warp=0))
    out = aug(feats, torch.Generator().manual_seed(0))
    assert torch.equal(out, feats) and out is not feats


def test_freq_mask_width() -> None:
    feats = torch.rand(60, 80) + 1.0  # nowhere zero before masking
    aug = SpecAugment(SpecAugConfig(freq_masks=1, freq_width=10, time_masks=0))
    widths = set()
    for seed in range(200):
        out = aug(feats, torch.Generator().manual_seed(seed))
        zero_cols = (out == 0).all(dim=0)
        assert torch.equal((out == 0).any(dim=0), zero_cols), "freq mask must span all frames"
        start, width = masked_band(zero_cols)
        assert width <= 10 and start + width <= 80
        widths.add(width)
        assert torch.equal(out[:, ~zero_cols], feats[:, ~zero_cols])
    assert widths == set(range(11))  # every width 0..W is drawn


@pytest.mark.parametrize(("ratio", "max_width"), [(0.0, 20), (0.05, 5)])
def test_time_mask_width(ratio: float, max_width: int) -> None:
    feats = torch.rand(100, 8) + 1.0
    cfg = SpecAugConfig(freq_masks=0, time_masks=1, time_width=20, time_width_ratio=ratio)
    aug = SpecAugment(cfg)
    assert aug.max_time_width(100) == max_width
    widths = set()
    for seed in range(200):
        out = aug(feats, torch.Generator().manual_seed(seed))
        zero_rows = (out == 0).all(dim=1)
        assert torch.equal((out == 0).any(dim=1), zero_rows), "time mask must span all bins"
        _, width = masked_band(zero_rows)
        widths.add(width)
    assert max(widths) == max_width and min(widths) == 0


def test_time_mask_never_wider_than_input() -> None:
    feats = torch.rand(7, 8) + 1.0
    out = SpecAugment(SpecAugConfig(freq_masks=0, time_width=100))(feats)
    assert out.shape == (7, 8) and masked_band((out == 0).all(dim=1))[1] <= 7


def test_deterministic_with_generator_and_input_untouched() -> None:
    feats = torch.randn(150, 80)
    before = feats.clone()
    aug = SpecAugment(SpecAugConfig(freq_masks=2, time_masks=2, time_warp=5))
    a = aug(feats, torch.Generator().manual_seed(3))
    b = aug(feats, torch.Generator().manual_seed(3))
    c = aug(feats, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(feats, before)


def test_time_warp_keeps_length_and_constants() -> None:
    feats = torch.randn(50, 16)
    gen = torch.Generator().manual_seed(1)
    warped = time_warp(feats, 5, gen)
    assert warped.shape == feats.shape and not torch.allclose(warped, feats)
    # every frame equal: interpolation in time cannot change anything
    const = torch.randn(1, 16).expand(50, 16)
    assert torch.allclose(time_warp(const, 5, gen), const, atol=1e-5)
    # too short for the window (T <= 2W): unchanged
    assert torch.equal(time_warp(feats[:10], 5, gen), feats[:10])


def test_config_validation_and_structured() -> None:
    with pytest.raises(ValueError, match="freq_width"):
        SpecAugConfig(freq_width=-1)
    with pytest.raises(ValueError, match="time_width_ratio"):
        SpecAugConfig(time_width_ratio=1.5)
    cfg = OmegaConf.structured(SpecAugConfig)
    assert cfg.freq_width == 27 and cfg.time_width == 100 and cfg.time_warp == 0


def test_time_shift_moves_the_start_by_up_to_n_frames() -> None:
    """Each shift in [-n, n] occurs; a positive one puts copies of the quietest of the first n
    frames in front of the untouched input, a negative one drops leading frames."""
    feats = torch.randn(100, 8) + 5.0
    feats[3] = -5.0  # the pause among the first frames
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(400):
        out = time_shift(feats, 10, g)
        k = out.shape[0] - 100
        seen.add(k)
        if k >= 0:
            assert torch.equal(out[k:], feats) and (out[:k] == -5.0).all()
        else:
            assert torch.equal(out, feats[-k:])
    assert seen == set(range(-10, 11))
    short = torch.randn(6, 8)
    assert time_shift(short, 10, torch.Generator().manual_seed(1)).shape[0] >= 3  # keeps half
    aug = SpecAugment(SpecAugConfig(freq_masks=0, time_masks=0, time_shift=10))
    assert 90 <= aug(feats, torch.Generator().manual_seed(2)).shape[0] <= 110
    with pytest.raises(ValueError, match="time_shift"):
        SpecAugConfig(time_shift=-1)
