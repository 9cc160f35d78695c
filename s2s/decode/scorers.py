"""The scorers of beam search behind one interface, with weights (ESPnet's beam-search core:
init state, score, select state; a partial scorer for CTC prefix scores).

A search over U utterances x K beams has N = U * K rows, one utterance's rows adjacent. Per
step (s2s.decode.beam_search):

1. every full scorer scores every token: `score(state, tokens, None)` -> (N, V);
2. with a partial scorer in the set, the search keeps each row's W best tokens by the full
   scorers (the pre-beam) and every partial scorer scores only those:
   `score(state, tokens, cand)` with cand (N, W) -> (N, W);
3. the weighted sum of the scores ranks the extensions, and every scorer's `select` moves its
   state to the chosen ones: hypothesis i continues row rows[i] with token tokens[i], which
   was column cols[i] of that row's candidates (cols == tokens without a partial scorer).

Scores are float64 log-probabilities. A scorer's state is allocated once per search, in
`init_state`, for the longest output the search allows (`SearchInit.max_len`); `score` and
`select` update it in place (`select` by index operations, never per hypothesis in Python),
so a compiled step can run over the same buffers every step. When utterances finish, the
search keeps only the others' rows (`keep`), except with a scorer whose shapes must stay put.

EOS is scored like any other token (the decoder and the LM: p(EOS | y); CTC: P(the output is
exactly y)), and the search forces it at the length limit, so every finished hypothesis has
had its end scored by every scorer: there is no separate final score.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor


@dataclass(frozen=True)
class SearchInit:
    """What a scorer's state is built from. memory: (U, S, d) encoder output, memory_lens
    (U,); beam: K; max_len: the most tokens any row is fed (BOS + the longest output); lean:
    the lean engine (ancestry reordering, the frames' slots once per utterance, caches sized
    once for max_len) rather than the naive one (docs/engine.md)."""

    memory: Tensor
    memory_lens: Tensor
    beam: int
    max_len: int
    lean: bool = True

    @property
    def rows(self) -> int:
        return self.memory.shape[0] * self.beam


@runtime_checkable
class Scorer(Protocol):
    """One term of the search's score. partial: False scores every token (N, V); True scores
    only the pre-beam's candidates (N, W)."""

    partial: bool

    def init_state(self, search: SearchInit) -> Any:
        """The state of N = search.rows hypotheses, each holding just BOS."""
        ...

    def score(self, state: Any, tokens: Tensor, cand: Tensor | None) -> Tensor:
        """tokens: (N,) each row's latest token (BOS at the first step); cand: None (a full
        scorer) or (N, W) candidate tokens (a partial one). Returns float64 (N, V) or (N, W)
        log-scores of extending each row by each token."""
        ...

    def select(self, state: Any, rows: Tensor, cols: Tensor, tokens: Tensor) -> None:
        """Hypothesis i continues row rows[i] (within its utterance's rows) with tokens[i],
        column cols[i] of that row's candidates. rows, cols, tokens: (N,); in place."""
        ...

    def peak_cache_bytes(self, state: Any) -> int:
        """The most bytes its self-attention caches held at once (0 without caches)."""
        ...

    #: True when the state's shapes must stay put for the whole search (a compiled step's
    #: graphs are specialised to them): the search then never calls `keep`
    fixed_shapes: bool

    def keep(self, state: Any, rows: Tensor) -> Any:
        """Only rows `rows` (N',) continue: whole utterances, in order (the search drops the
        utterances it has finished, so that a step computes only what is still searched).
        Returns the state over those rows (the old one may be reused in place)."""
        ...


class Weighted(NamedTuple):
    scorer: Scorer
    weight: float


class OnEncoding:
    """A scorer reading another encoding than the search's: one view's, in an ensemble of
    decode.encoder_views (s2s.decode.scorer_set.view_ensemble). memory: (U, S', d),
    memory_lens (U,), the search's utterances in the search's order; S' may differ from the
    search's S (a view started k frames in has up to one frame fewer)."""

    def __init__(self, scorer: Scorer, memory: Tensor, memory_lens: Tensor) -> None:
        self.scorer, self.memory, self.memory_lens = scorer, memory, memory_lens
        self.partial, self.fixed_shapes = scorer.partial, scorer.fixed_shapes

    def init_state(self, search: SearchInit) -> Any:
        return self.scorer.init_state(
            replace(search, memory=self.memory, memory_lens=self.memory_lens)
        )

    def score(self, state: Any, tokens: Tensor, cand: Tensor | None) -> Tensor:
        return self.scorer.score(state, tokens, cand)

    def select(self, state: Any, rows: Tensor, cols: Tensor, tokens: Tensor) -> None:
        self.scorer.select(state, rows, cols, tokens)

    def peak_cache_bytes(self, state: Any) -> int:
        return self.scorer.peak_cache_bytes(state)

    def keep(self, state: Any, rows: Tensor) -> Any:
        return self.scorer.keep(state, rows)


class DecoderScorer:
    """The attention decoder as a full scorer: anything with Decoder's `init_state(memory,
    memory_lens, beam, ancestry, *, max_len, share_prefix)` and `step(tokens, state)` ->
    (N, V) logits, and a state that reorders its caches (s2s.models.decoder.Decoder and the
    ONNX bundle's s2s.export.runtime.OnnxDecoder)."""

    partial = False
    fixed_shapes = False

    def __init__(self, model) -> None:
        self.model = model

    def init_state(self, search: SearchInit):
        lean = search.lean
        return self.model.init_state(
            search.memory,
            search.memory_lens,
            beam=search.beam,
            ancestry=lean,
            max_len=search.max_len if lean else None,
            share_prefix=lean,
        )

    def score(self, state, tokens: Tensor, cand: Tensor | None = None) -> Tensor:
        return self.model.step(tokens, state).double().log_softmax(-1)

    def select(self, state, rows: Tensor, cols: Tensor, tokens: Tensor) -> None:
        state.reorder(rows)

    def peak_cache_bytes(self, state) -> int:
        return state.peak_cache_bytes()

    def keep(self, state, rows: Tensor):
        state.keep_rows(rows)
        return state


class LMScorer(DecoderScorer):
    """A target-side language model (s2s.models.lm.TransformerLM) as a full scorer: its own
    caches, created in the search's mode and reordered with the decoder's."""

    def init_state(self, search: SearchInit):
        lean = search.lean
        return self.model.init_state(
            search.rows, ancestry=lean, max_len=search.max_len if lean else None
        )
