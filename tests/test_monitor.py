"""The training monitor (s2s.train.monitor): what it writes to TensorBoard, that it changes
nothing in training, the figures it draws from the model's inspection (tests/test_inspect.py
tests the inspection itself), and that the probabilities drawn are those the model uses."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import text_batch, text_experiment

from s2s.attention.ops import attention_probs, parallel_attention
from s2s.train.checkpoint import latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _train(tmp: Path, exp: Path, *overrides: str) -> None:
    from s2s.cli.train import main

    args = [
        "--config", str(ROOT / "conf" / "model" / "tiny_text.yaml"),
        "--config", str(ROOT / "conf" / "train" / "tiny_cpu.yaml"),
        "--exp-dir", str(exp),
        *text_experiment(tmp, 24, 6, 300),
        "train.max_epochs=1", "train.log_every_steps=1", "train.n_average=1",
        "model.decoder.attention.type=mtla", "model.decoder.attention.stride=2",
        *overrides,
    ]  # fmt: skip
    root = logging.getLogger("s2s")
    handlers = list(root.handlers)
    try:
        assert main(args) == 0
    finally:
        for h in root.handlers[len(handlers) :]:
            root.removeHandler(h)
            h.close()


def _events(exp: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(exp / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    return acc


MONITORED = ("train.monitor.metrics=[bleu,wer]", "train.monitor.images_every=1")


@pytest.fixture(scope="module")
def prefix_run(tmp_path_factory) -> Path:
    """One monitored prefix-arrangement run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("prefix")
    _train(tmp, tmp / "exp", "model.decoder.arrangement=prefix", *MONITORED)
    return tmp / "exp"


def check_events(exp: Path, arrangement: str) -> None:
    acc = _events(exp)
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    for tag in ("valid/bleu", "valid/wer", "time/monitor_s"):
        assert tag in scalars, tag
    assert 0.0 <= acc.Scalars("valid/bleu")[-1].value <= 100.0
    # MTLA's merge weights are probabilities; their shares below/above the thresholds too.
    for stat in ("mean", "below_0.05", "above_0.95"):
        value = acc.Scalars(f"merge/layer0/{stat}")[-1].value
        assert 0.0 <= value <= 1.0, (stat, value)
    if arrangement == "prefix":
        assert {"merge/layer0/frames_mean", "merge/layer0/targets_mean"} <= scalars
    assert "merge/layer0" in tags["histograms"]
    assert acc.Scalars("grad_norm/layer0/hyper_pe")[-1].value > 0
    assert acc.Scalars("grad_norm/layer0/dkv_proj")[-1].value > 0
    images = set(tags["images"])
    assert {"attention/self", "attention/frames"} <= images
    img = acc.Images("attention/frames")[-1]
    assert img.width >= 160 and img.height >= 160
    # The best-checkpoint bookkeeping sees the dev score too (best_metric: valid/bleu works).
    metrics = load_checkpoint(latest_checkpoint(exp / "checkpoints"))["metrics"]
    assert "valid/bleu" in metrics and "valid/acc" in metrics


def test_monitor_writes_scores_images_merge_weights_and_grad_norms(prefix_run):
    check_events(prefix_run, "prefix")


def test_monitor_draws_cross_attention_too(tmp_path):
    _train(tmp_path, tmp_path / "exp", "model.decoder.arrangement=cross", *MONITORED)
    check_events(tmp_path / "exp", "cross")


