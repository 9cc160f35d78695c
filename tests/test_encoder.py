"""Encoders: frontend length formulas, padding invariance, rel-pos attention math, gradients,
config validation."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from s2s.models.conformer import MaskedBatchNorm1d
from s2s.models.encoder import EncoderConfig, build_encoder
from s2s.models.subsampling import NORM_GAIN, SUBSAMPLINGS, build_frontend
from s2s.models.transformer_encoder import EncoderSelfAttention, rel_shift, relative_positions

F_DIM = 16
SMALL = dict(input_dim=F_DIM, d_model=16, n_heads=2, ffn_dim=32, n_layers=2, conv_kernel=5)

EXPECTED = {  # closed-form output lengths and the shortest input giving >= 1 frame
    "conv2d4": (lambda t: ((t - 1) // 2 - 1) // 2, 7),
    "conv2d6": (lambda t: ((t - 1) // 2 - 2) // 3, 11),
    "conv2d8": (lambda t: (((t - 1) // 2 - 1) // 2 - 1) // 2, 15),
    "conv1d": (lambda t: math.ceil(math.ceil(t / 2) / 2), 1),
    "none": (lambda t: t, 1),
}


@pytest.mark.parametrize("kind", SUBSAMPLINGS)
def test_frontend_lengths_and_shapes(kind: str) -> None:
    formula, min_len = EXPECTED[kind]
    fe = build_frontend(kind, F_DIM, 8, channels=8)
    assert fe.min_input_length == min_len
    for t in range(min_len, 40):
        out, out_lens = fe(torch.randn(1, t, F_DIM), torch.tensor([t]))
        assert out.shape == (1, formula(t), 8), (kind, t)
        assert out_lens.tolist() == [formula(t)]
    # A batch: time dim = the longest output, each length by the formula.
    lens = torch.tensor([39, 23, min_len])
    out, out_lens = fe(torch.randn(3, 39, F_DIM), lens)
    assert out_lens.tolist() == [formula(int(t)) for t in lens]
    assert out.shape[1] == formula(39)


@pytest.mark.parametrize(
    "kind, norm", [("conv2d4", False), ("conv2d6", False), ("conv2d8", False), ("conv2d6", True)]
)
def test_channels_last_frontend_computes_the_nchw_one_and_its_gradients_stay_channels_last(
    kind: str, norm: bool
) -> None:
    """train.channels_last runs the convolutions in NHWC and flattens their output in that
    order (the Linear's columns reordered to match): the same outputs and gradients as the
    NCHW frontend, and the gradient reaching each ReLU arrives in its output's layout (a
    mixed pair takes PyTorch's strided path, several times slower)."""
    torch.manual_seed(0)
    nchw = build_frontend(kind, 40, 16, 8, norm).double()
    nhwc = build_frontend(kind, 40, 16, 8, norm).double()
    nhwc.load_state_dict(nchw.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    x, lens = torch.randn(3, 57, 40, dtype=torch.float64), torch.tensor([57, 40, 31])
    grads = []  # the gradients arriving at the channels-last frontend's ReLUs

    def keep_grad(module, inputs, out) -> None:
        out.register_hook(grads.append)

    for relu in nhwc.conv[1::2]:
        relu.register_forward_hook(keep_grad)
    outs = []
    for fe in (nchw, nhwc):
        y, y_lens = fe(x, lens)
        y.pow(2).sum().backward()
        outs.append((y, y_lens, {n: p.grad for n, p in fe.named_parameters()}))
    (y0, l0, g0), (y1, l1, g1) = outs
    torch.testing.assert_close(y1, y0)
    assert torch.equal(l1, l0)
    for name, g in g0.items():
        torch.testing.assert_close(g1[name], g, msg=name)
    assert len(grads) == len(nhwc.conv) // 2
    for g in grads:
        assert g.is_contiguous(memory_format=torch.channels_last), g.stride()


@pytest.mark.parametrize("kind", ["conv2d4", "conv2d6", "conv2d8"])
def test_normalised_frontend_frames_keep_their_scale_whatever_the_convs_give(kind: str) -> None:
    """subsampling_norm: every frame the frontend gives has zero mean and an RMS of the
    norm's starting gain (NORM_GAIN) over its d_model values at the start of training,
    whatever the input's level: the encoder cannot quieten the speech by shrinking what the
    convs give (what kills their ReLU channels)."""
    torch.manual_seed(0)
    fe = build_frontend(kind, 40, 16, 8, norm=True).double()
    x, lens = torch.randn(2, 57, 40, dtype=torch.float64), torch.tensor([57, 40])
    for level in (1e-3, 1.0, 1e3):
        y, _ = fe(level * x, lens)
        torch.testing.assert_close(y.mean(-1), torch.zeros(y.shape[:2], dtype=y.dtype))
        rms = y.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.full_like(rms, NORM_GAIN), atol=1e-3, rtol=0)


@pytest.mark.parametrize("norm", [False, True])
def test_silent_channels_count_what_each_conv_says_on_valid_frames_only(norm: bool) -> None:
    """Conv2dSubsampling.silent_channels: per conv, the share of channels <= 0 at every valid
    position; a padding frame, whatever it holds, never makes a channel count as heard."""
    torch.manual_seed(0)
    fe = build_frontend("conv2d4", 40, 16, 8, norm).double()
    x, lens = torch.randn(2, 57, 40, dtype=torch.float64), torch.tensor([57, 30])
    with torch.no_grad():
        fe.conv[2].bias[:5] = -1e4  # five channels of the second conv silent
    assert fe.silent_channels(x, lens) == [0.0, 5 / 8]
    with torch.no_grad():
        fe.conv[0].bias[:] = -1e4  # the first conv silent: nothing reaches the second
        fe.conv[2].bias[:] = -1.0
    loud = x.clone()
    loud[1, 30:] = 1e6  # padding of utterance 1
    assert fe.silent_channels(loud, lens) == [1.0, 1.0]


def test_plain_frontend_keeps_the_checkpoint_keys_of_before() -> None:
    """The conv2d frontend without the norm has the parameters it always had, so every
    checkpoint trained before the option loads into it; the norm adds its own two."""
    keys = set(build_frontend("conv2d4", 40, 16, 8).state_dict())
    assert keys == {
        "conv.0.weight",
        "conv.0.bias",
        "conv.2.weight",
        "conv.2.bias",
        "out.weight",
        "out.bias",
    }
    normed = set(build_frontend("conv2d4", 40, 16, 8, norm=True).state_dict())
    assert normed == keys | {"norm.weight", "norm.bias"}


@pytest.mark.parametrize("kind", ["conv2d4", "conv2d6", "conv2d8"])
def test_too_short_input_raises(kind: str) -> None:
    min_len = EXPECTED[kind][1]
    enc = build_encoder(EncoderConfig(subsampling=kind, **SMALL))
    x = torch.randn(2, 30, F_DIM)
    with pytest.raises(ValueError, match=f"minimum input length is {min_len}"):
        enc(x, torch.tensor([30, min_len - 1]))


def test_zero_length_raises_for_every_frontend() -> None:
    for kind in ("conv1d", "none"):
        enc = build_encoder(EncoderConfig(subsampling=kind, **SMALL))
        with pytest.raises(ValueError, match="minimum input length is 1"):
            enc(torch.randn(2, 5, F_DIM), torch.tensor([5, 0]))
    text = build_encoder(EncoderConfig(type="text", **SMALL), vocab_size=10)
    with pytest.raises(ValueError, match="minimum input length is 1"):
        text(torch.ones(2, 5, dtype=torch.long), torch.tensor([5, 0]))


def _inputs(enc_type: str, lens: list[int], vocab: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(lens)
    if enc_type == "text":
        x = torch.randint(4, vocab, (len(lens), T))
        for b, n in enumerate(lens):
            x[b, n:] = 0
    else:
        x = torch.randn(len(lens), T, F_DIM)
        for b, n in enumerate(lens):
            x[b, n:] = 0.0
    return x, torch.tensor(lens)


CASES = [
    (t, p, "conv2d4")
    for t in ("transformer", "conformer", "text")
    for p in ("abs", "rel", "rotary")
]
CASES += [("transformer", "abs", s) for s in ("conv2d6", "conv2d8", "conv1d", "none")]
CASES += [("conformer", "rel", s) for s in ("conv1d", "none")]


@pytest.mark.parametrize("enc_type,pos,sub", CASES)
def test_padded_batch_equals_each_sample_alone(enc_type: str, pos: str, sub: str) -> None:
    enc = build_encoder(EncoderConfig(type=enc_type, pos=pos, subsampling=sub, **SMALL), 11)
    enc.eval()
    lens = [47, 30, 16]
    x, xl = _inputs(enc_type, lens)
    with torch.no_grad():
        out, out_lens = enc(x, xl)
        assert torch.all(out[torch.arange(out.shape[1])[None] >= out_lens[:, None]] == 0)
        for b, n in enumerate(lens):
            alone, alone_lens = enc(x[b : b + 1, :n], xl[b : b + 1])
            assert alone_lens.item() == out_lens[b].item()
            assert alone.shape[1] == alone_lens.item()
            torch.testing.assert_close(out[b, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("enc_type", ["transformer", "conformer", "text"])
@pytest.mark.parametrize("pos", ["abs", "rel"])
def test_padding_content_never_leaks_in_training(enc_type: str, pos: str) -> None:
    """Train mode (dropout 0, so BatchNorm uses batch statistics): garbage in the padding must
    not change a single valid output frame."""
    cfg = EncoderConfig(type=enc_type, pos=pos, subsampling="conv1d", dropout=0.0, **SMALL)
    enc = build_encoder(cfg, 11).train()
    lens = [40, 21]
    x, xl = _inputs(enc_type, lens)
    x2 = x.clone()
    if enc_type == "text":
        x2[1, 21:] = 7
    else:
        x2[1, 21:] = 100.0 * torch.randn(19, F_DIM)
    out, out_lens = enc(x, xl)
    out2, _ = enc(x2, xl)
    n = int(out_lens[1])
    torch.testing.assert_close(out[:, :n], out2[:, :n], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], out2[0], atol=1e-5, rtol=0)


def test_rel_shift_aligns_distance_i_minus_j() -> None:
    T = 6
    x = torch.randn(2, 3, T, 2 * T - 1)
    out = rel_shift(x)
    for i in range(T):
        for j in range(T):
            # column k of x holds distance T-1-k
            assert torch.equal(out[:, :, i, j], x[:, :, i, T - 1 - (i - j)])


def test_rel_attention_matches_explicit_formula() -> None:
    attn = EncoderSelfAttention(d_model=8, n_heads=2, attn_dropout=0.0, pos="rel").eval()
    B, T, H, D = 2, 5, 2, 4
    x = torch.randn(B, T, 8)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    pos_emb = relative_positions(T, 8, x.device)
    out = attn(x, pad, pos_emb)
    q, k, v = attn.qkv(x).view(B, T, 3, H, D).unbind(2)
    ref = torch.zeros(B, T, H, D)
    for b in range(B):
        for i in range(T):
            for h in range(H):
                scores = []
                for j in range(T):
                    p = attn.linear_pos(relative_positions(T, 8, x.device)[T - 1 - (i - j)])
                    p = p.view(H, D)[h]
                    s = (q[b, i, h] + attn.pos_bias_u[h, 0]) @ k[b, j, h]
                    s = s + (q[b, i, h] + attn.pos_bias_v[h, 0]) @ p
                    scores.append(s / math.sqrt(D) if not pad[b, j] else torch.tensor(-math.inf))
                w = torch.stack(scores).softmax(0)
                ref[b, i, h] = (w[:, None] * v[b, :, h]).sum(0)
    ref = attn.out(ref.reshape(B, T, 8))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_masked_batchnorm_uses_valid_frames_only() -> None:
    x = torch.randn(2, 3, 6)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    x[1, :, 4:] = 1e3
    bn = MaskedBatchNorm1d(3).train()
    ref_bn = torch.nn.BatchNorm1d(3).train()
    valid = torch.cat((x[0], x[1, :, :4]), 1)[None]  # (1, 3, 10)
    y = bn(x, pad)
    y_ref = ref_bn(valid)[0]
    torch.testing.assert_close(torch.cat((y[0], y[1, :, :4]), 1), y_ref)
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)


@pytest.mark.parametrize("enc_type", ["transformer", "conformer", "text"])
@pytest.mark.parametrize("pos", ["abs", "rel", "rotary"])
def test_gradients_reach_every_parameter(enc_type: str, pos: str) -> None:
    enc = build_encoder(EncoderConfig(type=enc_type, pos=pos, **SMALL), 11).train()
    x, xl = _inputs(enc_type, [30, 19])
    if enc_type != "text":
        x.requires_grad_(True)
    out, out_lens = enc(x, xl)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if enc_type != "text":
        assert x.grad[1, 19:].abs().sum() == 0  # padding frames influence nothing


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(type="lstm"), "encoder type 'lstm' not in"),
        (dict(subsampling="conv2d5"), "encoder subsampling 'conv2d5' not in"),
        (dict(pos="alibi"), "encoder pos 'alibi' not in"),
        (dict(d_model=30, n_heads=4), "encoder d_model 30 not divisible by 4 heads"),
        (dict(d_model=12, n_heads=4, pos="rotary"), "need an even head dim, got 3"),
        (dict(n_layers=0), "encoder n_layers must be >= 1, got 0"),
        (dict(ffn_dim=0), "encoder ffn_dim must be >= 1, got 0"),
        (dict(dropout=1.0), r"encoder dropout must be in \[0, 1\), got 1\.0"),
        (dict(attn_dropout=-0.1), r"encoder attn_dropout must be in \[0, 1\), got -0\.1"),
        (dict(conv_kernel=4), "encoder conv_kernel must be odd and >= 1, got 4"),
        (dict(conv_kernel=0), "encoder conv_kernel must be odd and >= 1, got 0"),
        (dict(vocab_size=-1), "encoder vocab_size must be >= 0, got -1"),
        (dict(input_dim=10, subsampling="conv2d8"), r"input_dim 10 too small .* \(needs >= 15\)"),
        (dict(input_dim=6, subsampling="conv2d4"), r"input_dim 6 too small .* \(needs >= 7\)"),
        (
            dict(subsampling="conv1d", subsampling_norm=True),
            "subsampling_norm applies to the conv2d frontends, not 'conv1d'",
        ),
    ],
)
def test_invalid_config_raises(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**bad)


