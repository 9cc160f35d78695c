"""What a recipe declares in its conf/recipe.yaml (validated through OmegaConf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from s2s.data.features import FbankConfig

TASKS = ("st", "asr", "slu", "sum")
STAGES = {
    0: "download",
    1: "data preparation",
    2: "speed perturbation",
    3: "feature dump",
    4: "length / empty filtering",
    5: "tokenizer",
    6: "statistics (global CMVN)",
    7: "training (the language model first, when the recipe has one)",
    8: "checkpoint averaging",
    9: "decoding",
    10: "scoring into RESULTS.md",
}


@dataclass
class TokenizerSpec:
    vocab_size: int = 1000
    model_type: str = "unigram"
    normalize: str = "none"  # normalize_text mode applied to targets: none | tc | lc.rm


@dataclass
class FilterSpec:
    """Stage 4 drops training/validation utterances outside these bounds (and empty ones)."""

    min_frames: int = 10
    max_frames: int = 3000
    max_chars: int = 1000


@dataclass
class RecipeConfig:
    """corpus: a module of the repository's local/ with prepare() (phrases.prepare for
    local/phrases/prepare.py); task: st | asr | slu | sum.
    source: speech features or a text field (source_field). target_field: the text file
    holding targets and references. src_ctc_field: speech translation's source transcript
    (text.en): the tokenizer is trained on it as well and experiments get it as
    data.src_ctc_field, the target of the source CTC (model.src_ctc_weight). corpus_root:
    where the downloaded corpus lives (real corpora). prepare_args: keyword arguments for the
    preparer. speed_perturb: extra factors for the training set (e.g. [0.9, 1.1]; 1.0 is
    always kept). Config paths are relative to the recipe directory. overrides:
    experiment-config dot-list entries this recipe always applies (before the command
    line's). lm_config: a language-model YAML (conf/lm/*.yaml):
    stage 7 then trains that LM on the training targets before the model, and decoding with
    decode.lm_weight > 0 fuses it; lm_overrides: its dot-list entries (`--use_lm false` skips
    it). skip_bad_audio: stage 3 leaves out utterances whose audio cannot be read or is
    too short (fewer than filter.min_frames frames; test sets: not one frame), lists them in
    dump/<set>/bad_utts and goes on; false (the default) stops after listing them all
    (`--skip_bad_audio true|false` on run.sh decides for one run)."""

    corpus: str = ""
    task: str = "st"
    source: str = "speech"
    source_field: str = ""
    target_field: str = "text"
    src_ctc_field: str = ""
    corpus_root: str = "downloads"
    prepare_args: dict = field(default_factory=dict)
    train_set: str = "train"
    valid_set: str = "dev"
    test_sets: list = field(default_factory=lambda: ["test"])
    speed_perturb: list = field(default_factory=list)
    features: FbankConfig = field(default_factory=FbankConfig)
    global_cmvn: bool = True
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    filter: FilterSpec = field(default_factory=FilterSpec)
    model_config: str = "conf/model.yaml"
    train_config: str = "conf/train.yaml"
    decode_config: str = "conf/decode.yaml"
    metrics: list = field(default_factory=lambda: ["bleu", "chrf"])
    overrides: list = field(default_factory=list)  # experiment config key=value, e.g. CTC weight
    lm_config: str = ""
    lm_overrides: list = field(default_factory=list)
    skip_bad_audio: bool = False

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ValueError("recipe.yaml must name its corpus (a module of local/)")
        if self.task not in TASKS:
            raise ValueError(f"recipe task {self.task!r} not in {TASKS}")
        if self.source == "text" and not self.source_field:
            raise ValueError("a text-source recipe needs source_field")
        if self.src_ctc_field and self.source != "speech":
            raise ValueError("src_ctc_field is for speech sources (a text source is the input)")
        if any(f <= 0 or f == 1.0 for f in self.speed_perturb):
            raise ValueError(
                f"speed_perturb lists extra factors > 0 other than 1.0: {self.speed_perturb}"
            )


def load_recipe_config(path: str | Path) -> RecipeConfig:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe config not found: {path}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RecipeConfig), OmegaConf.load(path))
        return OmegaConf.to_object(merged)
    except Exception as e:
        raise ValueError(f"{path}: {e}") from e
