"""One experiment = one config: model + data + training + decoding (OmegaConf structured).

`s2s-train`, `s2s-decode` and the recipes all go through this module: it validates the merged
YAML against `ExperimentConfig` (an unknown key is an error naming it), builds the tokenizer,
the datasets and batch samplers, and the model, and knows the layout of `exp/<name>/`:

    exp/<name>/config.yaml       the resolved config (written when training starts)
    exp/<name>/tokenizer.model   copied in, so the directory is self-contained
    exp/<name>/cmvn.pt           global CMVN statistics (speech), copied in
    exp/<name>/checkpoints/      trainer checkpoints; exp/<name>/model_avg.pt the averaged model
    exp/<name>/tensorboard/      TensorBoard event files

config.yaml names the tokenizer and CMVN copies relative to itself ("tokenizer.model"), and a
relative data.tokenizer or data.cmvn in any YAML file is read relative to that file's directory,
so an experiment directory can be copied or moved and still decodes. (Relative paths in
command-line overrides are relative to the current directory, as usual.)
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from s2s.data.features import FbankConfig
from s2s.data.specaug import SpecAugConfig
from s2s.decode.beam_search import BeamSearchConfig
from s2s.models.lm import LMConfig, TransformerLM
from s2s.models.seq2seq import ModelConfig, Seq2SeqModel
from s2s.train.config import TrainConfig

SOURCES = ("speech", "text")
# The experiment's own files: data.<key> -> the name of its copy in exp/<name>/.
EXP_FILES = {"tokenizer": "tokenizer.model", "cmvn": "cmvn.pt"}


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
    exp_dir = Path(exp_dir)
    if not (exp_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{exp_dir}/config.yaml not found: is {exp_dir} an experiment?")
    paths = [exp_dir / "config.yaml"]
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


# --- building blocks ----------------------------------------------------------------------


def load_tokenizer(path: str | Path):
    from s2s.data.tokenizer import Tokenizer

    return Tokenizer.from_file(str(path))


def load_cmvn(path: str):
    """A GlobalCMVN from its stats file, or None for per-utterance CMVN."""
    if not path:
        return None
    from s2s.data.features import GlobalCMVN

    return GlobalCMVN.from_file(path)


def build_dataset(cfg: ExperimentConfig, split: str, tokenizer, train: bool):
    """The training ("train") or validation ("valid") dataset of an experiment."""
    from s2s.data.datadir import load_datadir
    from s2s.data.dataset import SpeechDataset, TextPairDataset
    from s2s.data.specaug import SpecAugment

    d = cfg.data
    datadir = load_datadir(getattr(d, f"{split}_dir"))
    if d.source == "text":
        return TextPairDataset(
            datadir.texts[d.source_field],
            datadir.texts[d.target_field],
            tokenizer,
            max_src_len=d.max_src_len or None,
            normalize=d.normalize,
        )
    specaug = SpecAugment(d.specaug) if train else None
    return SpeechDataset(
        getattr(d, f"{split}_dump"),
        datadir,
        tokenizer,
        text_field=d.target_field,
        cmvn=load_cmvn(d.cmvn),
        specaug=specaug,
        normalize=d.normalize,
        # read only when trained on: a weight of 0 turns the source CTC off, field or not
        src_text_field=d.src_ctc_field if cfg.model.src_ctc_weight > 0 else "",
        views=2 if train and cfg.model.consistency_weight > 0 else 1,
    )


def build_loader(
    cfg: ExperimentConfig, dataset, *, shuffle: bool, rank: int = 0, world_size: int = 1
) -> DataLoader:
    from s2s.data.dataset import collate, collate_views
    from s2s.data.sampler import BucketBatchSampler

    d = cfg.data
    sampler = BucketBatchSampler(
        dataset.lengths,
        d.max_frames,
        max_batch_size=d.max_batch_size,
        shuffle=shuffle,
        seed=cfg.train.seed,
        num_replicas=world_size,
        rank=rank,
    )
    join = collate_views if getattr(dataset, "views", 1) > 1 else collate
    pad = functools.partial(join, pad_src_to=d.bucket_frames, pad_tgt_to=d.bucket_tokens)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=pad, num_workers=d.num_workers)


def build_model(cfg: ExperimentConfig, vocab_size: int) -> Seq2SeqModel:
    return Seq2SeqModel(cfg.model, vocab_size)


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


def build_lm_dataset(cfg: LMExperimentConfig, split: str, tokenizer, train: bool = False):
    """Items whose target is the text (the source, the same text unnormalised, is only read
    for its length, which buckets the batches). `train` is unused: build_dataset's signature."""
    from s2s.data.datadir import load_datadir
    from s2s.data.dataset import TextPairDataset

    texts = load_datadir(getattr(cfg.data, f"{split}_dir")).texts[cfg.data.text_field]
    return TextPairDataset(texts, texts, tokenizer, normalize=cfg.data.normalize)


def build_lm_loader(cfg: LMExperimentConfig, dataset, *, shuffle: bool, **kw) -> DataLoader:
    from s2s.data.dataset import collate
    from s2s.data.sampler import BucketBatchSampler

    sampler = BucketBatchSampler(
        dataset.lengths,
        cfg.data.max_tokens,
        max_batch_size=cfg.data.max_batch_size,
        shuffle=shuffle,
        seed=cfg.train.seed,
        num_replicas=kw.get("world_size", 1),
        rank=kw.get("rank", 0),
    )
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers
    )


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


def load_weights_only(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a weights file ({"model": state_dict, ...} or a bare state dict), read
    with torch.load(weights_only=True): tensors and plain containers, never code. ValueError
    naming the file for anything else (a pickled object, a damaged file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for objects; RuntimeError/EOFError for damage
        raise ValueError(f"{path}: not a weights-only file (tensors only): {e}") from e
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    return state


def load_model_weights(model: torch.nn.Module, exp_dir: str | Path, checkpoint: str = "") -> Path:
    """Load `checkpoint` (a path), else exp_dir/model_avg.pt, else the latest checkpoint.

    model_avg.pt (what averaging and s2s-pack write: tensors only) is read weights-only;
    trainer checkpoints, which also hold RNG and optimiser state, are unpickled in full, so
    only load those from training runs you trust (s2s-pack never ships them)."""
    exp_dir = Path(exp_dir)
    candidates = [Path(checkpoint)] if checkpoint else [exp_dir / "model_avg.pt"]
    if not checkpoint:
        from s2s.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(exp_dir / "checkpoints")
        if latest is not None:
            candidates.append(Path(latest))
    for path in candidates:
        if path.is_file():
            if path == exp_dir / "model_avg.pt":
                state = load_weights_only(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=False)
                if isinstance(state, dict) and "model" in state:
                    state = state["model"]
            model.load_state_dict(state)
            return path
    raise FileNotFoundError(
        f"no model weights in {exp_dir} (looked for {[str(c) for c in candidates]})"
    )