def test_monitor_changes_nothing_in_training_and_is_off_with_one_key(tmp_path, prefix_run):
    off = tmp_path / "off"
    _train(tmp_path, off, "model.decoder.arrangement=prefix", *MONITORED,
           "train.monitor.enabled=false")  # fmt: skip
    a = load_checkpoint(latest_checkpoint(prefix_run / "checkpoints"))["model"]
    b = load_checkpoint(latest_checkpoint(off / "checkpoints"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    tags = _events(off).Tags()
    assert not tags["images"] and not tags["histograms"]
    assert not any(t.startswith(("merge/", "grad_norm/", "valid/bleu")) for t in tags["scalars"])


class _Board:
    """A TBLogger that keeps the images."""

    def __init__(self) -> None:
        self.images: dict[str, np.ndarray] = {}

    def image(self, tag, img, step) -> None:
        self.images[tag] = img

    def scalars(self, values, step) -> None:
        pass

    def histogram(self, tag, values, step) -> None:
        pass


class _Pieces:
    """A tokenizer whose pieces name their ids."""

    def id_to_piece(self, i: int) -> str:
        return f"p{i}"


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
def test_monitor_draws_one_panel_per_layer_with_tokens_frames_and_a_colour_bar(arrangement):
    """The figures the monitor writes: for the self-attention and for the frames, one panel
    per decoder layer showing the first utterance's inspection maps (heads averaged), its
    output tokens' pieces on the y axis, its input pieces (self) or frame indices (frames) on
    the x axis, each with a colour bar; written as (H, W, 3) images in [0, 1]."""
    from s2s.experiment import build_model, load_experiment_config
    from s2s.train import monitor as M

    overrides = [
        f"model.decoder.arrangement={arrangement}",
        "model.decoder.attention.type=mtla",
        "model.decoder.attention.stride=2",
        "model.decoder.n_layers=3",
    ]
    cfg = load_experiment_config([ROOT / "conf" / "model" / "tiny_text.yaml"], overrides)
    torch.manual_seed(0)
    model = build_model(cfg, 40).eval()
    batch = text_batch([7, 11], [5, 6])
    mon = M.TrainingMonitor(M.MonitorConfig(), _Pieces(), [batch])
    board = _Board()
    mon.on_validate(model, 1, board)
    assert set(board.images) == {"attention/self", "attention/frames"}
    for img in board.images.values():
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.float32
        assert img.min() >= 0.0 and img.max() <= 1.0 and min(img.shape[:2]) >= 160

    seen = model.inspect(batch)
    figures = mon.figures(seen, "utt0", 1)
    outputs = [f"p{i}" for i in seen.outputs[0, :6].tolist()]
    inputs = [f"p{i}" for i in seen.tokens[0, :6].tolist()]
    assert outputs[-1] == "p3" and inputs[0] == "p2"  # [eos] ends the outputs, [bos] opens
    for tag, fig in figures.items():
        panels = [ax for ax in fig.axes if ax.get_images() and ax.get_title()]
        bars = [ax for ax in fig.axes if ax not in panels and ax.get_visible()]
        assert [ax.get_title() for ax in panels] == ["layer 0", "layer 1", "layer 2"], tag
        assert len(bars) == 3, tag  # a colour bar per panel
        assert "utt0" in fig.get_suptitle() and arrangement in fig.get_suptitle()
        for i, ax in enumerate(panels):
            assert ax.get_ylabel() == "output token"
            assert [t.get_text() for t in ax.get_yticklabels()] == outputs
            shown = ax.get_images()[0].get_array()
            if tag == "attention/self":
                expect = seen.self_map(i, 0).mean(0)
                assert [t.get_text() for t in ax.get_xticklabels()] == inputs
            else:
                expect = seen.frames_map(i, 0).mean(0)
                assert "frame" in ax.get_xlabel()
            np.testing.assert_array_equal(np.asarray(shown), expect.numpy())


class _Steps(_Board):
    """A TBLogger that keeps the steps each image and merge scalar was written at."""

    def __init__(self) -> None:
        super().__init__()
        self.image_steps: list[int] = []
        self.scalar_steps: list[int] = []

    def image(self, tag, img, step) -> None:
        if tag == "attention/self":
            self.image_steps.append(step)

    def scalars(self, values, step) -> None:
        if any(k.startswith("merge/") for k in values):
            self.scalar_steps.append(step)


def test_images_every_draws_at_every_nth_validation_and_the_merge_weights_at_each():
    """images_every=3: the images at validations 3 and 6 of 7, the merge-weight scalars at
    all 7 (they cost one forward, the figures most of the monitor's time)."""
    from s2s.experiment import build_model, load_experiment_config
    from s2s.train import monitor as M

    overrides = ["model.decoder.attention.type=mtla", "model.decoder.attention.stride=2"]
    cfg = load_experiment_config([ROOT / "conf" / "model" / "tiny_text.yaml"], overrides)
    torch.manual_seed(0)
    model = build_model(cfg, 40).eval()
    mon = M.TrainingMonitor(M.MonitorConfig(images_every=3), _Pieces(), [text_batch([7], [5])])
    board = _Steps()
    for step in range(1, 8):
        mon.on_validate(model, step, board)
    assert board.image_steps == [3, 6]
    assert sorted(set(board.scalar_steps)) == list(range(1, 8))
    with pytest.raises(ValueError, match="images_every"):
        M.MonitorConfig(images_every=0)


class _Scalars(_Board):
    """A TBLogger that keeps the scalars."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, float] = {}

    def scalars(self, values, step) -> None:
        self.values.update(values)


def test_frontend_stats_report_silent_channels_and_warn_when_the_last_conv_is_all_silent(caplog):
    """frontend/conv<i>_silent: the share of each conv's channels <= 0 on the dev batch; when
    the last conv has none left above zero (dying ReLUs: the encoder hears nothing), a warning
    names the stall and the fix."""
    from s2s.data.dataset import Batch
    from s2s.experiment import build_model, load_experiment_config
    from s2s.train import monitor as M

    cfg = load_experiment_config([ROOT / "conf" / "model" / "tiny.yaml"])
    torch.manual_seed(0)
    model = build_model(cfg, 40).eval()
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        utt_ids=["a", "b"],
        src=torch.randn(2, 60, 80, generator=g),
        src_lens=torch.tensor([60, 41]),
        tgt=torch.randint(4, 40, (2, 5), generator=g),
        tgt_lens=torch.tensor([5, 4]),
    )
    off = dict(images=False, merge_stats=False, grad_norms=False)
    mon = M.TrainingMonitor(M.MonitorConfig(**off), _Pieces(), [batch])
    board = _Scalars()
    with caplog.at_level(logging.WARNING, logger="s2s.train.monitor"):
        mon.on_validate(model, 1, board)
        conv = model.encoder.frontend.conv[2]
        with torch.no_grad():  # three of the last conv's channels below zero everywhere
            conv.bias[:3] = -1e4
        mon.on_validate(model, 2, board)
        assert board.values["frontend/conv1_silent"] == 3 / conv.out_channels
        assert not caplog.records
        with torch.no_grad():
            conv.bias[:] = -1e4
        mon.on_validate(model, 3, board)
    assert board.values["frontend/conv1_silent"] == 1.0
    assert 0.0 <= board.values["frontend/conv0_silent"] < 1.0
    assert "the encoder hears nothing" in caplog.text
    quiet = M.TrainingMonitor(M.MonitorConfig(**off, frontend_stats=False), _Pieces(), [batch])
    board = _Scalars()
    quiet.on_validate(model, 4, board)
    assert not any(k.startswith("frontend/") for k in board.values)


def test_unknown_monitor_metric_is_a_config_error():
    from s2s.train.monitor import MonitorConfig

    with pytest.raises(ValueError, match="blue"):
        MonitorConfig(metrics=["blue"])


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_attention_probs_are_the_probabilities_parallel_attention_uses(stride):
    """probs @ v == the attention output, with padding and queries after a prefix."""
    torch.manual_seed(0)
    B, L, T, H, G, D = 2, 4, 9, 4, 2, 8
    q = torch.randn(B, L, H, D, dtype=torch.float64)
    k = torch.randn(B, T, G, D, dtype=torch.float64)
    v = torch.randn(B, T, G, D, dtype=torch.float64)
    lengths = torch.tensor([9, 7])
    q_pos = torch.stack([torch.arange(5, 9), torch.arange(3, 7)])
    kw = dict(scale=D**-0.5, stride=stride, lengths=lengths, q_pos=q_pos)
    probs = attention_probs(q, k, **kw)  # (B, H, L, T)
    expect = parallel_attention(q, k, v, **kw)  # (B, L, H, D)
    got = torch.einsum("bhlt,bthd->blhd", probs.double(), v.repeat_interleave(H // G, dim=2))
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(B, H, L, dtype=probs.dtype))
    assert (probs[1, :, :, 7:] == 0).all()  # padded keys of the second row
