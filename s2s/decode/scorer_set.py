"""The weighted set of scorers a search's settings (BeamSearchConfig) ask for, compiled when
they say so: the one place that turns decode.* settings into beam_search's scorers."""

from __future__ import annotations

from torch import Tensor

from s2s.decode.compiled import compile_scorers
from s2s.decode.scorers import OnEncoding, Scorer, Weighted
from s2s.experiment.decode_config import BeamSearchConfig


def search_scorers(
    cfg: BeamSearchConfig, decoder: Scorer, *, ctc: Scorer | None = None, lm: Scorer | None = None
) -> dict[str, Weighted]:
    """The weighted set a BeamSearchConfig asks for: the decoder with 1 - ctc_weight, the CTC
    prefix scorer with ctc_weight (when > 0) and the LM with lm_weight (when given: with weight
    0 it still runs, and its caches count). With cfg.compile, the decoder's and the LM's steps
    compiled (s2s.decode.compiled; a decoder that is no PyTorch module stays as it is)."""
    out = {"decoder": Weighted(decoder, 1 - cfg.ctc_weight)}
    if cfg.ctc_weight > 0:
        if ctc is None:
            raise ValueError("ctc_weight > 0 needs a CTC prefix scorer (a model trained with CTC)")
        out["ctc"] = Weighted(ctc, cfg.ctc_weight)
    if lm is not None:
        out["lm"] = Weighted(lm, cfg.lm_weight)
    elif cfg.lm_weight > 0:
        raise ValueError(f"lm_weight={cfg.lm_weight} needs a language model (decode.lm)")
    if cfg.compile:
        mode = None if cfg.compile_mode == "default" else cfg.compile_mode
        return compile_scorers(out, cfg.compile_buckets, mode=mode, gemm=cfg.compile_gemm)
    return out


def view_ensemble(
    scorers: dict[str, Weighted],
    encodings: list[tuple[Tensor, Tensor]],
    shared: tuple[str, ...] = ("lm",),
) -> dict[str, Weighted]:
    """decode.views_merge="scores": every scorer that reads the encoding once per view,
    "name@j" reading view j's (memory (U, S_j, d), memory_lens (U,)) at 1/N of its weight,
    so a token's score is the mean over the N views of what the set gives it on each (as
    ESPnet weighs the decoders of an ensemble). The scorers named in `shared` read no encoding
    (the LM) and stay once, at their weight. A scorer's object serves every view: its states
    are per view (init_state)."""
    n = len(encodings)
    out = {
        f"{name}@{j}": Weighted(OnEncoding(w.scorer, memory, lens), w.weight / n)
        for j, (memory, lens) in enumerate(encodings)
        for name, w in scorers.items()
        if name not in shared
    }
    return out | {name: w for name, w in scorers.items() if name in shared}
