"""Batched beam search over B utterances x K hypotheses, through the decoder's step and its
(compressed, append-only) caches.

Per step: decoder step -> log-probs -> per utterance, the best 2K of the K*V extensions; those
ending in EOS among the first K are finished (fairseq's rule), the best K others continue, and
the caches follow their parents through ancestry indices (no cache copies). An utterance is done
once it has K finished hypotheses or reaches its maximum length, where EOS is forced.
Scores: sum of log-probs; ranking uses score / length ** length_penalty (length counts EOS).
With CTC (ctc_weight > 0) each step scores only the pre_beam best tokens of the attention
decoder, by (1 - ctc_weight) * attention + ctc_weight * CTC prefix score (s2s.decode.ctc_prefix).
With a language model (shallow fusion, s2s.models.lm) lm_weight * its log-prob is added to every
token's score (before the CTC pre-beam, as ESPnet's full scorers); its caches follow the
hypotheses through the same ancestry reordering as the decoder's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.attention.ops import use_kernels
from s2s.models.decoder import Decoder
from s2s.models.lm import TransformerLM

ENGINES = ("lean", "naive")


@dataclass
class BeamSearchConfig:
    """beam_size: K (1 = greedy). nbest: hypotheses returned per utterance (<= K).
    Maximum output length per utterance: int(max_len_a * S + max_len_b), S = encoder frames
    after subsampling (fairseq's a/b); min_len: EOS is not allowed before this many tokens.
    length_penalty: exponent of the length normalisation (0 = raw log-prob sums).
    lm: a language-model experiment dir (s2s-train --lm) fused with weight lm_weight.
    kernels: decode steps on CUDA run the Triton kernels (False: the PyTorch path, to compare;
    s2s-decode --no-kernels)."""

    beam_size: int = 4
    nbest: int = 1
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 0
    length_penalty: float = 1.0
    ctc_weight: float = 0.0
    pre_beam_ratio: float = 1.5
    lm: str = ""
    lm_weight: float = 0.0
    kernels: bool = True

    def __post_init__(self) -> None:
        if self.lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if self.beam_size < 1 or not 1 <= self.nbest <= self.beam_size:
            raise ValueError(f"need beam_size >= 1 and 1 <= nbest <= beam_size, got {self}")
        if self.max_len_a < 0 or self.max_len_b < 0 or self.min_len < 0:
            raise ValueError("max_len_a, max_len_b and min_len must be >= 0")


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS/EOS
    score: float  # normalised: log-prob sum / length ** length_penalty
    log_prob: float  # log-prob sum, EOS included (the joint score with CTC)


def max_lengths(memory_lens: Tensor, cfg: BeamSearchConfig) -> Tensor:
    """(B,) maximum number of output tokens (EOS excluded) per utterance."""
    return (memory_lens.double() * cfg.max_len_a + cfg.max_len_b).long().clamp(min=1)


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    memory: Tensor,
    memory_lens: Tensor,
    cfg: BeamSearchConfig,
    *,
    bos_id: int,
    eos_id: int,
    engine: str = "lean",
    ctc_log_probs: Tensor | None = None,
    blank_id: int = 0,
    lm: TransformerLM | None = None,
    stats: dict | None = None,
) -> list[list[Hypothesis]]:
    """Decode B utterances. memory: (B, S, d_enc), memory_lens: (B,); ctc_log_probs: (B, S, V)
    CTC log-posteriors over the same frames (used when cfg.ctc_weight > 0); lm: the language
    model fused with cfg.lm_weight (cfg.lm names it for the caller, which loads it). engine: "lean"
    (the frames' cache once per utterance, own parts allocated once, ancestry reordering) or
    "naive" (every hypothesis holds the whole cache, reordering copies it: fairseq's way; a
    baseline for benchmarks and tests). stats: filled with "peak_cache_bytes", the most bytes
    the self-attention caches (the decoder's and the LM's) allocated at once. Returns per
    utterance its `nbest` hypotheses."""
    if engine not in ENGINES:
        raise ValueError(f"beam search engine {engine!r} not in {ENGINES}")
    B, K = memory.shape[0], cfg.beam_size
    device = memory.device
    limit = max_lengths(memory_lens, cfg)  # (B,)
    lean = engine == "lean"
    state = decoder.init_state(
        memory,
        memory_lens,
        beam=K,
        ancestry=lean,
        max_len=int(limit.max()) + 1 if lean else None,  # tokens fed: BOS + up to limit
        share_prefix=lean,
    )
    N = B * K
    tokens = torch.full((N,), bos_id, dtype=torch.long, device=device)
    history = torch.empty((N, 0), dtype=torch.long, device=device)
    scores = torch.zeros(B, K, dtype=torch.float64, device=device)
    scores[:, 1:] = float("-inf")  # all beams start equal: expand only the first at t = 0
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    group_base = torch.arange(B, device=device)[:, None] * K
    ctc = ctc_state = None
    if cfg.ctc_weight > 0:
        if ctc_log_probs is None:
            raise ValueError("ctc_weight > 0 needs ctc_log_probs (a model trained with CTC)")
        from s2s.decode.ctc_prefix import CTCPrefixScorer

        ctc = CTCPrefixScorer(ctc_log_probs, memory_lens, blank_id, eos_id, K)
        ctc_state = ctc.initial_state()
    lm_state = None
    if lm is not None:
        lm_state = lm.init_state(N, ancestry=lean, max_len=int(limit.max()) + 1 if lean else None)
    elif cfg.lm_weight > 0:
        raise ValueError(f"lm_weight={cfg.lm_weight} needs a language model (decode.lm)")

    for t in range(int(limit.max()) + 1):
        with use_kernels(cfg.kernels):
            logp = decoder.step(tokens, state).double().log_softmax(-1)  # (N, V)
            lm_logp = (
                None if lm_state is None else lm.step(tokens, lm_state).double().log_softmax(-1)
            )
        V = logp.shape[-1]
        logp[:, [blank_id, bos_id]] = float("-inf")  # padding (= CTC blank) and BOS never emitted
        if t < cfg.min_len:
            logp[:, eos_id] = float("-inf")
        at_limit = (t >= limit).repeat_interleave(K)
        if at_limit.any():  # force EOS
            eos_col = logp[at_limit, eos_id].clone()
            logp[at_limit] = float("-inf")
            logp[at_limit, eos_id] = eos_col
        cand_ids = None  # column c of a row's candidates is token c
        if ctc is None:
            if lm_logp is not None:
                logp = logp + cfg.lm_weight * lm_logp
        else:
            W = min(V, max(K, int(cfg.pre_beam_ratio * K)))
            # Pre-beam by the full scorers, (1 - ctc_weight) * decoder + lm_weight * LM, in
            # the same order as decoder + lm_weight / (1 - ctc_weight) * LM.
            full = logp
            if lm_logp is not None:
                cw = cfg.ctc_weight
                if cw < 1:
                    full = logp + cfg.lm_weight / (1 - cw) * lm_logp
                else:  # the decoder has no say, but its masks (EOS forced, ...) still hold
                    full = lm_logp.masked_fill(torch.isinf(logp), float("-inf"))
            cand_ids = full.topk(W, dim=-1).indices  # (N, W)
            att = logp.gather(1, cand_ids)
            delta, r_new = ctc.score(ctc_state, cand_ids)
            logp = (1 - cfg.ctc_weight) * att + cfg.ctc_weight * delta.double()
            if lm_logp is not None:
                logp = logp + cfg.lm_weight * lm_logp.gather(1, cand_ids)
            logp = logp.masked_fill(torch.isinf(att), float("-inf"))
        C = logp.shape[-1]
        cand = (scores.view(N, 1) + logp).view(B, K * C)
        top_scores, top_idx = cand.topk(min(2 * K, K * C), dim=-1)  # (B, 2K), best first
        parent, col = top_idx // C, top_idx % C
        word = col
        if cand_ids is not None:
            word = cand_ids.view(B, K, C).gather(1, parent[..., None].expand(-1, -1, C))
            word = word.gather(2, col[..., None])[..., 0]
        is_eos = (word == eos_id) & torch.isfinite(top_scores)
        rank = torch.arange(top_idx.shape[1], device=device)[None, :].expand_as(top_idx)

        for b, j in (is_eos & (rank < K) & ~done[:, None]).nonzero().tolist():
            if len(finished[b]) < K:
                seq = history[b * K + parent[b, j]].tolist()
                lp = top_scores[b, j].item()
                finished[b].append(Hypothesis(seq, lp / (len(seq) + 1) ** cfg.length_penalty, lp))

        # The best K non-EOS extensions continue (EOS ones sort last, order kept otherwise).
        order = (is_eos.long() * top_idx.shape[1] + rank).argsort(dim=-1)[:, :K]
        keep_parent, keep_word = parent.gather(1, order), word.gather(1, order)
        keep_col = col.gather(1, order)
        scores = top_scores.gather(1, order)
        scores[is_eos.gather(1, order)] = float("-inf")  # only when fewer than K non-EOS exist
        done |= torch.tensor([len(f) >= K for f in finished], device=device) | (t >= limit)
        if bool(done.all()):
            break
        rows = (group_base + keep_parent).view(N)
        state.reorder(rows)
        if lm_state is not None:
            lm_state.reorder(rows)
        if ctc is not None:
            ctc_state = ctc.select(
                ctc_state, r_new, delta, rows, keep_col.view(N), keep_word.view(N)
            )
        history = torch.cat((history[rows], keep_word.view(N, 1)), dim=1)
        tokens = keep_word.view(N)

    if stats is not None:  # the LM's caches live as long as the decoder's: peaks add up
        lm_bytes = lm_state.peak_cache_bytes() if lm_state is not None else 0
        stats["peak_cache_bytes"] = state.peak_cache_bytes() + lm_bytes
    return [sorted(f, key=lambda h: -h.score)[: cfg.nbest] for f in finished]
