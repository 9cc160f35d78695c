"""Loading a trained experiment, one way for everyone: its config, tokenizer, CMVN, model and
weights, and the language model its decode section names.

    exp = load_experiment("exp/tiny_mtla_s2_prefix")   # model_avg.pt, else the latest checkpoint
    exp.model, exp.tokenizer, exp.cmvn, exp.cfg, exp.weights, exp.lm
    load_experiment(bundle, model=False)               # an ONNX bundle: no PyTorch weights

Speech2Text.from_dir and from_bundle, s2s-pack and s2s-export load through here. Every way a
folder fails to load (no config.yaml, an invalid one, a missing tokenizer or CMVN file, no
weights, weights that are not tensors or do not fit the model) is an ExperimentError, a
ValueError whose message names the folder; a missing file is an ExperimentNotFoundError,
also a FileNotFoundError.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.data.features import FbankConfig, GlobalCMVN
from s2s.data.tokenizer import Tokenizer
from s2s.experiment.checkpoints import AVERAGED, read_state_dict, weights_candidates
from s2s.experiment.config import (
    ExperimentConfig,
    ExperimentError,
    ExperimentNotFoundError,
    LMExperimentConfig,
    decoding_config,
    load_experiment_config,
    prepare_exp_dir,
    save_experiment_config,
)
from s2s.models.lm import TransformerLM
from s2s.models.seq2seq import Seq2SeqModel


@dataclass
class Experiment:
    """A trained experiment, loaded. model and weights are None when loaded with model=False
    (an ONNX bundle, whose graphs replace the model); lm is decode.lm's language model."""

    folder: Path
    cfg: ExperimentConfig
    tokenizer: Tokenizer
    cmvn: GlobalCMVN | None
    model: Seq2SeqModel | None = None
    weights: Path | None = None
    lm: TransformerLM | None = None

    @property
    def fbank(self) -> FbankConfig | None:
        """How features are computed from audio; None for a model that reads text."""
        return self.cfg.data.features if self.cfg.data.source == "speech" else None

    def copy_to(self, folder: str | Path) -> ExperimentConfig:
        """Write into `folder` what decoding reads besides the weights, as an experiment
        directory holds it: the tokenizer and CMVN copies and a config.yaml naming them
        relative to itself (prepare_exp_dir). Returns that config. A pack and an ONNX bundle
        start from this."""
        cfg = prepare_exp_dir(copy.deepcopy(self.cfg), folder)  # self.cfg keeps its paths
        save_experiment_config(cfg, Path(folder) / "config.yaml")
        return cfg


def _named(folder: Path, e: Exception) -> str:
    """e's message, naming `folder` where it does not already."""
    msg = str(e)
    return msg if str(folder) in msg else f"{folder}: {msg}"


def load_experiment(
    folder: str | Path,
    *,
    checkpoint: str = "",
    decode_config: str | Path | None = None,
    decode_overrides: Sequence[str] = (),
    model: bool = True,
    lm: bool = True,
) -> Experiment:
    """The experiment in `folder`: its config with the decode settings of decode_config and
    decode_overrides over it (s2s.experiment.decoding_config), its tokenizer and CMVN; with
    `model`, the model the config builds holding the weights of `checkpoint`, else
    model_avg.pt, else the latest checkpoint (load_model_weights), in eval mode; with `lm`,
    the language model decode.lm names (load_lm). Raises ExperimentError naming the folder."""
    folder = Path(folder)
    try:
        cfg = decoding_config(folder, decode_config, decode_overrides)
    except ExperimentError:
        raise
    except ValueError as e:
        raise ExperimentError(_named(folder, e)) from e
    if not cfg.data.tokenizer:
        raise ExperimentError(f"{folder}/config.yaml: data.tokenizer is not set")
    try:
        tokenizer = load_tokenizer(cfg.data.tokenizer)
        cmvn = load_cmvn(cfg.data.cmvn)
    except FileNotFoundError as e:
        raise ExperimentNotFoundError(_named(folder, e)) from e
    except (OSError, RuntimeError, ValueError) as e:  # a damaged tokenizer or CMVN file
        raise ExperimentError(_named(folder, e)) from e
    exp = Experiment(folder, cfg, tokenizer, cmvn)
    if model:
        exp.model = build_model(cfg, tokenizer.vocab_size)
        exp.weights = load_model_weights(exp.model, folder, checkpoint)
        exp.model.eval()
    if lm and cfg.decode.lm:
        exp.lm = load_lm(cfg.decode.lm, cfg.data.tokenizer)
    return exp


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def load_cmvn(path: str) -> GlobalCMVN | None:
    """A GlobalCMVN from its stats file, or None for per-utterance CMVN."""
    return GlobalCMVN.from_file(path) if path else None


