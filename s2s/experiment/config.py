"""The experiment config: model + data + training + decoding, one OmegaConf structured config.

`s2s-train`, `s2s-decode` and the recipes all read configs through this module: it validates
the merged YAML against `ExperimentConfig` (an unknown key is an error naming it), writes the
resolved config, and knows which files an experiment directory holds (s2s.experiment says
what is where in `exp/<name>/`). The sections are the dataclasses of the code below the
experiment (ModelConfig, LMConfig, FbankConfig, SpecAugConfig) and of
s2s.experiment.train_config (TrainConfig), so reading a config builds nothing.

config.yaml names the tokenizer and CMVN copies relative to itself ("tokenizer.model"), and a
relative data.tokenizer or data.cmvn in any YAML file is read relative to that file's directory,
so an experiment directory can be copied or moved and still decodes. (Relative paths in
command-line overrides are relative to the current directory, as usual.)
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from s2s.data.features import FbankConfig
from s2s.data.specaug import SpecAugConfig
from s2s.experiment.decode_config import BeamSearchConfig
from s2s.experiment.train_config import TrainConfig
from s2s.models.lm import LMConfig
from s2s.models.seq2seq import ModelConfig

SOURCES = ("speech", "text")
BUCKET_WHEN = ("always", "bf16")
# The experiment's own files: data.<key> -> the name of its copy in exp/<name>/.
EXP_FILES = {"tokenizer": "tokenizer.model", "cmvn": "cmvn.pt"}


class ExperimentError(ValueError):
    """An experiment directory that cannot be read or loaded; the message names the folder."""


class ExperimentNotFoundError(ExperimentError, FileNotFoundError):
    """A folder that is not an experiment, or lacks a file it needs (also a FileNotFoundError,
    as it was before there was an ExperimentError)."""


def require_experiment(folder: str | Path) -> Path:
    """folder/config.yaml, or ExperimentNotFoundError naming the folder."""
    folder = Path(folder)
    if not (folder / "config.yaml").is_file():
        raise ExperimentNotFoundError(f"{folder}/config.yaml not found: is {folder} an experiment?")
    return folder / "config.yaml"


@dataclass
class DataConfig:
    """Where the data is and how it is batched.

    source: "speech" (features from feature dumps) or "text" (a text field of the data dir).
    train_dir / valid_dir: data dirs (texts); train_dump / valid_dump: their feature dumps.
    target_field: the text file that holds targets ("text", "text.de", "text.tgt", ...);
    source_field: the text file that holds sources when source == "text".
    src_ctc_field: speech translation's source transcript ("text.en"), the target of the
    source CTC (model.src_ctc_weight > 0); the tokenizer must have been trained on it too.
    cmvn: global CMVN statistics file ("" = per-utterance CMVN). features: how the dumps were
    computed, so decoding computes features from audio exactly the same way.
    max_frames: batch cap in padded source frames (ESPnet numel / fairseq max_tokens).
    bucket_frames / bucket_tokens: pad every batch's sources (frames, or tokens for text) /
    targets to a multiple of this length, so that batch shapes repeat from epoch to epoch
    although SpecAugment's time shift changes the lengths (oneDNN builds its bf16 kernels per
    shape; docs/training.md). 0: batches padded to their longest item only.
    bucket_when: "always", or "bf16": pad to the buckets only when the run computes in bfloat16
    (train.amp resolved for train.device: "auto" is bfloat16 only where it is native). In
    float32 the padding is work for nothing: the demo trained 4-8% faster without it on a CPU
    with no native bfloat16 (BENCHMARKS.md §37).
    """

    source: str = "speech"
    train_dir: str = ""
    valid_dir: str = ""
    train_dump: str = ""
    valid_dump: str = ""
    tokenizer: str = ""
    target_field: str = "text"
    source_field: str = ""
    src_ctc_field: str = ""
    normalize: str = "none"
    cmvn: str = ""
    max_frames: int = 20000
    max_batch_size: int = 0
    max_src_len: int = 0
    num_workers: int = 0
    bucket_frames: int = 0
    bucket_tokens: int = 0
    bucket_when: str = "always"
    features: FbankConfig = field(default_factory=FbankConfig)
    specaug: SpecAugConfig = field(default_factory=SpecAugConfig)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data.source {self.source!r} not in {SOURCES}")
        if self.source == "text" and not self.source_field:
            raise ValueError("data.source 'text' needs data.source_field (e.g. text.src)")
        if self.max_frames < 1:
            raise ValueError(f"data.max_frames must be >= 1, got {self.max_frames}")
        for name in ("bucket_frames", "bucket_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.bucket_when not in BUCKET_WHEN:
            raise ValueError(f"data.bucket_when {self.bucket_when!r} not in {BUCKET_WHEN}")


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: BeamSearchConfig = field(default_factory=BeamSearchConfig)

    def __post_init__(self) -> None:
        if self.model.consistency_weight > 0:
            if self.data.source != "speech":
                raise ValueError(
                    "model.consistency_weight > 0 is for speech sources: its two views are two "
                    "draws of data.specaug"
                )
            a = self.data.specaug
            if not (a.freq_masks or a.time_masks or a.time_warp or a.time_shift):
                raise ValueError(
                    "model.consistency_weight > 0 needs data.specaug to draw views that differ "
                    "(masks, time warp or time shift); every one is off"
                )
        if self.model.src_ctc_weight > 0:
            if self.data.source != "speech":
                raise ValueError("model.src_ctc_weight > 0 is for speech sources (data.source)")
            if not self.data.src_ctc_field:
                raise ValueError(
                    "model.src_ctc_weight > 0 needs data.src_ctc_field, the source transcript "
                    "(e.g. text.en)"
                )


def load_experiment_config(
    yaml_paths: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    schema: type | None = None,
) -> ExperimentConfig | LMExperimentConfig:
    """Merge YAML files (in order) and dot-list overrides onto the schema (ExperimentConfig,
    or LMExperimentConfig for a language model) and validate.

    Raises ValueError naming the file (or override) and the offending key."""
    cfg = OmegaConf.structured(schema or ExperimentConfig)
    for path in yaml_paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        try:
            cfg = OmegaConf.merge(cfg, _relative_to_file(OmegaConf.load(path), path))
        except Exception as e:  # omegaconf's errors name the key; add the file
            raise ValueError(f"{path}: {e}") from e
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except Exception as e:
            raise ValueError(f"override {list(overrides)}: {e}") from e
    try:
        return OmegaConf.to_object(cfg)  # instantiates the dataclasses: __post_init__ validates
    except Exception as e:
        raise ValueError(f"invalid config: {e}") from e


def _relative_to_file(raw: DictConfig, path: Path) -> DictConfig:
    """raw (one YAML file) with a relative data.tokenizer / data.cmvn made relative to the
    file's directory: what lets config.yaml name the experiment's own copies."""
    for key in EXP_FILES:
        value = OmegaConf.select(raw, f"data.{key}", default=None)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            OmegaConf.update(raw, f"data.{key}", str(path.parent / value))
    return raw


def decoding_config(
    exp_dir: str | Path, decode_config: str | Path | None = None, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """The config one decoding run of exp_dir uses: exp_dir/config.yaml (its decode section as
    trained), then decode_config (a YAML holding only a `decode:` section), then `decode.*`
    dot-list overrides, the later winning. A relative decode.lm is relative to the current
    directory. Recipe stage 9, s2s-decode and
    Speech2Text.from_dir all decode through this."""
    paths = [require_experiment(exp_dir)]
    if decode_config:
        path = Path(decode_config)
        if path.is_file():  # (a missing file is reported by load_experiment_config)
            try:
                other = sorted(set(OmegaConf.load(path)) - {"decode"})
            except Exception as e:  # a YAML syntax error: name the file
                raise ValueError(f"{path}: {e}") from e
            if other:
                raise ValueError(f"{path}: a decode config holds only decode:, found {other}")
        paths.append(path)
    other = [o for o in overrides if not o.startswith("decode.")]
    if other:
        raise ValueError(f"only decode.* settings can change at decoding, got {other}")
    return load_experiment_config(paths, overrides)


def decoding_name(decode: BeamSearchConfig, decode_config: str | Path) -> str:
    """The name of a decoding run, icefall-style: the decode YAML's stem, then `_<key><value>`
    for every setting that differs from the YAML's own (its decode: section over the
    defaults), e.g. "beam5" or "beam5_beam_size2_ctc_weight0.3". The name and the YAML give
    every setting, so runs with different settings never share a name."""
    own = load_experiment_config([decode_config]).decode
    changed = [f.name for f in fields(decode) if getattr(decode, f.name) != getattr(own, f.name)]
    # decode.lm is a directory: its name (exp/lm_tiny_mtla_s2 -> lm_tiny_mtla_s2) names it
    value = {k: Path(v).name if k == "lm" else v for k in changed for v in [getattr(decode, k)]}
    return "_".join([Path(decode_config).stem, *(f"{k}{value[k]}" for k in changed)])


def save_experiment_config(cfg: ExperimentConfig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def to_dictconfig(cfg: ExperimentConfig) -> DictConfig:
    return OmegaConf.structured(cfg)


def prepare_exp_dir(cfg: ExperimentConfig, exp_dir: str | Path) -> ExperimentConfig:
    """Copy the tokenizer and CMVN stats into exp_dir and return the config to save as
    exp_dir/config.yaml: the same, with those two paths relative to exp_dir ("tokenizer.model"),
    so the directory alone, wherever it is moved, is enough to decode."""
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    for key, name in EXP_FILES.items():
        src = getattr(cfg.data, key, "")  # an LM experiment has no CMVN
        if not src:
            if key == "tokenizer":
                raise ValueError("data.tokenizer is not set")
            continue  # no global CMVN: per-utterance CMVN
        src, dst = Path(src), exp_dir / name
        if not src.is_file():
            raise ValueError(f"data.{key}: {src} not found")
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        setattr(cfg.data, key, name)
    return cfg


@dataclass
class LMDataConfig:
    """A language model's training text: `text_field` of the data dirs, normalised as the
    tokenizer's training text was. max_tokens: batch cap in padded tokens."""

    train_dir: str = ""
    valid_dir: str = ""
    text_field: str = "text"
    tokenizer: str = ""
    normalize: str = "none"
    max_tokens: int = 4000
    max_batch_size: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"data.max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class LMExperimentConfig:
    """A language-model experiment (s2s-train --lm): the same exp/<name>/ layout, trainer and
    checkpoint averaging as a model's."""

    lm: LMConfig = field(default_factory=LMConfig)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
