"""Batched beam search over B utterances x K hypotheses, scored by a weighted set of scorers
(s2s.decode.scorers: the decoder, CTC prefix scores, a language model) behind one interface.

Per step: every full scorer scores every token (the decoder, the LM: (N, V) log-probs); with a
partial scorer in the set (CTC), each row keeps its pre_beam best tokens by the full scorers
and the partial scorers score only those; the weighted sum ranks the extensions. Per
utterance, the best 2K of its extensions: those ending in EOS among the first K are finished
(fairseq's rule), the best K others continue, and every scorer's state follows its parents by
index (the caches through ancestry indices, no copies). An utterance is done once it has K
finished hypotheses or reaches its maximum length, where EOS is forced. Once a quarter of the
utterances still searched are done, they leave the search: every scorer keeps only the others'
rows (`keep`), unless one has fixed shapes (a compiled step's graphs).
Scores: sum of log-probs; ranking uses score / length ** length_penalty (length counts EOS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.attention.ops import use_kernels
from s2s.decode.scorers import SearchInit, Weighted
from s2s.experiment.decode_config import BeamSearchConfig  # defined below the schema

ENGINES = ("lean", "naive")


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS/EOS
    score: float  # normalised: log-prob sum / length ** length_penalty
    log_prob: float  # log-prob sum, EOS included (the joint score with CTC)


def max_lengths(memory_lens: Tensor, cfg: BeamSearchConfig) -> Tensor:
    """(B,) maximum number of output tokens (EOS excluded) per utterance."""
    return (memory_lens.double() * cfg.max_len_a + cfg.max_len_b).long().clamp(min=1)


def _pre_beam(full: list[tuple[Tensor, float]]) -> Tensor:
    """(N, V) pre-beam scores from the full scorers' (scores, weight): their weighted sum
    scaled so that the first non-zero weight is 1 (the same ranking, and the decoder's
    log-probs as they are when it leads); when every weight is 0 (CTC alone), the first full
    scorer's (the decoder's), so that a weight-0 LM changes nothing here either."""
    ref = next((w for _, w in full if w != 0), None)
    if ref is None:
        return full[0][0]
    return _weighted_sum([(s, w / ref) for s, w in full])


def _weighted_sum(terms: list[tuple[Tensor, float]]) -> Tensor:
    """The sum of weight * scores over the terms (in order) whose weight is not 0."""
    out = None
    for s, w in terms:
        if w == 0:
            continue
        term = s if w == 1 else w * s
        out = term if out is None else out + term
    return torch.zeros_like(terms[0][0]) if out is None else out


@torch.inference_mode()
def beam_search(
    scorers: Mapping[str, Weighted],
    memory: Tensor,
    memory_lens: Tensor,
    cfg: BeamSearchConfig,
    *,
    bos_id: int,
    eos_id: int,
    engine: str = "lean",
    blank_id: int = 0,
    stats: dict | None = None,
    shrink: bool = True,
) -> list[list[Hypothesis]]:
    """Decode B utterances. scorers: name -> Weighted(scorer, weight), at least one full
    scorer (s2s.decode.scorer_set.search_scorers builds the set a config asks for); a token's
    score is the weighted sum of the scorers' scores. memory: (B, S, d_enc), memory_lens:
    (B,). engine: "lean" (the frames' cache once per utterance, own parts allocated once,
    ancestry reordering) or "naive" (every hypothesis holds the whole cache, reordering copies
    it: fairseq's way; a baseline for benchmarks and tests). blank_id (padding, the CTC blank)
    and bos_id are never emitted. stats: filled with "peak_cache_bytes", the most bytes the
    scorers' self-attention caches (the decoder's and the LM's) allocated at once. shrink:
    once a quarter of the utterances in the search are done, the others go on alone (every
    scorer's `keep`; not with a scorer of fixed shapes, a compiled step's). Returns per
    utterance its `nbest` hypotheses."""
    if engine not in ENGINES:
        raise ValueError(f"beam search engine {engine!r} not in {ENGINES}")
    if not any(not w.scorer.partial for w in scorers.values()):
        raise ValueError("beam search needs a full scorer (the decoder) among its scorers")
    B, K = memory.shape[0], cfg.beam_size
    N = B * K
    device = memory.device
    limit = max_lengths(memory_lens, cfg)  # (B,)
    steps = int(limit.max()) + 1  # tokens fed: BOS + up to limit
    search = SearchInit(memory, memory_lens, K, steps, engine == "lean")
    items = list(scorers.values())
    states = [w.scorer.init_state(search) for w in items]
    full = [i for i, w in enumerate(items) if not w.scorer.partial]
    partial = [i for i, w in enumerate(items) if w.scorer.partial]

    tokens = torch.full((N,), bos_id, dtype=torch.long, device=device)
    history = torch.zeros((N, steps), dtype=torch.long, device=device)
    scores = torch.zeros(B, K, dtype=torch.float64, device=device)
    scores[:, 1:] = float("-inf")  # all beams start equal: expand only the first at t = 0
    # Finished hypotheses, at most K per utterance, in the order found; slot K takes the
    # extensions that do not count (past K, or of a done utterance) and is never read.
    fin_tokens = torch.zeros((B, K + 1, steps), dtype=torch.long, device=device)
    fin_log_prob = torch.zeros((B, K + 1), dtype=torch.float64, device=device)
    fin_len = torch.zeros((B, K + 1), dtype=torch.long, device=device)
    n_fin = torch.zeros(B, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    group_base = torch.arange(B, device=device)[:, None] * K
    row_limit = limit.repeat_interleave(K)[:, None]  # (N, 1)
    first_limit = int(limit.min())  # before this step no row is at its limit
    shrink = shrink and not any(w.scorer.fixed_shapes for w in items)
    searched = torch.arange(B, device=device)  # (B,) each searched utterance's index in memory
    results: list[list[Hypothesis] | None] = [None] * B

    for t in range(steps):
        with use_kernels(cfg.kernels):
            full_scores = [(items[i].scorer.score(states[i], tokens, None), items[i].weight)
                           for i in full]  # fmt: skip
        if t == 0:  # the vocabulary's masks, (V,): blank (padding) and BOS are never emitted
            V = full_scores[0][0].shape[-1]
            vocab = torch.arange(V, device=device)
            is_eos_col, never = vocab == eos_id, (vocab == blank_id) | (vocab == bos_id)
            early = never | is_eos_col  # before min_len: EOS neither
            at_limit = ~is_eos_col  # at the limit: EOS only
        banned = early if t < cfg.min_len else never  # (V,)
        if t >= first_limit:  # a row at its limit: EOS only there
            banned = banned | ((t >= row_limit) & at_limit)  # (N, V)
        if not partial:
            logp = _weighted_sum(full_scores).masked_fill(banned, float("-inf"))
            cand_ids = None  # column c of a row's candidates is token c
        else:
            W = min(V, max(K, int(cfg.pre_beam_ratio * K)))
            pre = _pre_beam(full_scores).masked_fill(banned, float("-inf"))
            cand_ids = pre.topk(W, dim=-1).indices  # (N, W)
            per_scorer = dict(zip(full, (s.gather(1, cand_ids) for s, _ in full_scores)))
            for i in partial:
                per_scorer[i] = items[i].scorer.score(states[i], tokens, cand_ids)
            logp = _weighted_sum([(per_scorer[i], w.weight) for i, w in enumerate(items)])
            logp = logp.masked_fill(banned.expand(N, -1).gather(1, cand_ids), float("-inf"))
        C = logp.shape[-1]
        cand = (scores.view(N, 1) + logp).view(B, K * C)
        top_scores, top_idx = cand.topk(min(2 * K, K * C), dim=-1)  # (B, 2K), best first
        parent, col = top_idx // C, top_idx % C
        word = col if cand_ids is None else cand_ids.view(B, K * C).gather(1, top_idx)
        is_eos = (word == eos_id) & torch.isfinite(top_scores)

        # EOS among the first K finishes a hypothesis, while its utterance has fewer than K.
        ends = is_eos[:, :K] & ~done[:, None]  # (B, K)
        slot = n_fin[:, None] + ends.long().cumsum(1) - 1
        slot = torch.where(ends & (slot < K), slot, K)
        fin_tokens[:, :, :t].scatter_(
            1, slot[..., None].expand(-1, -1, t), history[group_base + parent[:, :K], :t]
        )
        fin_log_prob.scatter_(1, slot, top_scores[:, :K])
        fin_len.scatter_(1, slot, torch.full_like(slot, t))
        n_fin += (slot < K).sum(1)

        # The best K non-EOS extensions continue (EOS ones sort last, order kept otherwise).
        rank = torch.arange(top_idx.shape[1], device=device)[None, :].expand_as(top_idx)
        order = (is_eos.long() * top_idx.shape[1] + rank).argsort(dim=-1)[:, :K]
        keep_parent, keep_word = parent.gather(1, order), word.gather(1, order)
        keep_col = col.gather(1, order)
        scores = top_scores.gather(1, order)
        # only when fewer than K non-EOS extensions exist
        scores = scores.masked_fill(is_eos.gather(1, order), float("-inf"))
        done |= (n_fin >= K) | (t >= limit)
        n_done = int(done.sum())  # the step's one read from the device
        if n_done == B:
            break
        rows = (group_base + keep_parent).view(N)
        tokens = keep_word.view(N)
        for w, state in zip(items, states):
            w.scorer.select(state, rows, keep_col.view(N), tokens)
        history[:, :t] = history[rows, :t]
        history[:, t] = tokens

        if shrink and n_done and 4 * n_done >= B:
            # Drop the finished utterances: whole K-row blocks, in order, so every kept row's
            # scores and state are exactly what they were (the same rows, renumbered).
            for i, hyps in zip(searched[done].tolist(), _finished(
                fin_tokens[done], fin_log_prob[done], fin_len[done], n_fin[done], cfg
            )):  # fmt: skip
                results[i] = hyps
            go = (~done).nonzero()[:, 0]  # (B',)
            keep = (go[:, None] * K + torch.arange(K, device=device)).view(-1)  # (B' * K,)
            states = [w.scorer.keep(state, keep) for w, state in zip(items, states)]
            searched, limit, scores = searched[go], limit[go], scores[go]
            fin_tokens, fin_log_prob = fin_tokens[go], fin_log_prob[go]
            fin_len, n_fin, done = fin_len[go], n_fin[go], done[go]
            tokens, history, row_limit = tokens[keep], history[keep], row_limit[keep]
            B, N = go.shape[0], go.shape[0] * K
            first_limit = int(limit.min())
            group_base = torch.arange(B, device=device)[:, None] * K

    if stats is not None:  # the LM's caches live as long as the decoder's: peaks add up
        stats["peak_cache_bytes"] = sum(
            w.scorer.peak_cache_bytes(state) for w, state in zip(items, states)
        )
    for i, hyps in zip(searched.tolist(), _finished(fin_tokens, fin_log_prob, fin_len, n_fin, cfg)):
        results[i] = hyps
    return results  # type: ignore[return-value]


def _finished(
    tokens: Tensor, log_prob: Tensor, length: Tensor, n: Tensor, cfg: BeamSearchConfig
) -> list[list[Hypothesis]]:
    """The finished buffers as n-best lists, best first (ties in the order found)."""
    out = []
    for toks, lps, lens, count in zip(
        tokens.tolist(), log_prob.tolist(), length.tolist(), n.tolist()
    ):
        hyps = [
            Hypothesis(toks[j][: lens[j]], lps[j] / (lens[j] + 1) ** cfg.length_penalty, lps[j])
            for j in range(count)
        ]
        out.append(sorted(hyps, key=lambda h: -h.score)[: cfg.nbest])
    return out
