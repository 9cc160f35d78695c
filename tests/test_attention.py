"""Decoder self-attention: parallel == incremental, padding invariance, cache sizes, MTLA ≡ MLA
at s = 1, hyper-network gradients, bf16, and the backends agree."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import Tensor

from s2s.attention import (
    ATTENTION_REGISTRY,
    VARIANTS,
    AttentionConfig,
    attention_config,
    build_attention,
    sweep_config,
)
from s2s.attention.config import CONFIG_CLASSES
from s2s.attention.mtla import TemporalLatentAttention

REPO = Path(__file__).resolve().parents[1]


def small_cfg(variant: str, stride: int = 2, **kw) -> AttentionConfig:
    """One size for every variant; stride where the variant has one."""
    args = dict(
        d_model=32,
        n_heads=4,
        head_dim=8,
        latent_dim=16,
        rope_dim=4,
        stride=stride,
        backend="sdpa",
    )
    args.update(kw)
    return sweep_config(variant, **args)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (LayerNorm affine and biases too), not the init defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def decode_stepwise(m, x: torch.Tensor, **cache_kw) -> tuple[torch.Tensor, object]:
    cache = m.new_cache(x.shape[0], fill=float("nan"), capacity=1, **cache_kw)
    out = torch.cat([m.step(x[:, t : t + 1], cache) for t in range(x.shape[1])], dim=1)
    return out, cache


@settings(max_examples=25, deadline=None)
@given(
    variant=st.sampled_from(VARIANTS),
    stride=st.integers(1, 4),
    T=st.integers(1, 40),
    B=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_parallel_equals_incremental(variant: str, stride: int, T: int, B: int, seed: int) -> None:
    torch.manual_seed(seed)
    m = build_attention(small_cfg(variant, stride)).eval()
    randomise(m, seed)
    x = torch.randn(B, T, 32)
    with torch.no_grad():
        parallel = m(x)
        incremental, cache = decode_stepwise(m, x)
    assert rel_err(incremental, parallel) <= 1e-5
    slots = math.ceil(T / stride) if variant == "mtla" else T
    assert cache.num_slots().tolist() == [slots] * B


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_every_length_1_to_40(variant: str, stride: int) -> None:
    """Every prefix length at once: step t's output must equal the parallel output at t."""
    m = build_attention(small_cfg(variant, stride)).eval()
    randomise(m, 7)
    x = torch.randn(2, 40, 32)
    with torch.no_grad():
        incremental, _ = decode_stepwise(m, x)
        for T in range(1, 41):
            assert rel_err(incremental[:, :T], m(x[:, :T])) <= 1e-5, T


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_padded_batch_equals_each_alone(variant: str, stride: int) -> None:
    m = build_attention(small_cfg(variant, stride)).eval()
    randomise(m, 3)
    lengths = torch.tensor([9, 4, 1, 7])
    x = torch.randn(4, 9, 32)
    x[torch.arange(9)[None, :] >= lengths[:, None]] = 1e3  # garbage in the padding
    with torch.no_grad():
        batched = m(x, lengths=lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = m(x[b : b + 1, :n])
            assert rel_err(batched[b : b + 1, :n], alone) <= 1e-5
            assert torch.all(batched[b, n:] == 0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_ragged_prefill_then_step(variant: str, stride: int) -> None:
    """A prefix of different length per row, prefilled in parallel, then decoded step by step,
    equals each row's full sequence run in parallel (the prompt arrangement's pattern)."""
    m = build_attention(small_cfg(variant, stride)).eval()
    randomise(m, 11)
    prefix = torch.tensor([5, 2, 7])
    n_new = 6
    full = torch.randn(3, 7 + n_new, 32)
    with torch.no_grad():
        cache = m.new_cache(3, fill=float("nan"))
        m(full[:, :7], lengths=prefix, cache=cache)
        rows = torch.arange(3)
        stepped = torch.stack(
            [m.step(full[rows, prefix + t][:, None], cache)[:, 0] for t in range(n_new)], 1
        )
        for b, p in enumerate(prefix.tolist()):
            ref = m(full[b : b + 1, : p + n_new])[0, p:]
            assert rel_err(stepped[b], ref) <= 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_prefix_keys_values(variant: str, stride: int) -> None:
    """The prefix arrangement inside one attention: keys/values of [frames_b ; x_b], queries at
    x only (positions P_b + j). In a ragged padded batch, target j's output equals position
    P_b + j of the plain causal forward over the row's joint sequence alone, and equals step-by-
    step decoding after `prefill` of the frames into a NaN-poisoned cache."""
    m = build_attention(small_cfg(variant, stride)).eval()
    randomise(m, 17)
    frame_lens, x_lens = torch.tensor([5, 2, 7, 1]), torch.tensor([6, 3, 1, 4])
    frames, x = torch.randn(4, 7, 32), torch.randn(4, 6, 32)
    frames[torch.arange(7)[None] >= frame_lens[:, None]] = 1e3  # padding must not matter
    x[torch.arange(6)[None] >= x_lens[:, None]] = -1e3
    with torch.no_grad():
        out = m(x, x_lens, prefix=frames, prefix_lengths=frame_lens)
        cache = m.new_cache(4, fill=float("nan"), capacity=1)
        m.prefill(frames, frame_lens, cache)
        assert cache.length.tolist() == frame_lens.tolist()
        stepped = torch.cat([m.step(x[:, t : t + 1], cache) for t in range(6)], 1)
        for b, (p, n) in enumerate(zip(frame_lens.tolist(), x_lens.tolist())):
            joint = m(torch.cat((frames[b : b + 1, :p], x[b : b + 1, :n]), 1))[0, p:]
            assert rel_err(out[b, :n], joint) <= 1e-5, b
            assert rel_err(stepped[b, :n], joint) <= 1e-5, b
            assert torch.all(out[b, n:] == 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prefix_flex_matches_sdpa(variant: str) -> None:
    """flex_attention's mask_mod reads the query positions (q_pos) as the boolean mask does."""
    torch.manual_seed(0)
    frame_lens, x_lens = torch.tensor([5, 3]), torch.tensor([4, 2])
    frames, x = torch.randn(2, 5, 32), torch.randn(2, 4, 32)
    outs = []
    for backend in ("sdpa", "flex"):
        m = build_attention(small_cfg(variant, 3, backend=backend)).eval()
        randomise(m, 5)
        with torch.no_grad():
            outs.append(m(x, x_lens, prefix=frames, prefix_lengths=frame_lens))
    assert rel_err(outs[1], outs[0]) <= 1e-5


@pytest.mark.parametrize("ancestry", [False, True])
@pytest.mark.parametrize(("variant", "stride"), [(v, 2) for v in VARIANTS] + [("mtla", 3)])
def test_reorder_follows_beams(variant: str, stride: int, ancestry: bool) -> None:
    """Reordering sequences between steps (as beam search does, repeatedly) == having decoded
    the reordered sequences from scratch; with ancestry no buffer is copied."""
    m = build_attention(small_cfg(variant, stride)).eval()
    randomise(m, 13)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, 32, generator=g)
    with torch.no_grad():
        cache = m.new_cache(4, fill=float("nan"), capacity=1, ancestry=ancestry)
        history = x[:, :0]
        for t in range(9):
            out = m.step(x[:, t : t + 1], cache)
            history = torch.cat([history, x[:, t : t + 1]], 1)
            assert rel_err(out, m(history)[:, -1:]) <= 1e-5, t
            index = torch.randint(0, 4, (4,), generator=g)
            buffers = {k: v.data_ptr() for k, v in cache.buffers.items()}
            cache.reorder(index)
            history = history[index]
            if ancestry:
                assert {k: v.data_ptr() for k, v in cache.buffers.items()} == buffers


@pytest.mark.parametrize("variant", ["mha", "mla", "mtla"])
def test_expand_stores_prefix_once(variant: str) -> None:
    m = build_attention(small_cfg(variant, 3)).eval()
    x = torch.randn(2, 7, 32)
    lengths = torch.tensor([7, 4])
    with torch.no_grad():
        cache = m.new_cache(2, fill=float("nan"), ancestry=True)
        m(x, lengths=lengths, cache=cache)
        cache.expand(3, own_slots=4)
        s = m.stride
        assert cache.length.tolist() == [7, 7, 7, 4, 4, 4]
        # completed chunks once per utterance; an incomplete one per hypothesis (own slot 0)
        assert all(buf.shape[0] == 2 for buf in cache.shared.values())
        assert cache.shared_slots.tolist() == (lengths // s).tolist()
        assert cache.own_slots().tolist() == (lengths % s != 0).long().repeat_interleave(3).tolist()
        assert cache.capacity == 4  # allocated as asked, not grown
        assert cache.used_bytes() < cache.allocated_bytes()
        nxt = torch.randn(6, 1, 32)
        out = m.step(nxt, cache)
        for b, n in enumerate(lengths.tolist()):
            for k in range(3):
                row = b * 3 + k
                ref = m(torch.cat([x[b : b + 1, :n], nxt[row : row + 1]], 1))[:, -1:]
                assert rel_err(out[row : row + 1], ref) <= 1e-5


@pytest.mark.parametrize("groups, queries", [(4, 4), (1, 4), (2, 4)])
def test_attend_with_lse_is_softmax_attention_over_the_valid_slots(
    groups: int, queries: int
) -> None:
    """ops.attend_with_lse in each of its layouts (one query per key head, MHA's own part,
    whose scores stay slot-major; one key head, the latent variants; several queries per
    head) against softmax attention written out per query, in float64: the slots not valid
    hold NaN and weigh nothing, and a row with no valid slot gives 0 and a log-sum-exp of
    -inf. Eager and compiled alike (the compiled step keeps the masks)."""
    from s2s.attention.ops import attend_with_lse

    torch.manual_seed(0)
    B, S, D = 3, 7, 5
    q = torch.randn(B, queries, D, dtype=torch.float64)
    k = torch.randn(B, S, groups, D, dtype=torch.float64)
    v = torch.randn(B, S, groups, D + 1, dtype=torch.float64)
    valid = torch.arange(S)[None, :] < torch.tensor([7, 4, 0])[:, None]
    k[~valid], v[~valid] = float("nan"), float("nan")
    scale = D**-0.5
    want_out = torch.zeros(B, queries, D + 1, dtype=torch.float64)
    want_lse = torch.full((B, queries), float("-inf"), dtype=torch.float64)
    for b in range(B):
        n = int(valid[b].sum())
        for i in range(queries if n else 0):
            g = i // (queries // groups)
            scores = k[b, :n, g] @ q[b, i] * scale
            want_out[b, i] = scores.softmax(0) @ v[b, :n, g]
            want_lse[b, i] = scores.logsumexp(0)
    for fn in (attend_with_lse, torch.compile(attend_with_lse, fullgraph=True, dynamic=False)):
        out, lse = fn(q, k, v, valid, scale)
        torch.testing.assert_close(out, want_out)
        torch.testing.assert_close(lse, want_lse)


@pytest.mark.parametrize("variant", ["mha", "gqa", "mla"])
def test_shared_part_is_stored_head_by_head(variant: str) -> None:
    """The shared slots keep their (U, S, G, D) shape but lie in memory head by head, so the
    step's batched product over each head's slots reads them in place (ops.attend_with_lse):
    after the prefill, the padding of a compiled step and dropping utterances alike; the
    latent slots (one head) stay as they are. The step reads the same values either way."""
    m = build_attention(small_cfg(variant, 1)).eval()
    x = torch.randn(3, 6, 32)
    with torch.no_grad():
        cache = m.new_cache(3, fill=float("nan"), ancestry=True)
        m(x, lengths=torch.tensor([6, 3, 5]), cache=cache)
        cache.expand(2, own_slots=3)

        def head_major(t: Tensor) -> bool:
            if t.shape[2] == 1 or t.dim() < 4:  # one head: the buffer as written
                return t.is_contiguous()
            return t.transpose(1, 2).is_contiguous() and not t.is_contiguous()

        assert all(head_major(t) for t in cache.shared.values())
        nxt = torch.randn(6, 1, 32)
        before = m.step(nxt, copy.deepcopy(cache))
        slot_major = copy.deepcopy(cache)
        slot_major.shared = {k: v.contiguous() for k, v in slot_major.shared.items()}
        assert rel_err(m.step(nxt, slot_major), before) <= 1e-6
        cache.pad_slots(own=5, shared=8)
        assert all(head_major(t) and t.shape[1] == 8 for t in cache.shared.values())
        cache.keep_rows(torch.tensor([0, 1, 4, 5]))
        assert all(head_major(t) and t.shape[0] == 2 for t in cache.shared.values())


def test_mtla_stride_1_is_mla() -> None:
    mla = build_attention(small_cfg("mla")).eval()
    randomise(mla, 5)
    mtla = build_attention(small_cfg("mtla", stride=1)).eval()
    mtla.load_state_dict(mla.state_dict())  # strict: s = 1 has no hyper-network
    x = torch.randn(2, 13, 32)
    with torch.no_grad():
        assert torch.equal(mtla(x), mla(x))
        assert rel_err(decode_stepwise(mtla, x)[0], decode_stepwise(mla, x)[0]) == 0.0


def test_cache_elements_per_token_formulas() -> None:
    H, D, R, Dr = 8, 64, 256, 32
    expected = {"mha": 2 * H * D, "mqa": 2 * D, "gqa": 2 * 2 * D, "mla": R + Dr}
    for variant, n in expected.items():
        m = build_attention({"type": variant}, d_model=512, n_heads=H)
        assert m.cache_elements_per_token() == n
        assert m.new_cache(1).elements_per_token() == n
    for s in (1, 2, 3, 4):
        m = build_attention({"type": "mtla", "stride": s}, d_model=512, n_heads=H)
        assert m.cache_elements_per_token() == pytest.approx((R + Dr) / s)
    # mfa 2C (C = 128), mfa_kr C (C = 256), mlra r + d_r, gla h_c latent heads of 2 d_h plus
    # d_r (h_c = 2), gta h_kv d_h + d_h / 2 (h_kv = 4); and with sizes other than the defaults
    more = {
        ("mfa", ()): 2 * 128,
        ("mfa_kr", ()): 256,
        ("mlra", ()): R + Dr,
        ("gla", ()): 2 * 2 * D + Dr,
        ("gta", ()): 4 * D + D // 2,
        ("mfa", (("kv_dim", 96),)): 2 * 96,
        ("mfa_kr", (("kv_dim", 96),)): 96,
        ("mlra", (("latent_dim", 128), ("blocks", 2))): 128 + Dr,
        ("gla", (("latent_heads", 4),)): R + Dr,
        ("gta", (("n_kv_heads", 2),)): 2 * D + D // 2,
    }
    for (variant, sizes), n in more.items():
        m = build_attention({"type": variant, **dict(sizes)}, d_model=512, n_heads=H)
        assert m.cache_elements_per_token() == n, (variant, sizes)
        assert m.new_cache(1).elements_per_token() == n


@pytest.mark.parametrize("stride", [2, 3])
def test_mtla_slot_is_weighted_sum_of_chunk(stride: int) -> None:
    """The cache slot of chunk m equals sum_j w_j c_j over its tokens, with the last token's
    rotated RoPE key: the definition, checked against the module's own pieces."""
    m = build_attention(small_cfg("mtla", stride)).eval()
    assert isinstance(m, TemporalLatentAttention)
    T = 7
    x = torch.randn(1, T, 32)
    with torch.no_grad():
        _, cache = decode_stepwise(m, x)
        pos = torch.arange(T)[None]
        c, k_rope = m._latent(x, pos)
        w = m.merge_weight(c, pos)
        for slot in range(math.ceil(T / stride)):
            js = range(slot * stride, min(slot * stride + stride, T))
            want_c = sum(w[0, j] * c[0, j] for j in js)
            got = cache.buffers["kv"][0, slot]
            torch.testing.assert_close(got[:16], want_c, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got[16:], k_rope[0, max(js)])


def test_gradients_reach_hyper_network() -> None:
    m = build_attention(small_cfg("mtla", stride=2, dropout=0.1)).train()
    x = torch.randn(2, 9, 32, requires_grad=True)
    m(x, lengths=torch.tensor([9, 6])).square().mean().backward()
    for name in ("hyper_pe", "hyper_latent"):
        for p in getattr(m, name).parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_forward_close_to_float32(variant: str) -> None:
    m = build_attention(small_cfg(variant, 2)).eval()
    x = torch.randn(2, 12, 32)
    with torch.no_grad():
        ref = m(x)
        out = m.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 3e-2


@pytest.mark.parametrize("variant", ["mha", "gqa", "mla", "mtla"])
def test_flex_backend_matches_sdpa(variant: str) -> None:
    """The flex_attention mask_mod path computes what the boolean-mask SDPA path computes."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    m = build_attention(small_cfg(variant, 3)).eval()
    x = torch.randn(2, 10, 32)
    lengths = torch.tensor([10, 6])
    with torch.no_grad():
        ref = m(x, lengths=lengths)
        m.cfg.backend = "flex"
        out = m(x, lengths=lengths)
    assert rel_err(out, ref) <= 1e-5


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        attention_config({"type": "mhaa"})
    with pytest.raises(ValueError, match="gqa"):
        build_attention({"type": "gqa", "n_kv_heads": 3}, d_model=64, n_heads=8)
    with pytest.raises(ValueError, match="stride"):
        attention_config({"type": "mtla", "stride": 0})
    with pytest.raises(ValueError, match="conflicts"):
        build_attention({"type": "mha", "d_model": 32}, d_model=64, n_heads=4)
    with pytest.raises(ValueError, match="not set"):
        build_attention({"type": "mha"})
    built = build_attention(OmegaConf.create({"type": "mtla", "stride": 3}), 64, 4)
    assert built.stride == 3 and built.head_dim == 16
    # the paper's ratios by default: r = d / 2, d_r = d_h / 2
    assert (built.cfg.latent_dim, built.cfg.rope_dim) == (32, 8)


@pytest.mark.parametrize(
    ("cfg", "bad"),
    [
        ({"type": "mha", "stride": 2}, "stride"),
        ({"type": "mla", "stride": 2}, "stride"),
        ({"type": "mha", "latent_dim": 64}, "latent_dim"),
        ({"type": "mqa", "n_kv_heads": 2}, "n_kv_heads"),
        ({"type": "mtla", "strid": 3}, "strid"),  # a typo
    ],
)
def test_key_the_variant_does_not_use_is_an_error(cfg: dict, bad: str) -> None:
    """Each variant takes its own keys: anything else names the variant and the key."""
    with pytest.raises(ValueError, match=rf"attention type '{cfg['type']}' does not use '{bad}'"):
        attention_config(cfg)


def test_every_variant_registers_class_and_config_together() -> None:
    for name in VARIANTS:
        cfg = attention_config({"type": name})
        assert type(cfg) is CONFIG_CLASSES[name] and cfg.type == name
        m = build_attention(cfg, d_model=64, n_heads=8)
        assert isinstance(m, ATTENTION_REGISTRY[name])


@pytest.mark.parametrize("yaml", sorted((REPO / "conf" / "attention").glob("*.yaml")), ids=str)
def test_attention_yaml_builds_its_variant_after_a_model_yaml(yaml: Path) -> None:
    """conf/attention/<name>.yaml merged after a model YAML builds that variant with its own
    config class: the experiment schema must not be typed after the default variant."""
    from s2s.experiment import load_experiment_config
    from s2s.models.decoder import Decoder

    cfg = load_experiment_config([REPO / "conf" / "model" / "tiny.yaml", yaml])
    dec_cfg = cfg.model.decoder
    name = dec_cfg.self_attention().type
    assert name == yaml.stem
    assert type(dec_cfg.self_attention()) is CONFIG_CLASSES[name]
    dec = Decoder(dec_cfg, vocab_size=11, memory_dim=dec_cfg.d_model)
    assert all(type(layer.self_attn) is ATTENTION_REGISTRY[name] for layer in dec.layers)
    with pytest.raises(ValueError, match="does not use"):
        other = "stride" if name != "mtla" else "n_kv_heads"
        load_experiment_config(
            [REPO / "conf" / "model" / "tiny.yaml", yaml], [f"model.decoder.attention.{other}=2"]
        )


def test_pack_prefix_mixed_dtypes_under_autocast() -> None:
    """bf16 frames (a Linear under autocast) and float32 targets pack into float32."""
    from s2s.attention.packing import pack_prefix

    prefix, x = torch.randn(2, 3, 8).bfloat16(), torch.randn(2, 2, 8)
    seq, lens, where = pack_prefix(prefix, torch.tensor([3, 1]), x, torch.tensor([2, 1]))
    assert seq.dtype == torch.float32 and lens.tolist() == [5, 2]
    assert torch.equal(seq[0, :3], prefix[0].float()) and torch.equal(seq[1, 1], x[1, 0])


@settings(max_examples=20, deadline=None)
@given(
    variant=st.sampled_from(sorted(VARIANTS)),
    ancestry=st.booleans(),
    prefix=st.booleans(),
    steps=st.integers(1, 6),
    kept=st.lists(st.booleans(), min_size=3, max_size=3).filter(any),
    seed=st.integers(0, 2**16),
)
def test_keeping_rows_continues_the_same_sequences(
    variant: str, ancestry: bool, prefix: bool, steps: int, kept: list[bool], seed: int
) -> None:
    """keep_rows (beam search dropping the utterances it has finished): after any reorders,
    the next step of the kept rows over the kept cache equals that of the same rows over the
    whole cache; the slots not in use stay unread (the buffers start as NaN)."""
    m = build_attention(small_cfg(variant, 2)).eval()
    randomise(m, seed)
    g = torch.Generator().manual_seed(seed)
    U, K = 3, 2
    with torch.no_grad():
        cache = m.new_cache(U, fill=float("nan"), capacity=1, ancestry=ancestry)
        if prefix:  # frames of different lengths, shared per utterance
            lengths = torch.tensor([5, 2, 4])
            m(torch.randn(U, 5, 32, generator=g), lengths=lengths, cache=cache)
        cache.expand(K, own_slots=steps + 2)
        for _ in range(steps):
            m.step(torch.randn(U * K, 1, 32, generator=g), cache)
            cache.reorder(
                (torch.arange(U)[:, None] * K + torch.randint(0, K, (U, K), generator=g)).view(-1)
            )
        utts = torch.tensor([u for u in range(U) if kept[u]])
        rows = (utts[:, None] * K + torch.arange(K)).view(-1)
        x = torch.randn(U * K, 1, 32, generator=g)
        kept_cache = copy.deepcopy(cache)
        kept_cache.keep_rows(rows)
        want = m.step(x, cache)[rows]
        got = m.step(x[rows], kept_cache)
    assert torch.isfinite(got).all()
    assert torch.equal(kept_cache.length, cache.length[rows])
    assert rel_err(got, want) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("heads", [0, 3])
def test_rope_rotates_each_pair_by_position_times_frequency(
    dtype: torch.dtype, heads: int, monkeypatch
) -> None:
    """apply_rope (one complex product) against the rotation written out in float64, on a
    non-contiguous slice as the decoupled-RoPE variants pass it; the written-out path that
    compiled graphs and ONNX export trace gives the same; position 0 is the identity."""
    from s2s.attention.positions import apply_rope

    torch.manual_seed(0)
    B, T, D = 2, 5, 8
    shape = (B, T, heads, 3 + D) if heads else (B, T, 3 + D)
    x = (torch.randn(shape, dtype=torch.float64) * 4).to(dtype)[..., 3:]  # a strided slice
    pos = torch.tensor([[0, 1, 2, 7, 300], [9, 40, 41, 1000, 5]])
    freq = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = pos.double()[..., None] * freq  # (B, T, D / 2)
    if heads:
        angle = angle[:, :, None]
    x1, x2 = x.double()[..., 0::2], x.double()[..., 1::2]
    want = torch.stack(
        (x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()), -1
    ).flatten(-2)
    got = apply_rope(x, pos)
    assert got.dtype == dtype and got.shape == x.shape
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(got.double(), want.to(dtype).double(), rtol=tol, atol=tol)
    assert torch.equal(got[0, 0], x[0, 0])  # angle 0
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(apply_rope(x, pos).double(), got.double(), rtol=tol, atol=tol)


def test_position_tables_hold_what_the_formulas_give(monkeypatch) -> None:
    """On the CPU, RoPE rotations and sinusoidal encodings are read from tables grown past the
    largest position asked for: the values the formulas compute, for positions beyond the
    first table's size too; negative (relative) positions are computed; a table made under
    inference_mode serves a training forward and its backward."""
    from s2s.attention import positions as P

    monkeypatch.setattr(P, "_TABLES", {})
    pos = torch.tensor([[0, 3, 1023], [1024, 5000, 7]])
    assert P._lookup("sin", 12, 10000.0, torch.float32, pos) is not None
    assert torch.equal(
        P.sinusoidal_encoding(pos, 12), P._sinusoidal(pos, 12, 10000.0, torch.float32)
    )
    assert P._TABLES[("sin", 12, 10000.0, torch.float32)].shape[0] >= 5001
    rel = torch.arange(4, -5, -1)
    assert torch.equal(
        P.sinusoidal_encoding(rel, 12), P._sinusoidal(rel, 12, 10000.0, torch.float32)
    )
    far = torch.tensor([[3, P._LAST_TABLE]])  # past the largest table: computed, none grown
    assert P._lookup("sin", 12, 10000.0, torch.float32, far) is None
    assert torch.equal(
        P.sinusoidal_encoding(far, 12), P._sinusoidal(far, 12, 10000.0, torch.float32)
    )
    assert P._TABLES[("sin", 12, 10000.0, torch.float32)].shape[0] <= P._LAST_TABLE
    for dtype in (torch.float32, torch.float64):
        rot = P._lookup("rope", 8, 10000.0, dtype, pos)
        assert torch.equal(rot, torch.complex(*P.rope_angles(pos, 8, 10000.0, dtype)))
    monkeypatch.setattr(P, "_TABLES", {})
    x = torch.randn(2, 3, 8)
    with torch.inference_mode():
        want = P.apply_rope(x, pos[:, :3])
    x.requires_grad_()
    out = P.apply_rope(x, pos[:, :3])
    assert torch.equal(out, want)
    out.pow(2).sum().backward()  # a rotation keeps norms: d/dx |R x|^2 = 2 x
    torch.testing.assert_close(x.grad, 2 * x.detach())
