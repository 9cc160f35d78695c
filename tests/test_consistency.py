"""Consistency training (model.consistency_weight): two SpecAugment views of every utterance in
one batch, and the symmetric KL between the views' decoder distributions, each view pulled
towards the other held fixed (CR-CTC's form)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2s.data.dataset import SpeechDataset, collate, collate_views
from s2s.data.specaug import SpecAugConfig, SpecAugment
from s2s.experiment import ExperimentConfig, build_loader, load_experiment_config
from s2s.models.decoder import DecoderConfig
from s2s.models.encoder import EncoderConfig
from s2s.models.seq2seq import ModelConfig, Seq2SeqModel, consistency_loss

V = 40


def test_the_loss_is_the_symmetric_kl_and_its_gradient_moves_each_view_to_the_other() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * 3, 4, V, generator=g, dtype=torch.float64).requires_grad_()
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool).repeat(2, 1)
    loss = consistency_loss(logits, valid, views=2)
    la, lb = logits.detach().log_softmax(-1).float().chunk(2)
    m = valid[:3]
    want = F.kl_div(la[m], lb[m], log_target=True, reduction="sum") + F.kl_div(
        lb[m], la[m], log_target=True, reduction="sum"
    )
    torch.testing.assert_close(loss, want)
    loss.backward()
    # d KL(sg(p_b) || p_a) / d logits_a = p_a - p_b, and nothing through the detached target
    pa, pb = logits.detach().softmax(-1).chunk(2)
    grad_a, grad_b = logits.grad.chunk(2)
    torch.testing.assert_close(grad_a[m], (pa - pb)[m], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_b[m], (pb - pa)[m], rtol=1e-5, atol=1e-6)
    assert grad_a[~m].abs().max() == 0 and grad_b[~m].abs().max() == 0
    same = logits.detach()[:3].repeat(2, 1, 1)
    assert consistency_loss(same, valid, views=2).item() == pytest.approx(0.0, abs=1e-6)


def model(weight: float) -> Seq2SeqModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=EncoderConfig(input_dim=20, d_model=32, n_heads=2, ffn_dim=64, n_layers=1,
                              subsampling_channels=8),
        decoder=DecoderConfig(n_layers=1, d_model=32, n_heads=2, ffn_dim=64, dropout=0.0),
        ctc_weight=0.3,
        consistency_weight=weight,
    )  # fmt: skip
    return Seq2SeqModel(cfg, V).eval()


def two_view_items(shift: int) -> list[tuple]:
    g = torch.Generator().manual_seed(1)
    aug = SpecAugment(SpecAugConfig(freq_masks=1, freq_width=5, time_masks=0, time_shift=shift))
    groups = []
    for i, frames in enumerate([60, 45, 80]):
        feats = torch.randn(frames, 20, generator=g)
        tgt = torch.randint(4, V, (4 + i,), generator=g)
        groups.append(tuple((f"u{i}", aug(feats, g), tgt) for _ in range(2)))
    return groups


def test_the_model_adds_the_weighted_consistency_of_a_two_view_batch() -> None:
    groups = two_view_items(shift=8)
    batch = collate_views(groups)
    assert batch.views == 2 and batch.utt_ids == ["u0", "u1", "u2"] * 2
    assert torch.equal(batch.tgt[:3], batch.tgt[3:])
    out = model(0.5)(batch)
    plain = model(0.0)(batch)  # the same weights, no consistency term
    assert "loss_cons" in out and "loss_cons" not in plain and out["loss_cons"] > 0
    torch.testing.assert_close(out["loss"], plain["loss"] + 0.5 * out["loss_cons"])
    # the other losses are those of the 2B rows as one batch: both views trained on
    one = model(0.5)(collate([item for v in range(2) for item in (g[v] for g in groups)]))
    torch.testing.assert_close(one["loss_att"], out["loss_att"])
    assert "loss_cons" not in one  # a batch of one view (validation) has no consistency term


def test_collate_views_refuses_mixed_view_counts() -> None:
    groups = two_view_items(shift=8)
    with pytest.raises(ValueError, match=r"utterances with \[1, 2\] views"):
        collate_views([groups[0], groups[1][:1]])


def test_configs_that_cannot_draw_two_different_views_are_errors() -> None:
    with pytest.raises(ValueError, match="consistency_weight must be >= 0"):
        ModelConfig(consistency_weight=-0.1)
    off = [f"data.specaug.{k}=0" for k in ("freq_masks", "time_masks", "time_warp", "time_shift")]
    with pytest.raises(ValueError, match="every one is off"):
        load_experiment_config(overrides=["model.consistency_weight=0.2", *off])
    with pytest.raises(ValueError, match="is for speech sources"):
        load_experiment_config(
            overrides=["model.consistency_weight=0.2", "data.source=text", "data.source_field=s"]
        )
    with pytest.raises(ValueError, match="needs specaug"):
        SpeechDataset("nowhere", "nowhere", None, views=2)  # type: ignore[arg-type]


def test_the_training_loader_yields_two_views_of_each_utterance(tmp_path) -> None:
    """A data dir through build_dataset/build_loader with consistency on: each batch holds its
    utterances twice, the two views drawn apart (time shift), the targets the same."""
    from test_dataset import UTTS, write_dir

    from s2s.data.features import dump_features
    from s2s.data.tokenizer import train_sentencepiece
    from s2s.experiment import build_dataset

    data = write_dir(tmp_path, "train", UTTS)
    dump = dump_features(data, tmp_path / "dump")
    texts = [w for _, a, b in UTTS.values() for w in (a, b)] * 10
    tok = train_sentencepiece(texts, tmp_path / "spm", vocab_size=40, model_type="bpe",
                              num_threads=1)  # fmt: skip
    cfg: ExperimentConfig = load_experiment_config(
        overrides=[
            "model.consistency_weight=0.2",
            f"data.train_dir={data}",
            f"data.train_dump={dump}",
            f"data.tokenizer={tmp_path / 'spm.model'}",
            "data.specaug.freq_masks=0",
            "data.specaug.time_masks=0",
            "data.specaug.time_shift=10",
            "data.max_frames=100000",
        ]
    )
    torch.manual_seed(3)
    ds = build_dataset(cfg, "train", tok, train=True)
    (batch,) = list(build_loader(cfg, ds, shuffle=False))
    n = len(UTTS)
    assert batch.views == 2 and batch.utt_ids[:n] == batch.utt_ids[n:]
    assert torch.equal(batch.tgt[:n], batch.tgt[n:])
    assert not torch.equal(batch.src_lens[:n], batch.src_lens[n:])  # shifted apart
    valid = build_dataset(cfg, "train", tok, train=False)
    assert build_loader(cfg, valid, shuffle=False).collate_fn.func is collate
