"""Training settings (the `train:` section of an experiment config): defined, with their
schedules described, in s2s.experiment.train_config, below the experiment schema; re-exported
here for the trainer's modules."""

from s2s.experiment.train_config import (  # noqa: F401
    AMPS,
    AVERAGE_BY,
    DEVICES,
    MODES,
    OPTIM_IMPLS,
    OPTIMS,
    SCHEDULERS,
    TrainConfig,
)
