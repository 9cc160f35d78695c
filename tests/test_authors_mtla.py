"""Our MTLA against the authors' (PyPI `mtla` 0.3.2, mtla/MTLA.py), weights mapped, with the
prefix arrangement's frames: the parallel forward and token-by-token decoding agree to 1e-5
relative error in float32 for s = 2, 3, 4.

Their module is loaded from the installed wheel's file alone: the package's __init__ imports
its Hugging Face model, which needs `transformers` (left out of our lock). `mtla` is a test-only
entry of requirements/lock.txt; s2s never imports it.

Where we differ on purpose (not exercised here):
- s = 1: ours is exactly MLA. Theirs keeps the hyper-network's weight on every token, and its
  incremental path only opens a new slot when T % s == 1, which never holds at s = 1, so every
  decoded token is summed into the last slot.
- padding: we pack [frames_b ; targets_b] per sample, so padded frames never enter a chunk and
  chunks count from each sample's first frame; theirs chunks the padded joint sequence and only
  masks padded keys in the scores (a padded frame's latent is summed into a slot), and its
  incremental path takes one decode position for the whole batch. The comparison therefore
  uses equal lengths within a batch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest
import torch

from s2s.attention import build_attention
from s2s.attention.mtla import MTLAConfig, TemporalLatentAttention

D_MODEL, HEADS, HEAD_DIM, RANK, ROPE = 64, 4, 16, 32, 8


def load_authors_module():
    spec = importlib.util.find_spec("mtla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the authors' `mtla` package is not installed (make test installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "MTLA.py"
    mod_spec = importlib.util.spec_from_file_location("_authors_mtla", path)
    module = importlib.util.module_from_spec(mod_spec)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a flash_attn warning
        mod_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def authors():
    return load_authors_module()


def pair(authors, stride: int, seed: int = 0):
    """Their module with random weights, and ours carrying the same weights."""
    torch.manual_seed(seed)
    theirs = authors.MultiheadTemporalLatentAttention(
        embed_dim=D_MODEL,
        num_heads=HEADS,
        kv_lora_rank=RANK,
        qk_nope_head_dim=HEAD_DIM,
        qk_rope_head_dim=ROPE,
        v_head_dim=HEAD_DIM,
        down_rate=stride,
    ).eval()
    with torch.no_grad():
        for p in theirs.parameters():  # their init leaves LayerNorm at 1/0: randomise all
            p.copy_(torch.randn(p.shape) * 0.3)
    cfg = MTLAConfig(
        d_model=D_MODEL,
        n_heads=HEADS,
        head_dim=HEAD_DIM,
        latent_dim=RANK,
        rope_dim=ROPE,
        stride=stride,
        backend="sdpa",
    )
    ours = build_attention(cfg).eval()
    assert isinstance(ours, TemporalLatentAttention)
    map_weights(theirs, ours)
    return theirs, ours


def map_weights(theirs, ours: TemporalLatentAttention) -> None:
    """Their names and layouts onto ours. Their projections have no bias (ours are zeroed);
    wkv_b stacks [W_uk ; W_uv] per head; their hyper-network's sinusoidal encoding interleaves
    sin/cos (pe[2i] = sin, pe[2i+1] = cos) where ours concatenates [sin ; cos], so the input
    columns of A (their fc_c, applied to the encoding) are permuted."""
    H, D, R = HEADS, HEAD_DIM, RANK
    with torch.no_grad():
        ours.q_proj.weight.copy_(theirs.wq.weight)
        ours.dkv_proj.weight.copy_(theirs.wkv_a.weight)
        ours.kv_norm.load_state_dict(theirs.kv_norm.state_dict())
        wkv_b = theirs.wkv_b.weight.view(H, 2 * D, R)
        ours.uk_proj.weight.copy_(wkv_b[:, :D].reshape(H * D, R))
        ours.uv_proj.weight.copy_(wkv_b[:, D:].reshape(H * D, R))
        ours.out_proj.weight.copy_(theirs.wo.weight)
        for bias in (ours.q_proj.bias, ours.dkv_proj.bias, ours.out_proj.bias):
            bias.zero_()
        fc_c, fc_p = theirs.hypernet_down.fc_c, theirs.hypernet_down.fc_p
        half = R // 2
        order = torch.cat((torch.arange(0, R, 2), torch.arange(1, R, 2)))  # [sin cols; cos cols]
        assert order.numel() == 2 * half
        ours.hyper_pe.weight.copy_(fc_c.weight[:, order])
        ours.hyper_pe.bias.copy_(fc_c.bias)
        ours.hyper_latent.load_state_dict(fc_p.state_dict())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def their_parallel(theirs, frames: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Their training path as MTLADecoderOnlyLayer calls it: queries = targets, keys/values =
    [frames ; targets], frames visible to every target (zeros prepended to the causal mask),
    positions 0..P+L-1; their module adds its stride-aware mask over the joint sequence."""
    B, P, _ = frames.shape
    L = x.shape[1]
    causal = torch.full((L, L), float("-inf")).triu(1)
    mask = torch.cat((torch.zeros(L, P), causal), 1)
    pos = torch.arange(P + L, dtype=torch.float).expand(B, -1)
    y = torch.cat((frames, x), 1)
    return theirs(x, y, y, self_attn_mask=mask, position=pos)


