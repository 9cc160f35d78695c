"""The scorer interface of beam search (s2s.decode.scorers): every scorer implements it and
keeps its state in the buffers init_state allocated; the search applies the weights as given
and knows no scorer by name."""

from __future__ import annotations

import pytest
import torch
from helpers import BOS, EOS, V, make_decoder, make_lm, scorers_for, search

from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.decode.compare import Lockstep
from s2s.decode.ctc_prefix import CTCPrefixScorer, CTCPrefixState
from s2s.decode.scorers import DecoderScorer, LMScorer, Scorer, SearchInit, Weighted


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(2, 9, 24, generator=g)
    lens = torch.tensor([9, 6])
    ctc = torch.randn(2, 9, V, generator=g).log_softmax(-1)
    return memory, lens, ctc


def _buffers(state) -> list[int]:
    """Where a state's tensors live: the CTC forward variables, or every cache buffer of a
    decoder state (of both, for the lockstep's pair)."""
    if isinstance(state, CTCPrefixState):
        return [t.data_ptr() for t in (state.r, state.log_psi, state.last)]
    pairs = state if isinstance(state, tuple) else (state,)
    return [b.data_ptr() for s in pairs for c in s.caches for b in c.buffers.values()]


@pytest.mark.parametrize("kind", ["decoder", "lm", "ctc", "lockstep"])
def test_every_scorer_implements_the_interface(kind: str) -> None:
    """init_state for U x K rows; score gives float64 (N, V), or (N, W) for the candidates of
    a partial scorer; select moves the state by index inside the buffers init_state made."""
    memory, lens, ctc = _inputs()
    dec = make_decoder("prefix", "mtla", 2, seed=1)
    scorer = {
        "decoder": DecoderScorer(dec),
        "lm": LMScorer(make_lm()),
        "ctc": CTCPrefixScorer(lambda m: ctc, 0, EOS),
        "lockstep": Lockstep(dec, make_decoder("prefix", "mtla", 2, seed=1)),
    }[kind]
    assert isinstance(scorer, Scorer) and scorer.partial == (kind == "ctc")
    K, N = 3, 6
    state = scorer.init_state(SearchInit(memory, lens, K, max_len=6))
    before = _buffers(state)
    tokens = torch.full((N,), BOS)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        cand = torch.randint(4, V, (N, 4), generator=g) if scorer.partial else None
        out = scorer.score(state, tokens, cand)
        assert out.dtype == torch.float64 and out.shape == (N, 4 if scorer.partial else V)
        rows = (torch.arange(2)[:, None] * K + torch.randint(0, K, (2, K), generator=g)).view(N)
        cols = torch.randint(0, 4, (N,), generator=g)
        tokens = cand[rows, cols] if scorer.partial else torch.randint(4, V, (N,), generator=g)
        scorer.select(state, rows, cols if scorer.partial else tokens, tokens)
    assert _buffers(state) == before
    assert (scorer.peak_cache_bytes(state) > 0) == (kind != "ctc")


def test_weights_are_applied_as_given() -> None:
    """The decoder twice at 0.5 each is the decoder at 1 (0.5 x + 0.5 x = x, exactly); a
    scorer at weight 0 runs but changes nothing; a set without a full scorer is refused."""
    memory, lens, _ = _inputs(1)
    dec = make_decoder("cross", "mla", 1, seed=2)
    cfg = BeamSearchConfig(beam_size=4, nbest=4, max_len_b=8)
    kw = dict(bos_id=BOS, eos_id=EOS)
    once = beam_search({"decoder": Weighted(DecoderScorer(dec), 1.0)}, memory, lens, cfg, **kw)
    halves = {"a": Weighted(DecoderScorer(dec), 0.5), "b": Weighted(DecoderScorer(dec), 0.5)}
    assert beam_search(halves, memory, lens, cfg, **kw) == once
    other = make_decoder("cross", "mha", 1, seed=3)
    idle = {"decoder": Weighted(DecoderScorer(dec), 1.0), "x": Weighted(DecoderScorer(other), 0)}
    stats: dict = {}
    assert beam_search(idle, memory, lens, cfg, stats=stats, **kw) == once
    assert stats["peak_cache_bytes"] > 0
    ctc_only = {"ctc": Weighted(CTCPrefixScorer(lambda m: None, 0, EOS), 1.0)}
    with pytest.raises(ValueError, match="needs a full scorer"):
        beam_search(ctc_only, memory, lens, cfg, **kw)


def test_ctc_alone_with_an_idle_lm_equals_ctc_alone() -> None:
    """ctc_weight 1: the pre-beam ranks by the decoder's log-probs; an LM at weight 0 leaves
    every hypothesis as it is without the LM (it changes nothing here either)."""
    memory, lens, ctc = _inputs(2)
    dec, lm = make_decoder("cross", "mtla", 2, seed=4), make_lm(seed=5)
    cfg = BeamSearchConfig(beam_size=3, nbest=3, max_len_b=6, ctc_weight=1.0)
    assert search(dec, memory, lens, cfg, ctc=ctc, lm=lm) == search(dec, memory, lens, cfg, ctc=ctc)


def test_the_config_picks_the_set() -> None:
    """search_scorers: the decoder at 1 - ctc_weight, CTC at ctc_weight, the LM at lm_weight;
    CTC without a scorer for it is refused."""
    dec = DecoderScorer(make_decoder("cross", "mha", 1))
    _, _, ctc = _inputs()
    cfg = BeamSearchConfig(ctc_weight=0.3, lm_weight=0.2)
    got = scorers_for(cfg, dec, ctc, make_lm())
    assert list(got) == ["decoder", "ctc", "lm"]
    assert [w.weight for w in got.values()] == [1 - 0.3, 0.3, 0.2]
    assert list(scorers_for(BeamSearchConfig(), dec)) == ["decoder"]
    with pytest.raises(ValueError, match="needs a CTC prefix scorer"):
        scorers_for(BeamSearchConfig(ctc_weight=0.3), dec)
