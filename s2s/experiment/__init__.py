"""One experiment: its config, its directory, and loading it once trained.

An experiment directory is self-contained:

    exp/<name>/config.yaml       the resolved config (written when training starts)
    exp/<name>/tokenizer.model   copied in, so the directory is self-contained
    exp/<name>/cmvn.pt           global CMVN statistics (speech), copied in
    exp/<name>/checkpoints/      trainer checkpoints; exp/<name>/model_avg.pt the averaged model
    exp/<name>/tensorboard/      TensorBoard event files

The package sits below everything that trains, decodes, exports or packs an experiment, and
imports none of them:

    config.py        the schema (ExperimentConfig, LMExperimentConfig), reading and writing
                     YAML, the decode settings of one decoding run, ExperimentError
    train_config.py  the train: section (TrainConfig, MonitorConfig, InitParam)
    decode_config.py the decode: section (BeamSearchConfig)
    checkpoints.py   finding and reading weights: checkpoints, model_avg.pt
    load.py          load_experiment: config, tokenizer, CMVN, model, weights, decode.lm
    datasets.py      the datasets and batch loaders an experiment trains on

Everything is importable from `s2s.experiment`; the decode section's schema, BeamSearchConfig,
is decode_config.py (s2s.decode.beam_search re-exports it).
"""

from s2s.experiment.checkpoints import load_weights_only
from s2s.experiment.config import (
    EXP_FILES,
    SOURCES,
    DataConfig,
    ExperimentConfig,
    ExperimentError,
    ExperimentNotFoundError,
    LMDataConfig,
    LMExperimentConfig,
    decoding_config,
    decoding_name,
    load_experiment_config,
    prepare_exp_dir,
    require_experiment,
    save_experiment_config,
    to_dictconfig,
)
from s2s.experiment.datasets import (
    build_dataset,
    build_lm_dataset,
    build_lm_loader,
    build_loader,
)
from s2s.experiment.load import (
    Experiment,
    build_model,
    load_cmvn,
    load_experiment,
    load_lm,
    load_model_weights,
    load_tokenizer,
)
from s2s.experiment.train_config import TrainConfig

__all__ = [
    "EXP_FILES",
    "SOURCES",
    "DataConfig",
    "Experiment",
    "ExperimentConfig",
    "ExperimentError",
    "ExperimentNotFoundError",
    "LMDataConfig",
    "LMExperimentConfig",
    "TrainConfig",
    "build_dataset",
    "build_lm_dataset",
    "build_lm_loader",
    "build_loader",
    "build_model",
    "decoding_config",
    "decoding_name",
    "load_cmvn",
    "load_experiment",
    "load_experiment_config",
    "load_lm",
    "load_model_weights",
    "load_tokenizer",
    "load_weights_only",
    "prepare_exp_dir",
    "require_experiment",
    "save_experiment_config",
    "to_dictconfig",
]
