"""What makes the training step fast changes nothing it should not (s2s.train.speed,
docs/training.md): a batch padded to its length bucket gives the loss and gradients of the
unpadded batch, a compiled step trains as the eager one does, bfloat16 autocast stays near
float32, the fused optimiser is the for-loop one, and each setting does what it says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import text_experiment

from s2s.data.dataset import Batch, collate
from s2s.experiment import ExperimentConfig, build_model, load_experiment_config
from s2s.models.seq2seq import Seq2SeqModel
from s2s.train import speed
from s2s.train.config import TrainConfig
from s2s.train.optim import build_optimizer
from s2s.train.trainer import Trainer

VOCAB = 40
REPO = Path(__file__).resolve().parents[1]


def tiny_model(arrangement: str = "cross", variant: str = "mtla", seed: int = 0) -> Seq2SeqModel:
    """A one-layer speech model (conv2d4 frontend, d = 32) with a CTC head."""
    cfg = ExperimentConfig()
    enc, dec = cfg.model.encoder, cfg.model.decoder
    enc.d_model = dec.d_model = 32
    enc.n_heads = dec.n_heads = 2
    enc.ffn_dim = dec.ffn_dim = 64
    enc.n_layers = dec.n_layers = 1
    enc.subsampling_channels = 8
    enc.dropout = dec.dropout = 0.0
    dec.arrangement = arrangement
    dec.attention = {"type": variant, "latent_dim": 16, "rope_dim": 8}
    if variant != "mtla":
        dec.attention = {"type": variant}
    cfg.model.ctc_weight = 0.3
    torch.manual_seed(seed)
    return build_model(cfg, VOCAB)


def items(n: int, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """n (utt, features (T, 80), target (L,)) items of different lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        T = int(torch.randint(30, 90, (1,), generator=g))
        L = int(torch.randint(2, 9, (1,), generator=g))
        out.append((f"u{i}", torch.randn(T, 80, generator=g), torch.randint(4, VOCAB, (L,))))
    return out


def loss_and_grads(model: Seq2SeqModel, batch: Batch) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    loss = model(batch)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


