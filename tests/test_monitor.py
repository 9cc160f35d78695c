"""The training monitor (s2s.train.monitor): what it writes to TensorBoard, that it changes
nothing in training, and that the attention maps it draws are the probabilities the model uses."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers import text_experiment

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


MONITORED = ("train.monitor.metrics=[bleu,wer]",)


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
    assert {"attention/layer0/self", "attention/layer0/frames"} <= images
    img = acc.Images("attention/layer0/frames")[-1]
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
    """A TBLogger that keeps the images (the monitor's heat maps, here raw probabilities)."""

    def __init__(self) -> None:
        self.images: dict[str, torch.Tensor] = {}

    def image(self, tag, img, step) -> None:
        self.images[tag] = img

    def scalars(self, values, step) -> None:
        pass

    def histogram(self, tag, values, step) -> None:
        pass


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
def test_images_show_the_targets_slots_and_the_frames_of_the_first_utterance(
    arrangement, monkeypatch
):
    """Each image is utterance 0's: rows its [bos] + target tokens, the self map's columns the
    target slots and the frames map's its own frames (not the batch's longest, not the other
    arrangement's layout). In prefix and prompt one softmax covers [frames ; targets], so a
    row of the two maps sums to 1 and each cell is zero exactly where MTLA's stride-aware mask
    over the packed positions (frames first) hides the slot; in cross each map is a softmax of
    its own."""
    from s2s.attention import stride_aware_causal_mask
    from s2s.data.dataset import Batch
    from s2s.experiment import build_model, load_experiment_config
    from s2s.train import monitor as M

    monkeypatch.setattr(M, "heat_map", lambda a: a.detach().clone())
    overrides = [
        f"model.decoder.arrangement={arrangement}",
        "model.decoder.projector_stack=2",
        "model.decoder.attention.type=mtla",
        "model.decoder.attention.stride=2",
        "model.decoder.n_layers=2",
    ]
    cfg = load_experiment_config([ROOT / "conf" / "model" / "tiny_text.yaml"], overrides)
    torch.manual_seed(0)
    model = build_model(cfg, 40)
    # utterance 0 is the shorter in frames and in targets: its maps are not the batch's corner
    src_lens, tgt_lens = torch.tensor([7, 11]), torch.tensor([5, 6])
    batch = Batch(
        ["a", "b"],
        torch.randint(4, 40, (2, 11)) * (torch.arange(11) < src_lens[:, None]),
        src_lens,
        torch.randint(4, 40, (2, 6)) * (torch.arange(6) < tgt_lens[:, None]),
        tgt_lens,
    )
    board = _Board()
    mon = M.TrainingMonitor(M.MonitorConfig(merge_stats=False), None, [batch])
    mon.on_validate(model, 1, board)
    P = 7 // 2 if arrangement == "prefix" else 7  # the projector stacks 2 frames into one
    L = 5 + 1
    visible = stride_aware_causal_mask(P + L, 2)
    maps = ("self", "frames")
    assert set(board.images) == {f"attention/layer{i}/{m}" for i in (0, 1) for m in maps}
    for i in (0, 1):
        self_map, frames_map = (board.images[f"attention/layer{i}/{m}"] for m in maps)
        assert self_map.shape == (L, L) and frames_map.shape == (L, P)
        if arrangement == "cross":
            assert torch.equal(self_map > 0, visible[:L, :L])
            assert (frames_map > 0).all()
            sums = [self_map.sum(-1), frames_map.sum(-1)]
        else:
            assert torch.equal(self_map > 0, visible[P:, P:])
            assert torch.equal(frames_map > 0, visible[P:, :P])
            sums = [self_map.sum(-1) + frames_map.sum(-1)]
        for total in sums:
            torch.testing.assert_close(total, torch.ones(L))


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
