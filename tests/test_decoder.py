"""Decoder in all three arrangements: teacher-forced == step-by-step, padding invariance, beams
sharing the utterance's memory."""

from __future__ import annotations

import pytest
import torch
from helpers import make_decoder

from s2s.attention import VARIANTS
from s2s.models.decoder import Decoder, DecoderConfig

CASES = [(v, 1) for v in VARIANTS] + [("mtla", 2), ("mtla", 3), ("mtla", 4)]


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(3, 9, 24, generator=g)
    memory_lens = torch.tensor([9, 4, 6])
    tokens = torch.randint(4, 23, (3, 7), generator=g)
    token_lens = torch.tensor([7, 3, 5])
    return memory, memory_lens, tokens, token_lens


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
@pytest.mark.parametrize(("variant", "stride"), CASES)
def test_step_equals_teacher_forcing(arrangement: str, variant: str, stride: int) -> None:
    dec = make_decoder(arrangement, variant, stride)
    memory, memory_lens, tokens, token_lens = inputs()
    with torch.no_grad():
        logits = dec(tokens, token_lens, memory, memory_lens)
        state = dec.init_state(memory, memory_lens)
        stepped = torch.stack([dec.step(tokens[:, t], state) for t in range(tokens.shape[1])], 1)
    for b, n in enumerate(token_lens.tolist()):
        torch.testing.assert_close(stepped[b, :n], logits[b, :n], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
@pytest.mark.parametrize(("variant", "stride"), [c for c in CASES if c != ("mtla", 4)])
def test_padded_batch_equals_each_alone(arrangement: str, variant: str, stride: int) -> None:
    dec = make_decoder(arrangement, variant, stride)
    memory, memory_lens, tokens, token_lens = inputs(1)
    memory[torch.arange(9)[None] >= memory_lens[:, None]] = 50.0  # padding must not matter
    with torch.no_grad():
        batched = dec(tokens, token_lens, memory, memory_lens)
        for b in range(3):
            m, n = int(memory_lens[b]), int(token_lens[b])
            alone = dec(
                tokens[b : b + 1, :n],
                token_lens[b : b + 1],
                memory[b : b + 1, :m],
                memory_lens[b : b + 1],
            )
            torch.testing.assert_close(batched[b, :n], alone[0], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("ancestry", [False, True])
@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
def test_beams_share_memory_and_match_single(arrangement: str, ancestry: bool) -> None:
    dec = make_decoder(arrangement, "mtla", 2)
    memory, memory_lens, tokens, _ = inputs(2)
    beam = 3
    with torch.no_grad():
        single = dec.init_state(memory, memory_lens)
        multi = dec.init_state(memory, memory_lens, beam=beam, ancestry=ancestry)
        if arrangement == "cross":
            k, _ = multi.memory_kv[0]
            assert k.shape[0] == 3  # one copy per utterance, not per beam
        for t in range(4):
            a = dec.step(tokens[:, t], single)
            b = dec.step(tokens[:, t].repeat_interleave(beam), multi)
            torch.testing.assert_close(b, a.repeat_interleave(beam, 0), rtol=1e-5, atol=2e-5)


def test_tied_embeddings_and_config_errors() -> None:
    dec = Decoder(DecoderConfig(n_layers=1, d_model=32, n_heads=4), vocab_size=23, memory_dim=24)
    assert dec.output.weight is dec.embed.weight
    with pytest.raises(ValueError, match="arrangement"):
        DecoderConfig(arrangement="sideways")
    with pytest.raises(ValueError, match="conflicts"):
        DecoderConfig(d_model=64, n_heads=4, attention={"type": "mla", "d_model": 32})
    with pytest.raises(ValueError, match="'mha' does not use 'stride'"):
        DecoderConfig(attention={"type": "mha", "stride": 2})


def test_dropout_rates_of_each_place() -> None:
    """attn_dropout / activation_dropout default to `dropout` (one rate everywhere, as before
    they existed); set, they rule the cross-attention's probabilities and the feed-forward's
    inside alone; the embeddings and the sublayer outputs keep `dropout`."""

    def rates(**kw) -> tuple[float, float, float, float]:
        cfg = DecoderConfig(n_layers=1, d_model=32, n_heads=4, arrangement="cross", **kw)
        dec = Decoder(cfg, vocab_size=23, memory_dim=24)
        layer = dec.layers[0]
        return dec.dropout.p, layer.dropout.p, layer.cross_attn.dropout, layer.ffn[2].p

    assert rates(dropout=0.2) == (0.2, 0.2, 0.2, 0.2)
    assert rates(dropout=0.2, attn_dropout=0.0, activation_dropout=0.05) == (0.2, 0.2, 0.0, 0.05)
    for name in ("dropout", "attn_dropout", "activation_dropout"):
        with pytest.raises(ValueError, match=name):
            DecoderConfig(**{name: 1.0})


@pytest.mark.parametrize("norm", [False, True])
def test_prefix_projector_stacks_frames(norm: bool) -> None:
    """projector_stack = 2: a sample of S frames gives S // 2 stacked frames (a trailing odd
    frame dropped); step-by-step still equals teacher forcing, padded still equals alone."""
    cfg = DecoderConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        ffn_dim=64,
        dropout=0.0,
        arrangement="prefix",
        projector_stack=2,
        projector_norm=norm,
        attention={"type": "mtla", "stride": 3},
    )
    dec = Decoder(cfg, vocab_size=23, memory_dim=24).eval()
    memory, memory_lens, tokens, token_lens = inputs(3)
    with torch.no_grad():
        frames, frame_lens = dec.project_frames(memory, memory_lens)
        assert frames.shape[1] == 4 and frame_lens.tolist() == [4, 2, 3]
        logits = dec(tokens, token_lens, memory, memory_lens)
        state = dec.init_state(memory, memory_lens)
        stepped = torch.stack([dec.step(tokens[:, t], state) for t in range(tokens.shape[1])], 1)
        for b, n in enumerate(token_lens.tolist()):
            torch.testing.assert_close(stepped[b, :n], logits[b, :n], rtol=1e-5, atol=2e-5)
            m = int(memory_lens[b])
            alone = dec(
                tokens[b : b + 1, :n],
                token_lens[b : b + 1],
                memory[b : b + 1, :m],
                memory_lens[b : b + 1],
            )
            torch.testing.assert_close(alone[0], logits[b, :n], rtol=1e-5, atol=2e-5)
    with pytest.raises(ValueError, match="projector_stack"):
        DecoderConfig(projector_stack=0)
