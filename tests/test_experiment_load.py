"""s2s.experiment.load_experiment, the one way a trained experiment is loaded: what it returns,
and every way a folder fails to load is one ExperimentError naming the folder, which s2s-pack
and s2s-export pass on as their own errors and s2s-decode prints as one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_exp
from omegaconf import OmegaConf

from s2s.cli.decode import main as decode_main
from s2s.experiment import (
    ExperimentError,
    ExperimentNotFoundError,
    load_experiment,
    load_model_weights,
)
from s2s.export.bundle import BundleError
from s2s.pack import PackError, pack_experiment
from s2s.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def exp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exp(tmp_path_factory.mktemp("load"))


def _copy(exp: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(exp, tmp_path / name))


def test_load_experiment_returns_every_part(exp: Path) -> None:
    x = load_experiment(exp, decode_overrides=["decode.beam_size=2"])
    assert x.folder == exp and x.weights == exp / "model_avg.pt"
    assert x.cfg.decode.beam_size == 2 and x.cmvn is None and x.lm is None
    assert x.fbank is x.cfg.data.features and not x.model.training
    state = torch.load(exp / "model_avg.pt", weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in x.model.state_dict().items())
    assert x.tokenizer.vocab_size == x.model.vocab_size
    bare = load_experiment(exp, model=False)  # as for an ONNX bundle: no weights read
    assert bare.model is None and bare.weights is None


def test_copy_to_writes_what_decoding_reads(exp: Path, tmp_path: Path) -> None:
    x = load_experiment(exp, model=False)
    cfg = x.copy_to(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "tokenizer.model"]
    assert cfg.data.tokenizer == "tokenizer.model" and x.cfg.data.tokenizer != cfg.data.tokenizer
    assert load_experiment(tmp_path, model=False).tokenizer.vocab_size == x.tokenizer.vocab_size


def test_weights_fall_back_to_the_latest_checkpoint(exp: Path, tmp_path: Path) -> None:
    folder = _copy(exp, tmp_path, "ckpt")
    state = torch.load(folder / "model_avg.pt", weights_only=True)
    (folder / "model_avg.pt").unlink()
    save_checkpoint(folder / "checkpoints", 3, {"model": state})
    assert load_experiment(folder).weights == folder / "checkpoints" / "step_3.pt"


def test_every_failure_is_an_experiment_error_naming_the_folder(
    exp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ExperimentNotFoundError, match="config.yaml not found"):
        load_experiment(tmp_path / "nowhere")
    assert issubclass(ExperimentNotFoundError, FileNotFoundError)

    no_weights = _copy(exp, tmp_path, "no_weights")
    (no_weights / "model_avg.pt").unlink()
    with pytest.raises(ExperimentNotFoundError, match=f"no model weights in {no_weights}"):
        load_experiment(no_weights)

    other = _copy(exp, tmp_path, "other_shapes")
    torch.save({"embed.weight": torch.zeros(2, 2)}, other / "model_avg.pt")
    with pytest.raises(
        ExperimentError, match=f"{other}: model_avg.pt does not fit .*unexpected \\(embed.weight\\)"
    ):
        load_experiment(other)

    no_tok = _copy(exp, tmp_path, "no_tokenizer")
    (no_tok / "tokenizer.model").unlink()
    with pytest.raises(ExperimentNotFoundError, match=f"{no_tok}.*no SentencePiece model"):
        load_experiment(no_tok)

    bad = _copy(exp, tmp_path, "bad_config")
    cfg = OmegaConf.load(bad / "config.yaml")
    cfg.train.lr = -1.0
    OmegaConf.save(cfg, bad / "config.yaml")
    with pytest.raises(ExperimentError, match=f"{bad}.*lr must be > 0"):
        load_experiment(bad)

    with pytest.raises(ExperimentError, match=f"{other}: model_avg.pt does not fit"):
        load_model_weights(load_experiment(exp).model, other)

    # the commands pass the loader's message on as their own error, one line each
    with pytest.raises(PackError, match=f"no model weights in {no_weights}"):
        pack_experiment(no_weights, tmp_path / "x.tar.gz")
    assert issubclass(PackError, ValueError) and issubclass(BundleError, ValueError)
    capsys.readouterr()
    assert decode_main(["--model", str(other), str(tmp_path / "a.wav")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(other) in err, err
