"""CTC prefix scoring: the vectorised scorer against brute force over every alignment, and
joint CTC/attention beam search against a plain reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import BOS, V, make_decoder, search

from s2s.decode.beam_search import BeamSearchConfig, max_lengths
from s2s.decode.ctc_prefix import CTCPrefixScorer
from s2s.decode.scorers import SearchInit

BLANK, EOS = 0, 3


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out, prev = [], None
    for p in path:
        if p != prev and p != BLANK:
            out.append(p)
        prev = p
    return tuple(out)


def brute_force(logp: torch.Tensor, prefix: tuple[int, ...], exact: bool) -> float:
    """log P(CTC output starts with / equals prefix), summing over all V^T alignments."""
    T, V = logp.shape
    total = 0.0
    for path in itertools.product(range(V), repeat=T):
        out = collapse(path)
        if (out == prefix) if exact else (out[: len(prefix)] == prefix):
            total += math.exp(sum(logp[t, p].item() for t, p in enumerate(path)))
    return math.log(total) if total > 0 else -math.inf


def lae(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) in float64."""
    if a == -math.inf:
        return b
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def prefix_log_prob(logp: torch.Tensor, prefix: list[int], exact: bool) -> float:
    """From-scratch textbook recursion (float64, no state carried between prefixes)."""
    T = logp.shape[0]
    lp = logp.double()
    ninf = -math.inf
    rn = [ninf] * T
    rb = [sum(lp[: t + 1, BLANK].tolist()) for t in range(T)]
    psi = 0.0
    last = None
    for c in prefix:
        phi = [rb[t] if c == last else lae(rn[t], rb[t]) for t in range(T)]
        new_n = [lp[0, c].item() if last is None else ninf] + [ninf] * (T - 1)
        new_b = [ninf] * T
        psi = new_n[0]
        for t in range(1, T):
            new_n[t] = lae(new_n[t - 1], phi[t - 1]) + lp[t, c].item()
            new_b[t] = lae(new_n[t - 1], new_b[t - 1]) + lp[t, BLANK].item()
            psi = lae(psi, phi[t - 1] + lp[t, c].item())
        rn, rb, last = new_n, new_b, c
    if exact:
        return lae(rn[-1], rb[-1])
    return psi


def test_textbook_recursion_matches_alignment_enumeration() -> None:
    torch.manual_seed(0)
    logp = torch.randn(5, 4, dtype=torch.float64).log_softmax(-1)  # sums to 1 exactly enough
    for prefix in [(1,), (2,), (1, 1), (1, 2), (2, 1, 2), (1, 1, 2)]:
        assert prefix_log_prob(logp, list(prefix), False) == pytest.approx(
            brute_force(logp, prefix, False), abs=1e-9
        )
        assert prefix_log_prob(logp, list(prefix), True) == pytest.approx(
            brute_force(logp, prefix, True), abs=1e-9
        )


def test_scorer_matches_enumeration_with_padding() -> None:
    """Two utterances of different lengths (padded), extended token by token."""
    torch.manual_seed(1)
    V = 5
    logp = torch.randn(2, 6, V, dtype=torch.float64).log_softmax(-1)
    lengths = torch.tensor([6, 4])
    scorer = CTCPrefixScorer(lambda memory: logp, BLANK, EOS)
    state = scorer.init_state(SearchInit(torch.zeros(2, 6, 1), lengths, beam=1, max_len=5))
    prefixes = [[1, 2, 2, 4], [4, 4, 1, 2]]
    for step in range(4):
        cand = torch.tensor([[1, 2, 4, EOS], [1, 2, 4, EOS]])
        delta = scorer.score(state, None, cand)
        for b in range(2):
            T = int(lengths[b])
            for j, c in enumerate(cand[b].tolist()):
                g = prefixes[b][:step]
                want = (
                    brute_force(logp[b, :T], tuple(g), True)
                    if c == EOS
                    else brute_force(logp[b, :T], tuple(g + [c]), False)
                )
                got = (state.log_psi[b] + delta[b, j]).item()
                if want == -math.inf:  # impossible prefix: the scorer's finite log 0
                    assert got < -1e29, (b, step, c)
                else:
                    assert got == pytest.approx(want, abs=1e-4), (b, step, c)
        cols = torch.tensor([cand[b].tolist().index(prefixes[b][step]) for b in range(2)])
        rows = torch.arange(2)
        scorer.select(state, rows, cols, cand[rows, cols])


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
def test_joint_beam_search_matches_reference(arrangement: str) -> None:
    dec = make_decoder(arrangement, "mtla", 2, seed=3)
    torch.manual_seed(4)
    memory, memory_lens = torch.randn(2, 7, 24), torch.tensor([7, 5])
    ctc_logp = torch.randn(2, 7, V).mul(2).log_softmax(-1)
    cfg = BeamSearchConfig(beam_size=3, nbest=3, max_len_b=4, ctc_weight=0.4, pre_beam_ratio=2.0)
    got = search(dec, memory, memory_lens, cfg, ctc=ctc_logp)

    for b in range(2):
        m = int(memory_lens[b])
        mem, lens, x = memory[b : b + 1, :m], memory_lens[b : b + 1], ctc_logp[b, :m]
        K, W = 3, 6
        limit = int(max_lengths(lens, cfg)[0])
        beams, finished = [([], 0.0)], []
        for t in range(limit + 1):
            inp = torch.tensor([[BOS] + toks for toks, _ in beams])
            n = len(beams)
            att = dec(inp, torch.full((n,), t + 1), mem.expand(n, -1, -1), lens.expand(n))[:, -1]
            att = att.double().log_softmax(-1)
            att[:, [BLANK, BOS]] = -math.inf
            if t >= limit:
                keep = att[:, EOS].clone()
                att[:] = -math.inf
                att[:, EOS] = keep
            cands = []
            for i, (toks, score) in enumerate(beams):
                base = prefix_log_prob(x, toks, False) if toks else 0.0
                vals, ids = att[i].topk(W)
                for a, c in zip(vals.tolist(), ids.tolist()):
                    if a == -math.inf:
                        continue
                    ctc = (
                        prefix_log_prob(x, toks, True)
                        if c == EOS
                        else prefix_log_prob(x, toks + [c], False)
                    )
                    cands.append((score + 0.6 * a + 0.4 * (ctc - base), i, c))
            cands = sorted(cands, key=lambda c: -c[0])[: 2 * K]
            for rank, (s, i, c) in enumerate(cands):
                if c == EOS and rank < K and len(finished) < K:
                    finished.append((beams[i][0], s / (len(beams[i][0]) + 1)))
            if len(finished) >= K or t >= limit:
                break
            beams = [(beams[i][0] + [c], s) for s, i, c in cands if c != EOS][:K]
        want = sorted(finished, key=lambda h: -h[1])[:3]
        assert [h.tokens for h in got[b]] == [w[0] for w in want]
        for h, w in zip(got[b], want):
            assert h.score == pytest.approx(w[1], abs=1e-3)