def build_model(cfg: ExperimentConfig, vocab_size: int) -> Seq2SeqModel:
    return Seq2SeqModel(cfg.model, vocab_size)


def load_model_weights(model: torch.nn.Module, exp_dir: str | Path, checkpoint: str = "") -> Path:
    """Load `checkpoint` (a path), else exp_dir/model_avg.pt, else the latest checkpoint, into
    `model`; returns the file read.

    model_avg.pt (what averaging and s2s-pack write: tensors only) is read weights-only;
    trainer checkpoints, which also hold RNG and optimiser state, are unpickled in full, so
    only load those from training runs you trust (s2s-pack never ships them). Raises
    ExperimentNotFoundError when there are no weights, ExperimentError when they cannot be
    read or do not fit the model, naming exp_dir."""
    exp_dir = Path(exp_dir)
    candidates = [Path(checkpoint)] if checkpoint else weights_candidates(exp_dir)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ExperimentNotFoundError(
            f"no model weights in {exp_dir} (looked for {[str(c) for c in candidates]})"
        )
    try:
        state = read_state_dict(path, weights_only=path == exp_dir / AVERAGED)
    except ValueError as e:  # not weights-only: the message names the file
        raise ExperimentError(_named(exp_dir, e)) from e
    except Exception as e:  # a damaged or foreign checkpoint; its message on one line
        raise ExperimentError(f"{exp_dir}: {path.name}: {' '.join(str(e).split())}") from e
    misfit = _misfit(model, state)
    if misfit:
        raise ExperimentError(
            f"{exp_dir}: {path.name} does not fit the model its config builds: {misfit}"
        )
    model.load_state_dict(state)
    return path


def _misfit(model: torch.nn.Module, state: dict) -> str:
    """What keeps `state` from loading into `model`, in one line ("" when nothing does)."""
    own = model.state_dict()
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a state dict"
    kinds = {
        "missing": [k for k in own if k not in state],
        "unexpected": [k for k in state if k not in own],
        "of another shape": [
            k for k in own if k in state and getattr(state[k], "shape", None) != own[k].shape
        ],
    }
    return "; ".join(
        f"{len(keys)} keys {kind} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for kind, keys in kinds.items()
        if keys
    )


def load_lm(lm_dir: str | Path, tokenizer_path: str | Path) -> TransformerLM:
    """The language model of experiment lm_dir (model_avg.pt, else its latest checkpoint) for
    decoding a model whose tokenizer is tokenizer_path, in eval mode. ExperimentError when the
    two tokenizers differ: the LM would score other tokens than the decoder emits."""
    lm_dir = Path(lm_dir)
    if not (lm_dir / "config.yaml").is_file():
        raise ExperimentNotFoundError(
            f"decode.lm: {lm_dir}/config.yaml not found: not an LM experiment"
        )
    try:
        cfg = load_experiment_config([lm_dir / "config.yaml"], schema=LMExperimentConfig)
    except ValueError as e:
        raise ExperimentError(f"decode.lm: {e}") from e
    mine, theirs = Path(tokenizer_path), Path(cfg.data.tokenizer)
    if mine.read_bytes() != theirs.read_bytes():
        raise ExperimentError(
            f"decode.lm: {lm_dir} was trained with the tokenizer {theirs}, which differs from "
            f"the model's {mine}: an LM must share the model's target vocabulary"
        )
    lm = TransformerLM(cfg.lm, load_tokenizer(theirs).vocab_size)
    load_model_weights(lm, lm_dir)
    return lm.eval()
