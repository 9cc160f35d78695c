"""CTC prefix scoring: the vectorised scorer against brute force over every alignment, and
joint CTC/attention beam search against a plain reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import BOS, V, make_decoder, search

from s2s.decode.beam_search import BeamSearchConfig, max_lengths
from s2s.decode.ctc_prefix import NEG, CTCPrefixScorer
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


def frame_by_frame(x: torch.Tensor, end: torch.Tensor, r_prev, last, cand) -> tuple:
    """The scorer's step as the textbook recursion, one frame at a time with six operations
    each (ESPnet's CTCPrefixScoreTH; the scorer before it updated both forward variables in
    one operation): x (T, N, V) log-posteriors with padded frames' labels at log 0 (NEG) and
    blank at log 1, end (N,) last real frames, r_prev (T, 2, N), last (N,), cand (N, W).
    Returns (log psi (N, W), r (T, 2, N, W))."""
    T, N, _ = x.shape
    W = cand.shape[1]
    xc = x.gather(2, cand[None].expand(T, -1, -1))  # (T, N, W)
    xb = x[:, :, BLANK][:, :, None]
    total = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # (T, N)
    same = (cand == last[:, None])[None]
    phi = torch.where(same, r_prev[:, 1, :, None], total[:, :, None])  # (T, N, W)
    r = torch.full((T, 2, N, W), NEG, dtype=x.dtype)
    r[0, 0] = torch.where((last < 0)[:, None], xc[0], torch.full_like(xc[0], NEG))
    log_psi = r[0, 0].clone()
    for t in range(1, T):
        r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + xc[t]
        r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + xb[t]
        log_psi = torch.logaddexp(log_psi, phi[t - 1] + xc[t])
    end_total = total.gather(0, end[None])[0]
    log_psi = torch.where(cand == EOS, end_total[:, None], log_psi)
    return log_psi.masked_fill(cand == BLANK, NEG), r


@pytest.mark.parametrize(("T", "beam"), [(1, 3), (9, 4), (300, 3), (37, 5)])
def test_scorer_equals_the_frame_by_frame_recursion(T: int, beam: int) -> None:
    """Padded utterances (one a frame long), candidates that repeat the last label, EOS and
    blank among them, prefixes that become impossible, several steps with random parents: the
    same forward variables as the recursion, bit for bit (float32, as before), and the same log
    psi up to float32 rounding (one logsumexp over time where the recursion adds frame by
    frame); log 0 stays below -1e29."""
    g = torch.Generator().manual_seed(T)
    U, V = 3, 9
    logp = torch.randn(U, T, V, generator=g).mul(3).log_softmax(-1)
    logp[1, :, 5] = -90.0  # a label this utterance all but never emits
    lengths = torch.tensor([T, max(1, T // 2), max(1, T - 3)])
    scorer = CTCPrefixScorer(lambda memory: logp, BLANK, EOS)
    state = scorer.init_state(SearchInit(torch.zeros(U, T, 1), lengths, beam, max_len=6))
    N = U * beam
    pad = torch.arange(T)[None, :] >= lengths[:, None]
    x = logp.masked_fill(pad[..., None], NEG)
    x[..., BLANK] = x[..., BLANK].masked_fill(pad, 0.0)
    x = x.repeat_interleave(beam, 0).transpose(0, 1)  # (T, N, V)
    end = (lengths - 1).repeat_interleave(beam)
    r, log_psi, last = state.r.clone(), state.log_psi.clone(), state.last.clone()
    ptrs = [state.r.data_ptr(), state.log_psi.data_ptr(), state.last.data_ptr()]
    for _ in range(6):
        assert torch.equal(state.r, r) and torch.equal(state.log_psi, log_psi)
        cand = torch.randint(1, V, (N, 5), generator=g)
        cand[:, 4] = torch.randint(4, V, (N,), generator=g)  # neither EOS nor blank
        cand[:, 0] = torch.where(last >= 0, last, 4)  # a repeated label
        cand[::2, 1] = 5
        cand[1, 2], cand[2, 3] = EOS, BLANK
        delta = scorer.score(state, None, cand)
        ptrs.append(state.buf.data_ptr())  # the candidates' buffer: allocated at the first step
        want_psi, want_r = frame_by_frame(x, end, r, last, cand)
        assert delta.dtype == torch.float64
        got_psi = delta + log_psi[:, None].double()
        possible = want_psi > -1e29
        assert torch.equal(possible, got_psi > -1e29)
        assert torch.allclose(got_psi[possible], want_psi.double()[possible], rtol=1e-6, atol=1e-5)
        assert torch.equal(state.buf[:, ::2], want_r)  # every frame's (r^n, r^b), bit for bit
        # the search continues a hypothesis with neither EOS nor blank
        rows = torch.arange(N).view(U, beam)[:, torch.randint(0, beam, (beam,), generator=g)]
        rows = rows.reshape(N)
        cols = torch.randint(0, 5, (N,), generator=g)
        cols = torch.where((cand[rows, cols] == EOS) | (cand[rows, cols] == BLANK), 4, cols)
        tokens = cand[rows, cols]
        scorer.select(state, rows, cols, tokens)
        r, log_psi = want_r[:, :, rows, cols], state.log_psi.clone()
        last = tokens
    assert [state.r.data_ptr(), state.log_psi.data_ptr(), state.last.data_ptr()] == ptrs[:3]
    assert len(set(ptrs[3:])) == 1
    if T == 1:  # a frame holds one label: every prefix became impossible on the way
        assert bool((state.log_psi < -1e29).all())


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