def test_structured_config_and_defaults() -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(EncoderConfig), {"pos": "rel", "n_layers": 1})
    enc = build_encoder(cfg)
    x = torch.randn(1, 20, 80)
    out, lens = enc(x, torch.tensor([20]))
    assert out.shape == (1, 4, 256) and lens.tolist() == [4]
    with pytest.raises(ValueError, match=r"expects features \(B, T, 80\), got \(1, 20, 40\)"):
        enc(torch.randn(1, 20, 40), torch.tensor([20]))  # wrong feature dim


def test_text_vocab_size_source() -> None:
    cfg = EncoderConfig(type="text", **SMALL)
    with pytest.raises(ValueError, match="vocab"):
        build_encoder(cfg)
    assert build_encoder(cfg, vocab_size=9).frontend.embed.num_embeddings == 9
    own = EncoderConfig(type="text", vocab_size=13, **SMALL)
    assert build_encoder(own, vocab_size=9).frontend.embed.num_embeddings == 13
    enc = build_encoder(cfg, vocab_size=9)
    with pytest.raises(ValueError, match="token ids"):
        enc(torch.full((1, 3), 9), torch.tensor([3]))
    assert enc.frontend.embed.padding_idx == 0


@pytest.mark.parametrize("sub, channels", [("conv2d4", 8), ("conv2d8", 4), ("conv1d", 6)])
def test_subsampling_channels(sub: str, channels: int) -> None:
    cfg = EncoderConfig(
        input_dim=20,
        d_model=16,
        n_heads=2,
        ffn_dim=32,
        n_layers=1,
        subsampling=sub,
        subsampling_channels=channels,
    )
    enc = build_encoder(cfg)
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d)]
    assert convs[0].out_channels == channels
    x, lens = torch.randn(2, 40, 20), torch.tensor([40, 31])
    out, out_lens = enc(x, lens)
    assert out.shape == (2, int(out_lens.max()), 16)
    with pytest.raises(ValueError, match="subsampling_channels"):
        EncoderConfig(subsampling_channels=-1)
