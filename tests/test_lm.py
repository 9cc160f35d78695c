"""The target-side language model (s2s.models.lm) and its shallow fusion into the batched beam
search: step-by-step equals the parallel forward; weight 0 leaves every hypothesis as the plain
search finds it; batched equals one utterance at a time; the fused score is exactly decoder +
weight * LM (+ CTC) of the hypothesis, recomputed by teacher forcing."""

from __future__ import annotations

import pytest
import torch
from helpers import BOS, EOS, V, make_decoder, make_lm, search

from s2s.decode.beam_search import BeamSearchConfig

CASES = [("mha", 1), ("gqa", 1), ("mla", 1), ("mtla", 2), ("mtla", 3)]


@pytest.mark.parametrize(("variant", "stride"), CASES)
def test_step_by_step_equals_parallel(variant: str, stride: int) -> None:
    lm = make_lm(variant, stride)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, V, (3, 7), generator=g)
    tokens[:, 0] = BOS
    lens = torch.tensor([7, 4, 6])
    with torch.no_grad():
        want = lm.logits(tokens, lens)  # (B, L, V)
    state = lm.init_state(3, ancestry=True, max_len=7)
    for t in range(7):
        got = lm.step(tokens[:, t], state)
        for b in range(3):
            if t < lens[b]:
                torch.testing.assert_close(got[b], want[b, t], atol=1e-5, rtol=1e-5)


def test_lm_trains_on_targets_only() -> None:
    """forward(batch) is the trainer's contract: per-token loss over y + EOS, the source unread."""
    from s2s.data.dataset import Batch

    lm = make_lm()
    tgt = torch.tensor([[5, 6, 7], [8, 9, 0]])
    batch = Batch(
        ["a", "b"], torch.zeros(2, 1), torch.ones(2, dtype=torch.long), tgt, torch.tensor([3, 2])
    )
    out = lm(batch)
    assert int(out["n_tokens"]) == 7  # 3 + 1 EOS, 2 + 1 EOS
    logits = lm.logits(torch.tensor([[BOS, 5, 6, 7]]), torch.tensor([4]))[0].log_softmax(-1)
    lp = logits[torch.arange(4), torch.tensor([5, 6, 7, EOS])].sum()
    logits = lm.logits(torch.tensor([[BOS, 8, 9]]), torch.tensor([3]))[0].log_softmax(-1)
    lp = lp + logits[torch.arange(3), torch.tensor([8, 9, EOS])].sum()
    torch.testing.assert_close(out["loss"], -lp / 7, atol=1e-5, rtol=1e-5)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(3, 9, 24, generator=g)
    lens = torch.tensor([9, 4, 7])
    ctc = torch.randn(3, 9, V, generator=g).log_softmax(-1)
    return memory, lens, ctc


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
@pytest.mark.parametrize("arrangement", ["cross", "prefix"])
def test_weight_zero_equals_plain_search(arrangement: str, ctc_weight: float) -> None:
    """The LM runs (its caches reorder with the hypotheses) but adds 0: same hypotheses, same
    scores, to the last bit."""
    dec, lm = make_decoder(arrangement, "mtla", 2, seed=3), make_lm(seed=4)
    memory, lens, ctc = _inputs()
    cfg = BeamSearchConfig(beam_size=4, nbest=4, max_len_b=8, ctc_weight=ctc_weight)
    plain_stats, fused_stats = {}, {}
    plain = search(dec, memory, lens, cfg, ctc=ctc, stats=plain_stats)
    fused = search(dec, memory, lens, cfg, ctc=ctc, lm=lm, stats=fused_stats)
    assert fused == plain
    # the LM's caches count in the decode's peak: allocated once, for B * K rows x 9 tokens
    lm_bytes = lm.init_state(3 * 4, ancestry=True, max_len=9).peak_cache_bytes()
    assert fused_stats["peak_cache_bytes"] == plain_stats["peak_cache_bytes"] + lm_bytes > 0


def _teacher_forced(dec, lm, memory, lens, tokens: list[int], weight: float) -> float:
    """log p_dec(y + EOS | x) + weight * log p_lm(y + EOS), recomputed in parallel."""
    inp = torch.tensor([[BOS, *tokens]])
    out = torch.tensor([*tokens, EOS])
    n = torch.tensor([len(tokens) + 1])
    d = dec(inp, n, memory, lens)[0].double().log_softmax(-1)
    m = lm.logits(inp, n)[0].double().log_softmax(-1)
    idx = torch.arange(len(out))
    return float(d[idx, out].sum() + weight * m[idx, out].sum())


@pytest.mark.parametrize("engine", ["lean", "naive"])
def test_fused_batched_equals_alone_and_the_fused_score(engine: str) -> None:
    """With weight 0.5: each utterance of a padded batch gets the hypotheses it gets alone, and
    every hypothesis's score is decoder + 0.5 * LM of its tokens (the LM followed its own
    ancestry, never another hypothesis's), recomputed by teacher forcing."""
    dec, lm = make_decoder("cross", "mtla", 2, seed=5), make_lm("mtla", 3, seed=6)
    memory, lens, _ = _inputs(1)
    cfg = BeamSearchConfig(beam_size=3, nbest=3, max_len_b=7, lm_weight=0.5)
    kw = dict(lm=lm, engine=engine)
    batched = search(dec, memory, lens, cfg, **kw)
    plain = search(dec, memory, lens, BeamSearchConfig(beam_size=3, nbest=3, max_len_b=7))
    assert batched != plain  # the LM changes the search
    with torch.no_grad():
        for b in range(3):
            m, ln = memory[b : b + 1, : int(lens[b])], lens[b : b + 1]
            alone = search(dec, m, ln, cfg, **kw)[0]
            assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
            for h, a in zip(batched[b], alone):
                assert h.log_prob == pytest.approx(a.log_prob, abs=1e-4)
                want = _teacher_forced(dec, lm, m, ln, h.tokens, 0.5)
                assert h.log_prob == pytest.approx(want, abs=1e-4)


def test_fusion_needs_a_model_and_a_valid_weight() -> None:
    dec = make_decoder("cross", "mha", 1)
    cfg = BeamSearchConfig(beam_size=2, lm_weight=0.3)
    with pytest.raises(ValueError, match="needs a language model"):
        search(dec, torch.randn(1, 5, 24), torch.tensor([5]), cfg)
    with pytest.raises(ValueError, match="lm_weight"):
        BeamSearchConfig(lm_weight=-0.1)


def test_load_lm_refuses_another_tokenizer(tmp_path) -> None:
    """An LM trained with another tokenizer would score other tokens than the decoder emits."""
    from s2s.experiment import LMExperimentConfig, load_lm, save_experiment_config

    with pytest.raises(FileNotFoundError, match="not an LM experiment"):
        load_lm(tmp_path, tmp_path / "tok.model")
    (tmp_path / "tokenizer.model").write_bytes(b"the LM's pieces")
    (tmp_path / "tok.model").write_bytes(b"the model's pieces")
    cfg = LMExperimentConfig()
    cfg.data.tokenizer = "tokenizer.model"  # relative to config.yaml, as in an experiment dir
    save_experiment_config(cfg, tmp_path / "config.yaml")
    with pytest.raises(ValueError, match="differs from the model's"):
        load_lm(tmp_path, tmp_path / "tok.model")
