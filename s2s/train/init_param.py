"""Initialise part of a model from another experiment's weights (ESPnet's `--init_param`).

An entry is `<source>:<src_key>:<dst_key>[:<exclude_keys>]`, as in ESPnet:

- source: a weights file (model_avg.pt, a trainer checkpoint) or an experiment directory
  (its model_avg.pt, else its latest checkpoint);
- src_key: only the source keys under this prefix, with the prefix stripped ("" = all);
- dst_key: the submodule of the model they are loaded into ("" = the whole model);
- exclude_keys: comma-separated prefixes of *source* keys left out.

`encoder:encoder` loads the source's encoder into our encoder (frontend included: it is part of
the encoder); the decoder, whose vocabulary may differ, stays as initialised. Unlike ESPnet
(which warns and skips), a prefix that matches nothing, a key the target lacks and a shape
mismatch are errors naming the keys: a silently partial initialisation is not what was asked.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor, nn

from s2s.experiment.checkpoints import find_weights, read_state_dict
from s2s.experiment.train_config import InitParam

log = logging.getLogger("s2s.train")


def source_weights(source: str | Path) -> Path:
    """The weights file an init_param source names: the file itself, or an experiment dir's
    model_avg.pt, else its latest checkpoint. FileNotFoundError when there is none."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir() and (found := find_weights(path)) is not None:
        return found
    raise FileNotFoundError(f"init_param: {source}: no such weights file or experiment")


def _under(key: str, prefix: str) -> bool:
    return not prefix or key == prefix or key.startswith(prefix + ".")


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) + 1 :] if prefix else key


def load_init_param(model: nn.Module, spec: str | InitParam) -> list[str]:
    """Load one entry into `model` in place; returns the model's keys it loaded.

    Raises ValueError naming the keys when src_key matches no source key, dst_key names no
    submodule, a source key has no counterpart in the target, or shapes differ."""
    p = spec if isinstance(spec, InitParam) else InitParam.parse(spec)
    path = source_weights(p.source)
    state = read_state_dict(path, weights_only=False)  # a weights file or a trainer checkpoint
    src: dict[str, Tensor] = {
        _strip(k, p.src_key): v
        for k, v in state.items()
        if _under(k, p.src_key) and not any(_under(k, e) for e in p.exclude)
    }
    if not src:
        tops = sorted({k.split(".")[0] for k in state})
        raise ValueError(
            f"init_param {path}: src_key {p.src_key!r} (excluding {list(p.exclude)}) matches no "
            f"key of the source; its top-level keys are {tops}"
        )
    try:
        target = model.get_submodule(p.dst_key) if p.dst_key else model
    except AttributeError:
        tops = sorted(name for name, _ in model.named_children())
        raise ValueError(
            f"init_param {path}: dst_key {p.dst_key!r} is no submodule of the model {tops}"
        ) from None
    dst = target.state_dict()
    where = f"{p.dst_key}." if p.dst_key else ""
    missing = sorted(k for k in src if k not in dst)
    if missing:
        raise ValueError(
            f"init_param {path}: source keys with no counterpart under {p.dst_key or 'the model'!r}"
            f": {[f'{where}{k}' for k in missing[:10]]}{' ...' if len(missing) > 10 else ''}"
        )
    bad = [
        f"{where}{k}: source {tuple(v.shape)} vs model {tuple(dst[k].shape)}"
        for k, v in src.items()
        if v.shape != dst[k].shape
    ]
    if bad:
        raise ValueError(f"init_param {path}: shape mismatch: {'; '.join(bad[:10])}")
    dst.update(src)
    target.load_state_dict(dst)
    loaded = [f"{where}{k}" for k in src]
    for k in loaded:
        log.info("init_param: %s <- %s", k, path)
    return loaded


def initialise(model: nn.Module, specs: list[str]) -> list[str]:
    """Apply every entry in order (a later entry overwrites an earlier one's keys) and log the
    keys left as initialised. Returns the keys loaded."""
    loaded: set[str] = set()
    for spec in specs:
        loaded.update(load_init_param(model, spec))
    for k in model.state_dict():
        if k not in loaded:
            log.info("init_param: %s left as initialised", k)
    log.info(
        "init_param: %d keys loaded, %d left as initialised",
        len(loaded),
        len(model.state_dict()) - len(loaded),
    )
    return sorted(loaded)
