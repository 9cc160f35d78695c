"""The batched beam-search engine against a plain reference that recomputes the whole decoder
from scratch at every step, for every variant, all three arrangements, batch 1 and 3, beam 1
and 4."""

from __future__ import annotations

import pytest
import torch
from helpers import BOS, EOS, V, make_decoder, make_lm, search

from s2s.attention import VARIANTS
from s2s.decode.beam_search import BeamSearchConfig, Hypothesis, max_lengths
from s2s.decode.scorers import DecoderScorer
from s2s.models.decoder import Decoder

# every registered variant (mtla at s = 2 and 3: at s = 1 it is mla)
CASES = [(v, 1) for v in VARIANTS if v != "mtla"] + [("mtla", 2), ("mtla", 3)]


def reference_beam_search(dec: Decoder, memory, memory_len, cfg: BeamSearchConfig) -> list:
    """One utterance; every step re-runs the teacher-forced decoder over [BOS] + prefix."""
    K = cfg.beam_size
    limit = int(max_lengths(memory_len, cfg)[0])
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[Hypothesis] = []
    for t in range(limit + 1):
        inp = torch.tensor([[BOS] + toks for toks, _ in beams])
        n = len(beams)
        logits = dec(inp, torch.full((n,), t + 1), memory.expand(n, -1, -1), memory_len.expand(n))
        logp = logits[:, -1].double().log_softmax(-1)
        logp[:, [0, BOS]] = float("-inf")  # padding and BOS are never emitted
        if t < cfg.min_len:
            logp[:, EOS] = float("-inf")
        if t >= limit:
            keep = logp[:, EOS].clone()
            logp[:] = float("-inf")
            logp[:, EOS] = keep
        cands = sorted(
            ((beams[i][1] + logp[i, w].item(), i, w) for i in range(n) for w in range(V)),
            key=lambda c: -c[0],
        )[: 2 * K]
        for rank, (score, i, w) in enumerate(cands):
            if w == EOS and rank < K and len(finished) < K and score > float("-inf"):
                toks = beams[i][0]
                finished.append(
                    Hypothesis(toks, score / (len(toks) + 1) ** cfg.length_penalty, score)
                )
        if len(finished) >= K or t >= limit:
            break
        beams = [(beams[i][0] + [w], s) for s, i, w in cands if w != EOS][:K]
    return sorted(finished, key=lambda h: -h.score)[: cfg.nbest]


def assert_same(got: list[Hypothesis], want: list[Hypothesis]) -> None:
    assert [h.tokens for h in got] == [h.tokens for h in want]
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=1e-4)
        assert g.log_prob == pytest.approx(w.log_prob, abs=1e-4)


@pytest.mark.parametrize("beam", [1, 4])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
@pytest.mark.parametrize(("variant", "stride"), CASES)
def test_engine_equals_reference(variant, stride, arrangement, batch, beam) -> None:
    dec = make_decoder(arrangement, variant, stride)
    g = torch.Generator().manual_seed(batch * 10 + beam)
    memory = torch.randn(batch, 8, 24, generator=g)
    memory_lens = torch.tensor([8, 5, 7][:batch])
    cfg = BeamSearchConfig(beam_size=beam, nbest=beam, max_len_b=7, min_len=1, length_penalty=1.0)
    got = search(dec, memory, memory_lens, cfg)
    for b in range(batch):
        m = int(memory_lens[b])
        want = reference_beam_search(dec, memory[b : b + 1, :m], memory_lens[b : b + 1], cfg)
        assert_same(got[b], want)


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
def test_padded_batch_equals_each_alone(arrangement: str) -> None:
    dec = make_decoder(arrangement, "mtla", 2, seed=1)
    memory = torch.randn(3, 9, 24)
    memory_lens = torch.tensor([9, 3, 6])
    memory[torch.arange(9)[None] >= memory_lens[:, None]] = 7.0
    cfg = BeamSearchConfig(beam_size=4, nbest=2, max_len_a=0.5, max_len_b=4)
    batched = search(dec, memory, memory_lens, cfg)
    for b in range(3):
        m = int(memory_lens[b])
        alone = search(dec, memory[b : b + 1, :m], memory_lens[b : b + 1], cfg)
        assert_same(batched[b], alone[0])


