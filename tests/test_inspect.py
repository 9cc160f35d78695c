"""Seq2SeqModel.inspect (s2s.models.inspection) and the probe its attention modules report into
(s2s.attention.probe): the shapes for every arrangement and variant, probabilities that sum to 1
over what the mask lets through, a forward that stays bitwise the plain one, and no side channel
set on a module from outside."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from s2s.attention import VARIANTS as VARIANTS_ALL
from s2s.attention import stride_aware_causal_mask
from s2s.attention.probe import AttentionProbe, probe, probing
from s2s.data.dataset import Batch
from s2s.experiment import build_model, load_experiment_config
from s2s.models.seq2seq import add_bos_eos

ROOT = Path(__file__).resolve().parents[1]
ARRANGEMENTS = ("cross", "prefix", "prompt")
VARIANTS = {"mha": [], "mtla": ["model.decoder.attention.stride=2"]}
SRC_LENS, TGT_LENS = (7, 11), (5, 6)  # utterance 0 the shorter: its maps are no batch corner


def _model(arrangement: str, variant: str = "mtla", n_layers: int = 2):
    overrides = [
        f"model.decoder.arrangement={arrangement}",
        "model.decoder.projector_stack=2",
        f"model.decoder.attention.type={variant}",
        *VARIANTS[variant],
        f"model.decoder.n_layers={n_layers}",
    ]
    cfg = load_experiment_config([ROOT / "conf" / "model" / "tiny_text.yaml"], overrides)
    torch.manual_seed(0)
    return build_model(cfg, 40).eval()


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    src_lens, tgt_lens = torch.tensor(SRC_LENS), torch.tensor(TGT_LENS)
    S, L = max(SRC_LENS), max(TGT_LENS)
    src = torch.randint(4, 40, (2, S), generator=g) * (torch.arange(S) < src_lens[:, None])
    tgt = torch.randint(4, 40, (2, L), generator=g) * (torch.arange(L) < tgt_lens[:, None])
    return Batch(["a", "b"], src, src_lens, tgt, tgt_lens)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_inspection_shapes_for_every_arrangement_and_variant(arrangement, variant):
    model, batch = _model(arrangement, variant), _batch()
    seen = model.inspect(batch)
    B, H, n_layers = 2, model.decoder.cfg.n_heads, 2
    L = max(TGT_LENS) + 1  # [bos] + target
    _, memory_lens = model.encode(batch.src, batch.src_lens)
    assert torch.equal(seen.memory_lens, memory_lens)
    P = memory_lens // 2 if arrangement == "prefix" else memory_lens  # projector_stack=2
    assert torch.equal(seen.frame_lens, P)
    assert torch.equal(seen.frame_lens, model.decoder.frame_lengths(memory_lens))
    assert torch.equal(seen.token_lens, batch.tgt_lens + 1)
    assert seen.tokens.shape == seen.outputs.shape == (B, L)
    assert seen.logits.shape == (B, L, 40)
    T = {"cross": L, "prefix": int((P + seen.token_lens).max())}.get(arrangement)
    T = T or int((P + seen.token_lens).max())
    Q = T if arrangement == "prompt" else L
    assert seen.n_layers == n_layers
    assert all(a.shape == (B, H, Q, T) for a in seen.self_attention)
    assert all(a.dtype == torch.float32 for a in seen.self_attention)
    if arrangement == "cross":
        assert seen.cross_attention is not None
        assert all(a.shape == (B, H, L, max(SRC_LENS)) for a in seen.cross_attention)
    else:
        assert seen.cross_attention is None
    if variant == "mtla":
        assert seen.stride == 2
        assert seen.merge_weights is not None
        assert all(w.shape == (B, T) for w in seen.merge_weights)
        valid, _ = seen.key_masks()
        assert all(((w[valid] > 0) & (w[valid] < 1)).all() for w in seen.merge_weights)
    else:
        assert seen.stride == 1 and seen.merge_weights is None
    for b in range(B):
        Lb, Pb = int(seen.token_lens[b]), int(P[b])
        assert seen.self_map(0, b).shape == (H, Lb, Lb)
        assert seen.frames_map(0, b).shape == (H, Lb, Pb)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_probabilities_sum_to_one_over_the_unmasked_keys(arrangement, variant):
    seen = _model(arrangement, variant).inspect(_batch())
    valid, is_frame = seen.key_masks()
    assert torch.equal(valid.sum(1), seen.key_lens)
    if arrangement == "cross":
        assert not is_frame.any()
    else:
        assert torch.equal(is_frame.sum(1), seen.frame_lens)
    n_queries = seen.key_lens if arrangement == "prompt" else seen.token_lens
    for a in seen.self_attention:
        for b in range(2):
            rows = a[b, :, : int(n_queries[b])]
            torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[:2]))
            assert (rows[..., ~valid[b]] == 0).all()  # padded keys
    for a in seen.cross_attention or []:
        for b in range(2):
            rows = a[b, :, : int(seen.token_lens[b])]
            torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[:2]))
            assert (rows[..., int(seen.frame_lens[b]) :] == 0).all()


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_maps_are_the_first_utterances_targets_slots_and_frames(arrangement):
    """Each map is utterance 0's: rows its [bos] + target tokens, the self map's columns the
    target slots and the frames map's its own frames (not the batch's longest, not the other
    arrangement's layout). In prefix and prompt one softmax covers [frames ; targets], so a
    row of the two maps sums to 1 and each cell is zero exactly where MTLA's stride-aware mask
    over the packed positions (frames first) hides the slot; in cross each map is a softmax of
    its own."""
    seen = _model(arrangement).inspect(_batch())
    P = SRC_LENS[0] // 2 if arrangement == "prefix" else SRC_LENS[0]
    L = TGT_LENS[0] + 1
    visible = stride_aware_causal_mask(P + L, 2)
    for i in range(seen.n_layers):
        self_map, frames_map = seen.self_map(i, 0).mean(0), seen.frames_map(i, 0).mean(0)
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


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_inspecting_leaves_the_forward_bitwise_unchanged(arrangement, train_mode):
    """The inspection's logits are the plain forward's, bit for bit (dropout on too: asking
    draws no random number), and the losses before and after an inspection are the same."""
    model, batch = _model(arrangement).train(train_mode), _batch()

    def plain():
        torch.manual_seed(5)
        with torch.no_grad():
            memory, memory_lens = model.encode(batch.src, batch.src_lens)
            inp, _, lens = add_bos_eos(batch.tgt, batch.tgt_lens)
            return model.decoder(inp, lens, memory, memory_lens)

    def loss():
        torch.manual_seed(5)
        return model(batch)["loss"]

    before, expect = loss(), plain()
    torch.manual_seed(5)
    seen = model.inspect(batch)
    assert torch.equal(seen.logits, expect)
    assert torch.equal(loss(), before)
    assert model.training == train_mode


def test_the_probe_is_keyed_by_module_and_silent_outside_a_block():
    model, batch = _model("cross"), _batch()
    assert not probing()
    with probe() as found:
        assert probing()
        model(batch)
        with probe() as inner:  # a nested probe takes the reports while it is open
            model(batch)
        assert len(inner) == len(found)
    assert not probing()
    assert isinstance(found, AttentionProbe)
    layer = model.decoder.layers[0]
    assert set(found.of(layer.self_attn)) == {"attention", "merge_weight"}
    assert set(found.of(layer.cross_attn)) == {"attention"}
    assert found.of(model.encoder) == {}
    # nothing reported with no probe open, and no module carries one
    seen = model.inspect(batch)
    assert all(not hasattr(m, "record") for m in model.modules())
    assert seen.n_layers == len(model.decoder.layers)


def test_no_module_is_handed_a_side_channel_from_outside():
    """The old monitor set a `record` dict on every attention module; nothing sets or reads
    such an attribute now (the modules report into s2s.attention.probe instead)."""
    pattern = re.compile(r"\.record\b(?!\()|\brecord\s*[:=]")  # not CUDA events' record()
    hits = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "s2s").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits


@pytest.mark.slow  # about 45 s on 2 cores: the layer compiles on the CPU
def test_inspection_of_compiled_layers_runs_eagerly_and_sees_the_same():
    """train.compile compiles each layer in place; inspect still gets every report (the
    compiled graphs never see the probe, nor break on it) and the same numbers as the eager
    model."""
    from torch._dynamo.utils import counters

    from s2s.train.speed import compile_layers

    model, batch = _model("cross", n_layers=1), _batch()
    eager = model.inspect(batch)
    compile_layers(model)
    with torch.no_grad():
        model(batch)  # compiled, no probe
    seen = model.inspect(batch)
    assert torch.equal(seen.logits, eager.logits)
    assert torch.equal(seen.self_attention[0], eager.self_attention[0])
    assert torch.equal(seen.merge_weights[0], eager.merge_weights[0])
    assert not [reason for reason in counters["graph_break"] if "ContextVar" in reason]


@pytest.mark.parametrize("variant", VARIANTS_ALL)
def test_every_variant_reports_its_probabilities(variant):
    """Every registered self-attention reports through the probe (each calls `parallel`)."""
    cfg = load_experiment_config(
        [ROOT / "conf" / "model" / "tiny_text.yaml"],
        [
            "model.decoder.arrangement=cross",
            f"model.decoder.attention.type={variant}",
            "model.decoder.n_layers=1",
        ],
    )
    torch.manual_seed(0)
    seen = build_model(cfg, 40).eval().inspect(_batch())
    L = max(TGT_LENS) + 1
    assert seen.self_attention[0].shape[::2] == (2, L) and seen.self_attention[0].shape[3] == L
    rows = seen.self_attention[0][0, :, : TGT_LENS[0] + 1]
    torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[:2]))