# --- length buckets -----------------------------------------------------------------------------


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
def test_a_batch_padded_to_its_bucket_gives_the_unpadded_loss_and_gradients(arrangement) -> None:
    """Padding the sources to a multiple of 64 frames and the targets to a multiple of 8 tokens
    changes only how many padded positions the masks hide."""
    model = tiny_model(arrangement).train()
    batch = items(5, seed=1)
    plain, padded = collate(batch), collate(batch, pad_src_to=64, pad_tgt_to=8)
    assert padded.src.shape[1] % 64 == 0 and padded.tgt.shape[1] % 8 == 0
    assert padded.src.shape[1] > plain.src.shape[1] and padded.tgt.shape[1] > plain.tgt.shape[1]
    assert torch.equal(padded.src_lens, plain.src_lens)
    loss, grads = loss_and_grads(model, plain)
    loss_p, grads_p = loss_and_grads(model, padded)
    torch.testing.assert_close(loss_p, loss, rtol=1e-6, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(grads_p[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_collate_pads_nothing_without_a_multiple() -> None:
    batch = items(3, seed=2)
    assert torch.equal(collate(batch).src, collate(batch, 0, 0).src)
    longest = max(x.shape[0] for _, x, _ in batch)
    assert collate(batch, pad_src_to=longest).src.shape[1] == longest  # already a multiple


@pytest.mark.parametrize(
    "when, amp, padded",
    [("always", "none", True), ("bf16", "none", False), ("bf16", "bf16", True),
     ("bf16", "auto", speed.cpu_has_native_bf16())],
)  # fmt: skip
def test_bucket_when_bf16_pads_only_a_bfloat16_run(tmp_path, when, amp, padded) -> None:
    """data.bucket_when=bf16: the loader pads to the buckets only where the run computes in
    bfloat16 (train.amp resolved for the CPU); in float32 the batches are padded to their
    longest item, as without buckets. Told no amp, the loader takes the run for float32."""
    from s2s import experiment as X

    overrides = text_experiment(tmp_path, 40, 6, 60)
    cfg = load_experiment_config(
        [REPO / "conf/model/tiny_text.yaml"],
        [*overrides, "data.bucket_frames=64", "data.bucket_tokens=8",
         f"data.bucket_when={when}", f"train.amp={amp}"],
    )  # fmt: skip
    tokenizer = X.load_tokenizer(cfg.data.tokenizer)
    dataset = X.build_dataset(cfg, "train", tokenizer, train=True)
    resolved = speed.resolve_amp(cfg.train.amp, torch.device("cpu"))  # as s2s-train does
    batches = list(X.build_loader(cfg, dataset, shuffle=False, amp=resolved))
    bucketed = [b.src.shape[1] % 64 == 0 and b.tgt.shape[1] % 8 == 0 for b in batches]
    if padded:
        assert all(bucketed)
    else:  # padded to the longest item: no batch here is as long as 64 tokens
        assert not any(bucketed)
        assert all(b.src.shape[1] == int(b.src_lens.max()) for b in batches)
    default = next(iter(X.build_loader(cfg, dataset, shuffle=False)))
    assert (default.src.shape[1] % 64 == 0) == (when == "always")


def test_bucket_when_is_validated() -> None:
    with pytest.raises(ValueError, match=r"data.bucket_when 'bf61' not in \('always', 'bf16'\)"):
        load_experiment_config([REPO / "conf/model/tiny_text.yaml"], ["data.bucket_when=bf61"])


# --- the optimiser ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "impl, flags",
    [("auto", {"fused": True}), ("fused", {"fused": True}), ("for_loop", {"foreach": False})],
)
def test_optim_impl_picks_the_torch_implementation(impl: str, flags: dict) -> None:
    opt = build_optimizer(tiny_model(), TrainConfig(optim_impl=impl))
    assert {k: opt.defaults[k] for k in flags} == flags


def test_fused_adam_updates_as_the_for_loop_one() -> None:
    """Three updates from the same gradients (fixed, so that no difference is fed back through
    the model): elementwise the same arithmetic, equal to float32 rounding."""
    model = tiny_model().train()
    model(collate(items(4, seed=3)))["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    params = {}
    for impl in ("for_loop", "fused"):
        copy = tiny_model().train()
        opt = build_optimizer(copy, TrainConfig(optim_impl=impl, lr=1e-3))
        for _ in range(3):
            for n, p in copy.named_parameters():
                p.grad = grads[n].clone()
            opt.step()
        params[impl] = dict(copy.named_parameters())
    for name, p in params["fused"].items():
        torch.testing.assert_close(p, params["for_loop"][name], rtol=1e-6, atol=1e-7)
        assert not torch.equal(p, dict(model.named_parameters())[name]) or not grads[name].any()


# --- precision ---------------------------------------------------------------------------------


def test_amp_auto_is_bfloat16_where_the_cpu_computes_it(monkeypatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    assert speed.resolve_amp("auto", cpu) == "bf16"
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    assert speed.resolve_amp("auto", cpu) == "none"
    assert speed.resolve_amp("bf16", cpu) == "bf16" and speed.resolve_amp("none", cpu) == "none"
    with pytest.raises(ValueError, match="amp 'bf32' not in"):
        TrainConfig(amp="bf32")


def test_attention_runs_in_float32_under_cpu_bfloat16_autocast() -> None:
    """ops.sdpa leaves PyTorch's CPU bf16 flash attention (slow backward) for float32."""
    from s2s.attention.ops import sdpa

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g).bfloat16() for _ in range(3))
    mask = torch.rand(2, 1, 5, 5, generator=g) > 0.3
    mask[..., 0] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(q, k, v, mask)
    want = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=mask
    )
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert sdpa(q, k, v, mask).dtype == torch.bfloat16  # outside autocast: as it comes


def run_steps(tmp_path, model: Seq2SeqModel, batches: list[Batch], **cfg) -> list[float]:
    """Losses of the trainer's own step over `batches`."""
    train = TrainConfig(device="cpu", lr=2e-3, warmup_steps=0, scheduler="constant", **cfg)
    trainer = Trainer(model, train, tmp_path, batches, device="cpu")
    losses = []
    hook = model.register_forward_hook(lambda m, i, out: losses.append(float(out["loss"])))
    for batch in batches:
        assert trainer.train_step(batch)
    hook.remove()
    return losses


def test_bfloat16_training_stays_within_2_percent_of_float32(tmp_path) -> None:
    """30 steps from the same weights on the same batches: bf16 autocast's loss is within 2% of
    float32's at every step (it moves by 0.3-0.6% here), the weights stay float32."""
    batches = [collate(items(6, seed=s), 64, 8) for s in range(30)]
    fp32 = run_steps(tmp_path / "a", tiny_model(), batches, amp="none")
    model = tiny_model()
    bf16 = run_steps(tmp_path / "b", model, batches, amp="bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0]
    worst = max(abs(a - b) / a for a, b in zip(fp32, bf16))
    assert 0 < worst < 0.02, worst  # 0: bf16 would not have been used at all


# --- compile -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses_over_20_steps(tmp_path) -> None:
    """train.compile (each encoder and decoder layer compiled, dynamic shapes) against eager:
    the same losses within float32 rounding over 20 steps of batches of varying shapes, and the
    layers really ran compiled (a negative control against a silent fall-back to eager)."""
    import torch._dynamo

    batches = [collate(items(4 + s % 3, seed=s)) for s in range(20)]
    eager = run_steps(tmp_path / "a", tiny_model(), batches)
    torch._dynamo.reset()
    model = tiny_model()
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = run_steps(tmp_path / "b", model, batches, compile=True)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    regions = [m for m in model.modules() if getattr(m, "compile_region", False)]
    assert len(regions) == 2 and all(m._compiled_call_impl is not None for m in regions)
    assert graphs >= 2  # the encoder layer's graph and the decoder layer's
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-5)


# --- the oneDNN cache ---------------------------------------------------------------------------


def test_onednn_cache_is_raised_unless_the_user_set_it(monkeypatch) -> None:
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    speed.prepare_onednn()
    import os

    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == speed.ONEDNN_CACHE
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "77")
    speed.prepare_onednn()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "77"


