"""init_param (ESPnet's `<source>:<src_key>:<dst_key>[:<exclude_keys>]`): exactly the named keys
load, with their values; everything else stays as initialised; mismatches are errors naming the
keys; the trainer applies it to a fresh run only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import ToyDataset, ToyModel, make_cfg, make_loader

from s2s.models.encoder import EncoderConfig
from s2s.models.seq2seq import ModelConfig, Seq2SeqModel
from s2s.train.config import TrainConfig
from s2s.train.init_param import InitParam, initialise, load_init_param
from s2s.train.trainer import Trainer

ENC = EncoderConfig(type="transformer", input_dim=8, d_model=32, n_heads=4, ffn_dim=64, n_layers=2)


def model(vocab: int, seed: int, d_model: int = 32) -> Seq2SeqModel:
    torch.manual_seed(seed)
    enc = EncoderConfig(**{**ENC.__dict__, "d_model": d_model})
    return Seq2SeqModel(ModelConfig(encoder=enc, ctc_weight=0.3), vocab)


def snapshot(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.fixture()
def asr_exp(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """An "ASR experiment": model_avg.pt of a model with another vocabulary (40 vs 30)."""
    src = model(40, seed=1)
    exp = tmp_path / "exp" / "asr"
    exp.mkdir(parents=True)
    torch.save(src.state_dict(), exp / "model_avg.pt")
    return exp, snapshot(src)


def test_parse() -> None:
    assert InitParam.parse("a/b.pt") == InitParam("a/b.pt")
    assert InitParam.parse(
        "x:encoder:encoder:encoder.frontend,encoder.stack.layers.0"
    ) == InitParam("x", "encoder", "encoder", ("encoder.frontend", "encoder.stack.layers.0"))
    with pytest.raises(ValueError, match="expected <source>"):
        InitParam.parse("a:b:c:d:e")
    with pytest.raises(ValueError, match="expected <source>"):
        TrainConfig(init_param=[":encoder:encoder"])


def test_encoder_loads_exactly_and_the_rest_stays(asr_exp) -> None:
    exp, src = asr_exp
    dst = model(30, seed=2)
    before = snapshot(dst)
    loaded = initialise(dst, [f"{exp}:encoder:encoder"])
    after = dst.state_dict()
    enc_keys = sorted(k for k in after if k.startswith("encoder."))
    assert loaded == enc_keys and enc_keys
    for k, v in after.items():
        want = src[k] if k in loaded else before[k]
        assert torch.equal(v, want), k
        if v.dim() >= 2 and k in src:  # random matrices: the two models really differed
            assert not torch.equal(before[k], src[k]), k
    # a trainer checkpoint ({"model": ...}) and a file path work the same
    torch.save({"model": src, "step": 3}, exp / "ckpt.pt")
    assert sorted(load_init_param(model(30, seed=3), f"{exp}/ckpt.pt:encoder:encoder")) == enc_keys


def test_prefix_renaming_and_exclusion(asr_exp) -> None:
    exp, src = asr_exp
    dst = model(30, seed=2)
    before = snapshot(dst)
    # source layer 0 -> our layer 1, without its feed-forward block
    spec = f"{exp}:encoder.stack.layers.0:encoder.stack.layers.1:encoder.stack.layers.0.ffn"
    loaded = load_init_param(dst, spec)
    assert loaded and all(k.startswith("encoder.stack.layers.1.") for k in loaded)
    assert not any(".ffn." in k for k in loaded)
    after = dst.state_dict()
    for k in loaded:
        assert torch.equal(after[k], src[k.replace("layers.1.", "layers.0.", 1)])
    for k, v in after.items():
        if k not in loaded:
            assert torch.equal(v, before[k]), k


def test_errors_name_the_keys(asr_exp) -> None:
    exp, _ = asr_exp
    dst = model(30, seed=2)
    before = snapshot(dst)
    with pytest.raises(ValueError, match=r"shape mismatch: decoder\.embed\.weight: source \(40, "):
        load_init_param(dst, f"{exp}:decoder:decoder")
    with pytest.raises(
        ValueError, match=r"src_key 'encodr'.*top-level keys are \['ctc', 'decoder'"
    ):
        load_init_param(dst, f"{exp}:encodr:encoder")
    with pytest.raises(ValueError, match=r"dst_key 'enc' is no submodule"):
        load_init_param(dst, f"{exp}:encoder:enc")
    with pytest.raises(ValueError, match=r"no counterpart under 'decoder': \['decoder\.frontend"):
        load_init_param(dst, f"{exp}:encoder:decoder")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_init_param(dst, f"{exp.parent}/nowhere:encoder:encoder")
    smaller = model(40, seed=4, d_model=16)
    torch.save(smaller.state_dict(), exp.parent / "small.pt")
    with pytest.raises(ValueError, match=r"encoder\.\S+: source \(16"):
        load_init_param(dst, f"{exp.parent}/small.pt:encoder:encoder")
    for k, v in dst.state_dict().items():  # a failed load changes nothing
        assert torch.equal(v, before[k]), k


def test_trainer_initialises_a_fresh_run_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = ToyModel()
    torch.save(src.state_dict(), tmp_path / "src.pt")
    ds = ToyDataset()

    def trainer(max_steps: int) -> Trainer:
        torch.manual_seed(1)
        cfg = make_cfg(max_steps=max_steps, lr=1e-9, init_param=[f"{tmp_path}/src.pt:rnn:rnn"])
        return Trainer(ToyModel(), cfg, tmp_path / "exp", make_loader(ds, shuffle=True))

    t = trainer(1)
    fresh = snapshot(t.module)
    t.fit()
    # lr 1e-9: one update leaves the loaded weights within 1e-6 of the source
    for k, v in t.module.state_dict().items():
        if k.startswith("rnn."):
            torch.testing.assert_close(v, src.state_dict()[k], atol=1e-6, rtol=0)
        elif k.startswith("out."):
            torch.testing.assert_close(v, fresh[k], atol=1e-6, rtol=0)
    trained = snapshot(t.module)
    with torch.no_grad():  # a source that changed since must not reach the resumed run
        for p in src.parameters():
            p.add_(1.0)
    torch.save(src.state_dict(), tmp_path / "src.pt")
    t2 = trainer(1)
    t2.fit()  # resumes at step 1 = max_steps: nothing to train
    for k, v in t2.module.state_dict().items():
        assert torch.equal(v, trained[k]), k
