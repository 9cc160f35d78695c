"""The model's training loss: attention cross-entropy, CTC over the targets, and the source CTC
of speech translation (over the source transcript, ESPnet-ST's ASR multi-task), mixed by their
weights; and the configs that turn them on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2s.data.dataset import collate
from s2s.experiment import load_experiment_config
from s2s.models.decoder import DecoderConfig
from s2s.models.encoder import EncoderConfig
from s2s.models.seq2seq import ModelConfig, Seq2SeqModel

V = 40


def model(ctc_weight: float, src_ctc_weight: float) -> Seq2SeqModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=EncoderConfig(input_dim=20, d_model=32, n_heads=2, ffn_dim=64, n_layers=1,
                              subsampling_channels=8),
        decoder=DecoderConfig(n_layers=1, d_model=32, n_heads=2, ffn_dim=64, dropout=0.0),
        ctc_weight=ctc_weight,
        src_ctc_weight=src_ctc_weight,
    )  # fmt: skip
    return Seq2SeqModel(cfg, V).eval()


def batch(with_source: bool):
    g = torch.Generator().manual_seed(1)
    items = []
    for i, (frames, n_tgt, n_src) in enumerate([(60, 5, 7), (45, 3, 4), (80, 6, 9)]):
        item = (
            f"u{i}",
            torch.randn(frames, 20, generator=g),
            torch.randint(4, V, (n_tgt,), generator=g),
        )
        items.append(item + (torch.randint(4, V, (n_src,), generator=g),) if with_source else item)
    return collate(items)


def test_source_ctc_is_ctc_of_its_own_head_over_the_source_transcript() -> None:
    m, b = model(0.2, 0.3), batch(with_source=True)
    out = m(b)
    memory, memory_lens = m.encode(b.src, b.src_lens)
    n_tokens = (b.tgt_lens + 1).sum()
    logp = m.src_ctc(memory).log_softmax(-1).transpose(0, 1)
    src = F.ctc_loss(logp, b.src_text, memory_lens, b.src_text_lens, reduction="sum") / n_tokens
    tgt_logp = m.ctc(memory).log_softmax(-1).transpose(0, 1)
    ctc = F.ctc_loss(tgt_logp, b.tgt, memory_lens, b.tgt_lens, reduction="sum") / n_tokens
    torch.testing.assert_close(out["loss_src_ctc"], src)
    torch.testing.assert_close(out["loss_ctc"], ctc)
    torch.testing.assert_close(out["loss"], 0.5 * out["loss_att"] + 0.2 * ctc + 0.3 * src)
    # the source CTC trains the encoder through its own head
    out["loss_src_ctc"].backward()
    assert m.src_ctc.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.encoder.parameters())
    assert m.ctc.weight.grad is None and all(p.grad is None for p in m.decoder.parameters())


def test_without_source_ctc_the_loss_is_what_it_was() -> None:
    b = batch(with_source=True)  # a transcript in the batch is ignored without the weight
    m = model(0.3, 0.0)
    out = m(b)
    assert m.src_ctc is None and "loss_src_ctc" not in out
    assert torch.equal(out["loss"], (1 - 0.3) * out["loss_att"] + 0.3 * out["loss_ctc"])
    plain = model(0.0, 0.0)(batch(with_source=False))
    assert torch.equal(plain["loss"], plain["loss_att"])


def test_source_ctc_needs_the_transcript_in_the_batch() -> None:
    with pytest.raises(ValueError, match="needs the source transcript.*data.src_ctc_field"):
        model(0.0, 0.3)(batch(with_source=False))


@pytest.mark.parametrize(
    "weights, match",
    [((0.6, 0.4), r"ctc_weight \+ src_ctc_weight must be < 1"), ((0.0, 1.0), r"src_ctc_weight")],
)
def test_weights_are_checked(weights: tuple[float, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig(ctc_weight=weights[0], src_ctc_weight=weights[1])


def test_experiment_config_pairs_the_weight_with_the_field() -> None:
    ok = load_experiment_config(
        overrides=["model.src_ctc_weight=0.3", "data.src_ctc_field=text.en"]
    )
    assert ok.model.src_ctc_weight == 0.3 and ok.data.src_ctc_field == "text.en"
    with pytest.raises(ValueError, match="needs data.src_ctc_field"):
        load_experiment_config(overrides=["model.src_ctc_weight=0.3"])
    with pytest.raises(ValueError, match="for speech sources"):
        load_experiment_config(
            overrides=[
                "model.src_ctc_weight=0.3",
                "data.src_ctc_field=text.en",
                "data.source=text",
                "data.source_field=text.en",
            ]
        )
    with pytest.raises(ValueError, match="src_ctc_feld"):  # a typo is an error, as for any key
        load_experiment_config(overrides=["data.src_ctc_feld=text.en"])