def their_incremental(theirs, frames: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Their decoding as fairseq drives it: the first call sees [frames ; first target]
    (compressing the frames into slots), every later call one target at position P + t."""
    B, P, _ = frames.shape
    state: dict = {}
    outs = []
    for t in range(x.shape[1]):
        if t == 0:
            y = torch.cat((frames, x[:, :1]), 1)
            pos = torch.arange(P + 1, dtype=torch.float).expand(B, -1)
        else:
            y = x[:, t : t + 1]
            pos = torch.full((B, 1), float(P + t))
        outs.append(theirs(x[:, t : t + 1], y, y, position=pos, incremental_state=state))
    return torch.cat(outs, 1)


@pytest.mark.parametrize("stride", [2, 3, 4])
@pytest.mark.parametrize("n_frames", [9, 12])
def test_parallel_forward_matches_authors(authors, stride: int, n_frames: int) -> None:
    theirs, ours = pair(authors, stride)
    frames, x = torch.randn(2, n_frames, D_MODEL), torch.randn(2, 7, D_MODEL)
    with torch.no_grad():
        ref = their_parallel(theirs, frames, x)
        out = ours(x, prefix=frames)
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("stride", [2, 3, 4])
@pytest.mark.parametrize("n_frames", [9, 12])
def test_token_by_token_matches_authors(authors, stride: int, n_frames: int) -> None:
    theirs, ours = pair(authors, stride, seed=1)
    frames, x = torch.randn(2, n_frames, D_MODEL), torch.randn(2, 7, D_MODEL)
    with torch.no_grad():
        ref = their_incremental(theirs, frames, x)
        cache = ours.new_cache(2, fill=float("nan"))
        ours.prefill(frames, None, cache)
        out = torch.cat([ours.step(x[:, t : t + 1], cache) for t in range(x.shape[1])], 1)
        # their decode slots: ceil((P + L) / s), as ours
        assert cache.num_slots().tolist() == [-(-(n_frames + 7) // stride)] * 2
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(out, ours(x, prefix=frames)) <= 1e-5


@pytest.mark.parametrize("stride", [2, 3])
def test_their_module_trains_in_our_decoder_with_our_weights(authors, stride: int) -> None:
    """s2s.bench.authors.use_authors_modules (the side-by-side training of BENCHMARKS §6):
    their module, given our weights, computes our forward and reports our merge weights
    (equal lengths; our biases zeroed, theirs has none), and gradients reach every weight."""
    from types import SimpleNamespace

    from s2s.attention.probe import probe
    from s2s.bench.authors import AuthorsPrefixTraining, use_authors_modules

    _, ours = pair(authors, stride)
    layer = SimpleNamespace(self_attn=ours)
    use_authors_modules(SimpleNamespace(decoder=SimpleNamespace(layers=[layer])), authors)
    theirs = layer.self_attn
    assert isinstance(theirs, AuthorsPrefixTraining)
    torch.manual_seed(1)
    B, P, L = 2, 7, 5
    frames, x = torch.randn(B, P, D_MODEL), torch.randn(B, L, D_MODEL)
    kw = dict(prefix=frames, prefix_lengths=torch.full((B,), P))
    lens = torch.full((B,), L)
    with probe() as found:
        want = ours(x, lens, **kw)
        got = theirs(x, lens, **kw)
    assert rel_err(got, want) < 1e-5
    torch.testing.assert_close(found.of(theirs)["merge_weight"], found.of(ours)["merge_weight"])
    got.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in theirs.parameters())


def test_an_inspection_reads_their_merge_weights_and_the_monitor_its_stats(authors) -> None:
    """A prefix MTLA model whose layers run their module: Seq2SeqModel.inspect returns their
    merge weights (their module reports no probabilities, so no figure is drawn) and the
    monitor writes its merge statistics from them."""
    from helpers import text_batch

    from s2s.bench.authors import use_authors_modules
    from s2s.experiment import build_model, load_experiment_config
    from s2s.train.monitor import MonitorConfig, TrainingMonitor

    root = Path(__file__).resolve().parents[1]
    overrides = [
        "model.decoder.arrangement=prefix",
        "model.decoder.attention.type=mtla",
        "model.decoder.attention.stride=2",
        "model.decoder.n_layers=2",
    ]
    cfg = load_experiment_config([root / "conf" / "model" / "tiny_text.yaml"], overrides)
    torch.manual_seed(0)
    model = build_model(cfg, 40)
    use_authors_modules(model, authors)
    model.eval()
    batch = text_batch([7, 9], [5, 6])
    seen = model.inspect(batch)
    assert seen.self_attention is None and seen.merge_weights is not None
    valid, is_frame = seen.key_masks()
    assert all(w.shape == valid.shape for w in seen.merge_weights)
    assert all(((w[valid] > 0) & (w[valid] < 1)).all() for w in seen.merge_weights)

    class Board:
        def __init__(self) -> None:
            self.images: list[str] = []
            self.scalars_seen: dict[str, float] = {}

        def image(self, tag, img, step) -> None:
            self.images.append(tag)

        def scalars(self, values, step) -> None:
            self.scalars_seen |= values

        def histogram(self, tag, values, step) -> None:
            pass

    board = Board()
    TrainingMonitor(MonitorConfig(), None, [batch]).on_validate(model, 1, board)
    assert not board.images
    assert {"merge/layer1/frames_mean", "merge/layer1/targets_mean"} <= set(board.scalars_seen)