# mfa_kr rotates its cached keys by their position, which the two engines lay out differently
@pytest.mark.parametrize(("variant", "stride"), [("mtla", 3), ("mfa_kr", 1)])
@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
def test_lean_and_naive_engines_agree(arrangement: str, variant: str, stride: int) -> None:
    """The lean engine (frames once per utterance, exact own parts, ancestry) and the naive one
    (every hypothesis holds everything, copies on reorder) find the same hypotheses; the lean
    one allocates less and never grows its caches mid-search."""
    dec = make_decoder(arrangement, variant, stride, seed=2)
    memory, memory_lens = torch.randn(2, 7, 24), torch.tensor([7, 4])
    cfg = BeamSearchConfig(beam_size=3, nbest=3, max_len_b=6)
    a = search(dec, memory, memory_lens, cfg, engine="lean")
    b = search(dec, memory, memory_lens, cfg, engine="naive")
    for x, y in zip(a, b):
        assert_same(x, y)
    with pytest.raises(ValueError, match="engine"):
        search(dec, memory, memory_lens, cfg, engine="fast")


@pytest.mark.parametrize("arrangement", ["cross", "prefix"])
def test_lean_caches_are_allocated_once(arrangement: str) -> None:
    """Own parts sized for the longest output at the start: every step's buffers are the
    same tensors (no growth copies), and the frames' slots are held once per utterance."""
    dec = make_decoder(arrangement, "mtla", 2, seed=4)
    memory, memory_lens = torch.randn(2, 9, 24), torch.tensor([9, 5])
    beam, max_len = 4, 12
    state = dec.init_state(memory, memory_lens, beam=beam, ancestry=True, max_len=max_len)
    ptrs = [{k: v.data_ptr() for k, v in c.buffers.items()} for c in state.caches]
    before = state.allocated_cache_bytes()
    tokens = torch.full((2 * beam,), BOS)
    g = torch.Generator().manual_seed(0)
    for _ in range(max_len):
        dec.step(tokens, state)
        rows = torch.arange(2)[:, None] * beam + torch.randint(0, beam, (2, beam), generator=g)
        state.reorder(rows.view(-1))
        tokens = torch.randint(4, 23, (2 * beam,), generator=g)
    assert [{k: v.data_ptr() for k, v in c.buffers.items()} for c in state.caches] == ptrs
    assert state.allocated_cache_bytes() == before == state.peak_cache_bytes()
    for c in state.caches:
        if arrangement == "prefix":
            assert all(buf.shape[0] == 2 for buf in c.shared.values())  # B rows, not B * beam
        assert c.capacity == int(c.own_slots().max())  # exactly what the longest row used


def test_limits_and_config() -> None:
    dec = make_decoder("cross", "mha", 1)
    cfg = BeamSearchConfig(beam_size=2, nbest=2, max_len_b=3, min_len=3)
    out = search(dec, torch.randn(1, 5, 24), torch.tensor([5]), cfg)
    assert all(len(h.tokens) == 3 for h in out[0])  # min_len == max_len pins the length
    with pytest.raises(ValueError, match="need beam_size >= 1 and 1 <= nbest <= beam_size"):
        BeamSearchConfig(beam_size=2, nbest=3)


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
@pytest.mark.parametrize(
    ("variant", "stride", "engine"), [(*c, "lean") for c in CASES] + [("mtla", 2, "naive")]
)
def test_dropping_finished_utterances_changes_no_hypothesis(
    variant: str, stride: int, engine: str, arrangement: str, monkeypatch
) -> None:
    """The search drops the utterances it has finished (every scorer's `keep`) and goes on
    with the others: the same n-best lists as a search that keeps every row to the end, with
    the decoder, CTC prefix scores and an LM together."""
    dec, lm = make_decoder(arrangement, variant, stride, seed=5), make_lm(seed=6)
    g = torch.Generator().manual_seed(7)
    memory, lens = torch.randn(5, 9, 24, generator=g), torch.tensor([9, 2, 6, 3, 8])
    ctc = torch.randn(5, 9, V, generator=g).log_softmax(-1)
    cfg = BeamSearchConfig(
        beam_size=3, nbest=3, max_len_a=0.5, max_len_b=3, ctc_weight=0.3, lm_weight=0.2
    )
    kept: list[int] = []
    keep = DecoderScorer.keep
    monkeypatch.setattr(
        DecoderScorer, "keep", lambda self, s, rows: kept.append(len(rows)) or keep(self, s, rows)
    )
    dropping = search(dec, memory, lens, cfg, ctc=ctc, lm=lm, engine=engine)
    assert kept and min(kept) < 5 * 3  # the decoder's and the LM's states did shrink
    whole = search(dec, memory, lens, cfg, ctc=ctc, lm=lm, engine=engine, shrink=False)
    for a, b in zip(dropping, whole, strict=True):
        assert_same(a, b)
