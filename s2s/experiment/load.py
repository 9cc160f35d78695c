"""Loading a trained experiment's parts: its tokenizer, CMVN, model and weights, and the
language model its decode section names."""

from __future__ import annotations

from pathlib import Path

import torch

from s2s.data.features import GlobalCMVN
from s2s.data.tokenizer import Tokenizer
from s2s.experiment.checkpoints import AVERAGED, read_state_dict, weights_candidates
from s2s.experiment.config import ExperimentConfig, LMExperimentConfig, load_experiment_config
from s2s.models.lm import TransformerLM
from s2s.models.seq2seq import Seq2SeqModel


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def load_cmvn(path: str) -> GlobalCMVN | None:
    """A GlobalCMVN from its stats file, or None for per-utterance CMVN."""
    return GlobalCMVN.from_file(path) if path else None


def build_model(cfg: ExperimentConfig, vocab_size: int) -> Seq2SeqModel:
    return Seq2SeqModel(cfg.model, vocab_size)


def load_model_weights(model: torch.nn.Module, exp_dir: str | Path, checkpoint: str = "") -> Path:
    """Load `checkpoint` (a path), else exp_dir/model_avg.pt, else the latest checkpoint.

    model_avg.pt (what averaging and s2s-pack write: tensors only) is read weights-only;
    trainer checkpoints, which also hold RNG and optimiser state, are unpickled in full, so
    only load those from training runs you trust (s2s-pack never ships them)."""
    exp_dir = Path(exp_dir)
    candidates = [Path(checkpoint)] if checkpoint else weights_candidates(exp_dir)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"no model weights in {exp_dir} (looked for {[str(c) for c in candidates]})"
        )
    model.load_state_dict(read_state_dict(path, weights_only=path == exp_dir / AVERAGED))
    return path


def load_lm(lm_dir: str | Path, tokenizer_path: str | Path) -> TransformerLM:
    """The language model of experiment lm_dir (model_avg.pt, else its latest checkpoint) for
    decoding a model whose tokenizer is tokenizer_path. ValueError when the two tokenizers
    differ: the LM would score other tokens than the decoder emits."""
    lm_dir = Path(lm_dir)
    if not (lm_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"decode.lm: {lm_dir}/config.yaml not found: not an LM experiment")
    cfg = load_experiment_config([lm_dir / "config.yaml"], schema=LMExperimentConfig)
    mine, theirs = Path(tokenizer_path), Path(cfg.data.tokenizer)
    if mine.read_bytes() != theirs.read_bytes():
        raise ValueError(
            f"decode.lm: {lm_dir} was trained with the tokenizer {theirs}, which differs from "
            f"the model's {mine}: an LM must share the model's target vocabulary"
        )
    lm = TransformerLM(cfg.lm, load_tokenizer(theirs).vocab_size)
    load_model_weights(lm, lm_dir)
    return lm.eval()