# --- the benchmark on real batches ----------------------------------------------------------------


def test_train_step_bench_on_an_experiments_batches(tmp_path) -> None:
    """python -m s2s.bench.train_step --exp: every row trains its own model on the
    experiment's batches; the first row is the reference; FLOPs and the matmul yardstick are
    measured (bfloat16's only for a bf16 row); the bucket row's batches have bucketed shapes."""
    from s2s.bench import train_step as T
    from s2s.experiment import save_experiment_config

    overrides = text_experiment(tmp_path, 40, 6, 60)
    cfg = load_experiment_config([REPO / "conf/model/tiny_text.yaml"], overrides)
    exp = tmp_path / "exp"
    exp.mkdir()
    save_experiment_config(cfg, exp / "config.yaml")
    out = tmp_path / "rows.json"
    argv = ["--exp", str(exp), "--rows", "buckets", "eager-fp32", "--batches", "3"]
    assert T.main([*argv, "--rounds", "2", "--json", str(out)]) == 0
    rows = {r["row"]: r for r in json.loads(out.read_text())}
    assert list(rows) == ["buckets", "eager-fp32"]
    # speed-up over the first row, and over eager-fp32 where that is another row
    assert rows["buckets"]["speedup"] == 1.0 == rows["eager-fp32"]["speedup_eager_fp32"]
    ratio = rows["buckets"]["frames_per_s"] / rows["eager-fp32"]["frames_per_s"]
    assert math.isclose(rows["buckets"]["speedup_eager_fp32"], ratio)
    assert math.isclose(rows["eager-fp32"]["speedup"], 1 / ratio)
    for r in rows.values():
        assert r["batches"] == 3 and len(r["round_s"]) == 2
        assert r["gflop_per_step"] > 0 and r["frames_per_s"] > 0
        assert r["matmul_gflops"]["float32"] > 0
        # No row computes in bfloat16: its yardstick (about a minute on a CPU without native
        # bfloat16) is not measured, and no share of it reported.
        assert "bfloat16" not in r["matmul_gflops"] and r["matmul_share_bf16"] is None
        assert math.isclose(r["gflops"] / r["matmul_gflops"]["float32"], r["matmul_share_fp32"])
        onednn = r["matmul_gflops"]["float32-onednn"]  # the same product by oneDNN
        assert onednn > 0 and math.isclose(r["gflops"] / onednn, r["matmul_share_fp32_onednn"])
    assert "data.bucket_frames=64" in rows["buckets"]["overrides"]
    assert all(T % 64 == 0 and L % 8 == 0 for _, T, L in rows["buckets"]["batch_shapes"])
    assert any(T % 64 for _, T, _ in rows["eager-fp32"]["batch_shapes"])


def test_train_step_bench_filed_row_is_the_demo_step_issue_32_measured() -> None:
    """The row `filed` is eager-fp32 with the phrases demo's settings of commit 6853428: the
    4x frontend, Adam, no weight decay (every other setting as eager-fp32's)."""
    from s2s.bench import train_step as T

    eager = T.ROWS["eager-fp32"]
    assert T.ROWS["filed"][: len(eager)] == eager
    cfg = load_experiment_config([REPO / "conf/model/tiny.yaml"], T.ROWS["filed"])
    assert cfg.model.encoder.subsampling == "conv2d4"
    assert cfg.train.optim == "adam" and cfg.train.weight_decay == 0.0
    assert cfg.train.optim_impl == "for_loop" and not cfg.train.channels_last
    assert cfg.train.amp == "none" and not cfg.train.compile and cfg.data.bucket_frames == 0


def test_train_step_bench_leaves_bf16_rows_out_without_native_bf16() -> None:
    """By default the bf16 rows run only on a CPU that computes bfloat16 natively (there
    train.amp=auto trains in it); elsewhere bfloat16 is emulated, far slower than float32."""
    from s2s.bench import train_step as T

    assert T.default_rows(True) == T.DEFAULT_ROWS
    assert T.default_rows(False) == ["eager-fp32", "fused", "channels-last", "buckets", "compile"]
