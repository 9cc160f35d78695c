"""decode.compile (s2s.decode.compiled): the decoder's and the LM's step compiled with
fullgraph=True finds what the eager step finds, for every registered variant in every
arrangement, with CTC and an LM, and a second batch in the same shape bucket reuses the graphs.

The comparisons run the models in float64. The compiled graph adds in other orders than eager
(and attends over the whole allocation, the unused slots masked), so scores differ in their
last bits; in float64 (attention, RoPE and the merge weights included: they compute in at
least the model's precision) that is about 1e-16 relative, while the scores a search compares
here are apart by far more, so the n-best lists are compared exactly and the scores to 1e-9.
In float32 the same exact comparison would rest on rounding (about 1e-7), which no test should.
The CTC prefix scores run eagerly on both sides (float32, the same bits).

Most tests compile with `aot_eager` (dynamo's capture and AOT functionalisation, no code
generation: seconds, not minutes, on two cores); a backend that counts its calls shows that a
graph was compiled at all, so a silent fallback to eager would fail them. One test runs the
default backend, inductor, end to end.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from helpers import BOS, EOS, V, make_decoder, make_lm

import s2s.attention.ops as ops
import s2s.decode.compiled
from s2s.attention import VARIANTS
from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.decode.compare import Lockstep
from s2s.decode.compiled import CompiledStep, bucket, compile_scorers
from s2s.decode.ctc_prefix import CTCPrefixScorer
from s2s.decode.scorer_set import search_scorers
from s2s.decode.scorers import DecoderScorer, LMScorer
from s2s.models.decoder import ARRANGEMENTS


class Counting:
    """A torch.compile backend that counts the graphs handed to it and runs them through
    aot_eager."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        from torch._dynamo.backends.registry import lookup_backend

        self.graphs += 1
        return lookup_backend("aot_eager")(gm, example_inputs)


@pytest.fixture(autouse=True)
def _fresh_dynamo(monkeypatch):
    torch._dynamo.reset()  # no graph of another test in the cache or the recompile count
    # nor a record of what those graphs were packed for (a search packing for the other GEMM
    # library drops the process's graphs)
    monkeypatch.setattr(s2s.decode.compiled, "_PACKED_FOR", [])
    yield
    torch._dynamo.reset()


def _stride(variant: str) -> int:
    return 2 if variant == "mtla" else 1


def _inputs(U: int = 2, S: int = 9, lens: list[int] | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(U, S, 24, generator=g, dtype=torch.float64)
    lengths = torch.tensor(lens or [S, S - 3][:U])
    ctc = torch.randn(U, S, V, generator=g, dtype=torch.float64).log_softmax(-1)
    return memory, lengths, ctc


def _search(dec, lm, memory, lens, ctc, cfg, compiled=None) -> tuple[list, int]:
    """n-best lists and peak cache bytes of one search with CTC and the LM; compiled: None
    (eager) or (backend, per_octave)."""
    scorers = search_scorers(
        cfg,
        DecoderScorer(dec),
        ctc=CTCPrefixScorer(lambda m: ctc, 0, EOS),
        lm=LMScorer(lm),
    )
    if compiled is not None:
        scorers = compile_scorers(scorers, compiled[1], backend=compiled[0])
    stats: dict = {}
    hyps = beam_search(scorers, memory, lens, cfg, bos_id=BOS, eos_id=EOS, stats=stats)
    return hyps, stats["peak_cache_bytes"]


def _assert_same(got: list, want: list) -> None:
    assert [[h.tokens for h in n] for n in got] == [[h.tokens for h in n] for n in want]
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert a.score == pytest.approx(b.score, rel=1e-9, abs=1e-9)


CFG = BeamSearchConfig(beam_size=3, nbest=3, max_len_b=6, ctc_weight=0.3, lm_weight=0.3)


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_step_equals_eager(variant: str, arrangement: str) -> None:
    """Exact shapes (no bucket padding): the same n-best lists, the same peak cache bytes, and
    two graphs compiled (the decoder's step and the LM's), without a graph break."""
    s = _stride(variant)
    dec = make_decoder(arrangement, variant, s, seed=1).double()
    lm = make_lm(variant, s, seed=2).double()
    memory, lens, ctc = _inputs()
    want, want_bytes = _search(dec, lm, memory, lens, ctc, CFG)
    backend = Counting()
    got, got_bytes = _search(dec, lm, memory, lens, ctc, CFG, (backend, 0))
    _assert_same(got, want)
    assert got_bytes == want_bytes
    assert backend.graphs == 2


def test_same_bucket_reuses_the_graphs() -> None:
    """With one size per octave (powers of two), 3 and 4 utterances both take 4, 11 and 13
    frames 16, 5 and 6 shared slots 8: the second batch (other lengths, other utterances)
    compiles nothing and still finds what eager finds; a batch outside the bucket (5
    utterances: 8) compiles anew. The padding is memory the compiled search allocates, and
    reports."""
    dec = make_decoder("prefix", "mtla", 2, seed=1).double()
    lm = make_lm("mtla", 2, seed=2).double()
    backend = Counting()
    seen = []
    for U, S, lens, seed in [(3, 11, [11, 7, 4], 0), (4, 13, [13, 12, 5, 9], 1), (5, 13, None, 2)]:
        memory, lengths, ctc = _inputs(U, S, lens or [13] * U, seed)
        want, want_bytes = _search(dec, lm, memory, lengths, ctc, CFG)
        got, got_bytes = _search(dec, lm, memory, lengths, ctc, CFG, (backend, 1))
        _assert_same(got, want)
        assert got_bytes >= want_bytes
        seen.append(backend.graphs)
    assert seen[0] == 2 and seen[1] == 2  # decoder + LM, once for both batches
    assert seen[2] == 4  # 5 utterances: bucket 8, new shapes


@pytest.mark.slow
@pytest.mark.parametrize(("arrangement", "variant"), [("cross", "mha"), ("prefix", "mtla")])
def test_inductor_step_equals_eager(arrangement: str, variant: str) -> None:
    """The default backend (inductor's generated code, the weights frozen into it on the CPU)
    with the default buckets (padded rows, slots and frames): the same n-best lists as eager.
    Weights changed in place after compiling (as training further would) are not the frozen
    ones: the next compiled search compiles again and finds what eager finds with the new
    weights (the scores would differ by far more than 1e-9 with the old ones)."""
    s = _stride(variant)
    dec = make_decoder(arrangement, variant, s, seed=1).double()
    lm = make_lm(variant, s, seed=2).double()
    memory, lens, ctc = _inputs(3, 11, [11, 8, 5])
    want, _ = _search(dec, lm, memory, lens, ctc, CFG)
    got, _ = _search(dec, lm, memory, lens, ctc, CFG, ("inductor", 8))
    _assert_same(got, want)
    if variant == "mtla":
        with torch.no_grad():
            for p in dec.parameters():
                p.mul_(1.25)
        want, _ = _search(dec, lm, memory, lens, ctc, CFG)
        got, _ = _search(dec, lm, memory, lens, ctc, CFG, ("inductor", 8))
        _assert_same(got, want)


def test_frozen_weights_recompile_only_when_changed(monkeypatch) -> None:
    """With the weights frozen (as on the CPU with inductor; here through the counting backend,
    seconds instead of minutes), a second search over unchanged weights compiles nothing;
    `load_state_dict` of other weights drops the compiled graphs, once, and the next search
    compiles again and finds what eager finds with the new weights; a second model of the
    same architecture drops nothing."""
    import s2s.decode.compiled as C

    monkeypatch.setattr(C, "freezes", lambda backend, device: True)
    resets = []
    reset = torch._dynamo.reset
    monkeypatch.setattr(torch._dynamo, "reset", lambda: (resets.append(1), reset()))
    dec = make_decoder("cross", "mla", 1, seed=1).double()
    other = make_decoder("cross", "mla", 1, seed=3).double()
    memory, lens, _ = _inputs()
    cfg = BeamSearchConfig(beam_size=2, nbest=2, max_len_b=5)
    backend = Counting()

    def search(model):
        scorers = compile_scorers(search_scorers(cfg, DecoderScorer(model)), 0, backend=backend)
        return beam_search(scorers, memory, lens, cfg, bos_id=BOS, eos_id=EOS)

    search(dec)
    search(dec)
    assert backend.graphs == 1 and not resets
    search(other)  # dynamo's guards tell the models apart: a graph of its own, no drop
    assert backend.graphs == 2 and not resets
    dec.load_state_dict(other.state_dict())
    got = search(dec)
    assert len(resets) == 1 and backend.graphs == 3
    _assert_same(got, beam_search(search_scorers(cfg, DecoderScorer(dec)), memory, lens, cfg,
                                  bos_id=BOS, eos_id=EOS))  # fmt: skip
    search(dec)
    assert len(resets) == 1 and backend.graphs == 3


def test_a_graph_break_is_an_error(monkeypatch) -> None:
    """Negative control for fullgraph: a step that branches in Python on a tensor's value (a
    host read, as the eager path's checks of a growable cache make) is refused with an error,
    not split into graphs around the read and run half eagerly."""

    def branching(num_slots: torch.Tensor, columns: int) -> int:
        return columns if bool((num_slots > 0).all()) else 1

    monkeypatch.setattr(ops, "slots_in_use", branching)
    dec = make_decoder("cross", "mha", 1, seed=1).double()
    memory, lens, _ = _inputs()
    cfg = BeamSearchConfig(beam_size=2, max_len_b=4)
    backend = Counting()
    scorers = compile_scorers(search_scorers(cfg, DecoderScorer(dec)), 0, backend=backend)
    with pytest.raises(torch._dynamo.exc.Unsupported):
        beam_search(scorers, memory, lens, cfg, bos_id=BOS, eos_id=EOS)
    assert backend.graphs == 0


def test_what_compiles_and_what_not() -> None:
    """decode.compile wraps the decoder and the LM, not the CTC prefix scorer, an ONNX-style
    decoder or the lockstep; it needs the lean engine and a valid bucket count."""
    cfg = BeamSearchConfig(beam_size=2, ctc_weight=0.5, lm_weight=0.1, compile=True)
    dec = make_decoder("cross", "mha", 1)
    ctc = CTCPrefixScorer(lambda m: None, 0, EOS)
    got = search_scorers(cfg, DecoderScorer(dec), ctc=ctc, lm=LMScorer(make_lm()))
    assert isinstance(got["decoder"].scorer, CompiledStep)
    assert isinstance(got["lm"].scorer, CompiledStep)
    assert got["ctc"].scorer is ctc
    lockstep = Lockstep(dec, make_decoder("cross", "mha", 1))
    plain = search_scorers(BeamSearchConfig(compile=True), lockstep)
    assert plain["decoder"].scorer is lockstep
    memory, lens, _ = _inputs()
    with pytest.raises(ValueError, match="lean engine"):
        beam_search(got, memory.float(), lens, cfg, bos_id=BOS, eos_id=EOS, engine="naive")
    with pytest.raises(ValueError, match="compile_buckets"):
        BeamSearchConfig(compile_buckets=-1)


def test_buckets() -> None:
    """per_octave sizes per power of two: small sizes exact, the padding less than
    1 / per_octave of the size above; 0 keeps every size."""
    assert [bucket(n) for n in (1, 5, 16, 17, 61, 100, 128, 300)] == [
        1, 5, 16, 18, 64, 104, 128, 320,
    ]  # fmt: skip
    assert all(n <= bucket(n) < n * 9 / 8 for n in range(1, 2000))
    assert len({bucket(n) for n in range(65, 129)}) == 8
    assert [bucket(n, 1) for n in (3, 4, 5, 11, 13)] == [4, 4, 8, 16, 16]
    assert bucket(300, 0) == 300


def test_compile_mode_is_checked() -> None:
    assert BeamSearchConfig(compile=True, compile_mode="reduce-overhead").compile_mode
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        BeamSearchConfig(compile=True, compile_mode="max-autotune")


# --- decode.compile_gemm: whose packed GEMM computes the frozen graphs' float32 Linears ------

_PACKED_OPS = {"mkl": "_mkl_linear", "onednn": "_linear_pointwise"}


def _assert_packed_for(code: str, gemm: str) -> None:
    """Generated code calls `gemm`'s packed GEMM and not the other library's."""
    other = next(name for name in _PACKED_OPS if name != gemm)
    assert _PACKED_OPS[gemm] in code and _PACKED_OPS[other] not in code


def _frozen_code(fn, gemm: str):
    """fn's result and the code inductor generated for it, compiled with the weights frozen
    (decode.compile's CPU options) and the Linears packed for `gemm`."""
    from torch._inductor.utils import run_and_get_code

    from s2s.decode.compiled import cpu_graph_options, linear_packing

    options = cpu_graph_options("inductor", torch.device("cpu"))
    with torch._inductor.config.patch(options), linear_packing(gemm):
        out, code = run_and_get_code(fn)
    return out, "\n".join(code)


@pytest.mark.slow
@pytest.mark.parametrize("gemm", ["mkl", "onednn"])
def test_linear_packing_computes_the_linears_with_the_library_asked(gemm: str) -> None:
    """A float32 Linear-ReLU-Linear compiled with frozen weights: the generated code calls the
    asked library's packed GEMM and not the other's, and computes what eager computes (within
    float32 rounding: another library adds in another order). Where torch has no MKL,
    inductor packs for oneDNN whatever is asked."""
    if gemm == "mkl" and not torch._C.has_mkl:
        pytest.skip("torch without MKL packs every Linear for oneDNN")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(24, 48), torch.nn.ReLU(), torch.nn.Linear(48, 16)
    ).eval()
    x = torch.randn(6, 24)
    step = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        out, code = _frozen_code(lambda: step(x), gemm)
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-6)
    _assert_packed_for(code, gemm)


@pytest.mark.slow
@pytest.mark.parametrize("gemm", ["onednn", "mkl"])
def test_compiled_search_packs_for_the_gemm_its_config_names(gemm: str) -> None:
    """decode.compile_gemm reaches the graphs a search compiles: a float32 search generates
    the named library's packed Linears, none of the other's (the scores' agreement with eager
    is pinned in float64 above, where nothing is packed)."""
    from torch._inductor.utils import run_and_get_code

    if gemm == "mkl" and not torch._C.has_mkl:
        pytest.skip("torch without MKL packs every Linear for oneDNN")
    dec = make_decoder("prefix", "mtla", 2, seed=1)
    memory, lens, _ = _inputs()
    cfg = BeamSearchConfig(beam_size=2, max_len_b=3, compile=True, compile_gemm=gemm)
    scorers = search_scorers(cfg, DecoderScorer(dec))
    assert scorers["decoder"].scorer.gemm == gemm
    run = functools.partial(beam_search, scorers, memory.float(), lens, cfg, bos_id=BOS, eos_id=EOS)
    hyps, code = run_and_get_code(run)
    assert len(hyps) == 2
    _assert_packed_for("\n".join(code), gemm)


def _stub_gemm_times(monkeypatch, times: dict) -> list[int]:
    """time_gemms reporting `times` (kind -> shape -> seconds) for any model; returns the list
    of the rows it was called with. The process's resolved choices are forgotten."""
    import s2s.decode.compiled as C

    timed: list[int] = []
    monkeypatch.setattr(C, "_AUTO_GEMM", [])
    monkeypatch.setattr(C, "_GEMM_TIMES", {})
    monkeypatch.setattr(C, "time_gemms", lambda m, rows: timed.append(rows) or times)
    return timed


def test_compile_gemm_plans_the_library_and_the_padded_shapes(monkeypatch) -> None:
    """compile_gemm=auto resolves, once per process, to the library whose packed GEMMs passed
    over the model's Linears faster (`time_gemms`: every Linear shape timed, oneDNN's at its
    width and PAD_COLUMNS wider, a shape counting its better time); under oneDNN the shapes
    whose padded product was PAD_GAIN faster are computed padded, timed once per (shapes,
    rows); "mkl" is taken as named, untimed; anything else is refused."""
    import s2s.decode.compiled as C

    if not torch._C.has_mkl:
        pytest.skip("times MKL's packed GEMM")
    dec = make_decoder("cross", "mha", 1)
    count = C.linear_shapes(dec)
    state = torch.random.get_rng_state()
    times = C.time_gemms(dec, rows=8, calls=2)
    assert set(times) == {"mkl", "onednn", "onednn-padded"}
    assert all(set(t) == set(count) and min(t.values()) > 0 for t in times.values())
    assert torch.equal(torch.random.get_rng_state(), state)  # a training run's draws untouched

    wide, narrow = sorted(count)[:2]  # padding pays for `wide`; `narrow` gains 1.05x < PAD_GAIN
    others = {s: 1.0 for s in count}
    stub = {
        "mkl": {**others, wide: 2.0, narrow: 1.0},  # MKL ahead until oneDNN's padded `wide`
        "onednn": {**others, wide: 3.0, narrow: 1.05},
        "onednn-padded": {**others, wide: 2.0 / 1.5 / count[wide], narrow: 1.0},
    }
    timed = _stub_gemm_times(monkeypatch, stub)
    monkeypatch.setattr(torch._C, "has_mkl", True)
    plan = C.plan_gemms("auto", dec, 8)
    assert plan == C.GemmPlan("onednn", frozenset({wide})) and timed == [8]
    assert C.plan_gemms("auto", dec, 8) == plan and timed == [8]  # timed once
    assert C.plan_gemms("onednn", dec, 40).library == "onednn" and timed == [8, 40]
    assert C.plan_gemms("mkl", dec, 64) == C.GemmPlan("mkl") and timed == [8, 40]
    # MKL faster overall: packed for MKL, nothing padded
    stub["mkl"] = {s: 0.1 for s in count}
    _stub_gemm_times(monkeypatch, stub)
    assert C.plan_gemms("auto", dec, 8) == C.GemmPlan("mkl")
    with pytest.raises(ValueError, match="compile_gemm must be one of"):
        BeamSearchConfig(compile=True, compile_gemm="blas")
    with pytest.raises(ValueError, match="gemm must be"), C.linear_packing("auto"):
        pass


def test_padded_linears_compute_the_same_columns() -> None:
    """PadLinearColumns widens exactly the Linears of the shapes it is given, with or without
    a bias, by PAD_COLUMNS zero rows of a weight that is a graph input, and the graph keeps
    their first columns: what it computes is what the unpadded graph computes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from s2s.decode.compiled import PAD_COLUMNS, PadLinearColumns

    g = torch.Generator().manual_seed(0)
    x, w1, b1, w2, w3 = (
        torch.randn(*s, generator=g, dtype=torch.float64)
        for s in ((5, 8), (32, 8), (32,), (16, 32), (24, 16))
    )

    def net(x, w1, b1, w2, w3):
        h = torch.relu(torch.nn.functional.linear(x, w1, b1))
        return torch.nn.functional.linear(torch.nn.functional.linear(h, w2), w3)

    gm = make_fx(net)(x, w1, b1, w2, w3)
    want = gm(x, w1, b1, w2, w3)
    PadLinearColumns(frozenset({(8, 32), (16, 24)}))(gm.graph)  # not (32, 16)
    gm.recompile()
    pads = [n for n in gm.graph.nodes if n.target is torch.ops.aten.constant_pad_nd.default]
    assert len(pads) == 3  # w1 and its bias, w3
    assert {tuple(n.args[1]) for n in pads} == {(0, 0, 0, PAD_COLUMNS), (0, PAD_COLUMNS)}
    kept = [n for n in gm.graph.nodes if n.target is torch.ops.aten.slice.Tensor]
    assert sorted(n.args[3] for n in kept) == [24, 32]
    torch.testing.assert_close(gm(x, w1, b1, w2, w3), want, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_compiled_search_with_padded_linears_equals_eager(monkeypatch) -> None:
    """A search whose GEMM plan pads every Linear (timings stubbed so that padding pays for
    each shape): inductor's frozen graphs compute them padded and the search finds what eager
    finds, in float64 (where nothing is packed, so only the padding differs)."""
    import s2s.decode.compiled as C

    dec = make_decoder("prefix", "mtla", 2, seed=1).double()
    lm = make_lm("mtla", 2, seed=2).double()
    shapes = C.linear_shapes(dec) | C.linear_shapes(lm)
    _stub_gemm_times(
        monkeypatch,
        {
            "mkl": {s: 1.0 for s in shapes},
            "onednn": {s: 1.0 for s in shapes},
            "onednn-padded": {s: 0.5 for s in shapes},
        },
    )
    memory, lens, ctc = _inputs(3, 11, [11, 8, 5])
    want, _ = _search(dec, lm, memory, lens, ctc, CFG)
    scorers = search_scorers(
        CFG, DecoderScorer(dec), ctc=CTCPrefixScorer(lambda m: ctc, 0, EOS), lm=LMScorer(lm)
    )
    torch._dynamo.utils.counters["s2s"].clear()
    with torch._inductor.config.patch(fx_graph_cache=False):
        got = beam_search(
            compile_scorers(scorers, 8, gemm="onednn"), memory, lens, CFG, bos_id=BOS, eos_id=EOS
        )
    _assert_same(got, want)
    # every Linear a step computes, the decoder's and the LM's (the frames' projections run
    # before the search, MTLA's up-projections are absorbed into other products)
    assert torch._dynamo.utils.counters["s2s"]["linears_padded"] == _linears_in_a_step(
        scorers, memory, lens
    )


class _CountLinears(torch.overrides.TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func is torch.nn.functional.linear
        return func(*args, **(kwargs or {}))


def _linears_in_a_step(scorers, memory, lens) -> int:
    """F.linear calls in one eager step of every full scorer of the set."""
    from s2s.decode.scorers import SearchInit

    count = _CountLinears()
    for w in scorers.values():
        if not w.scorer.partial:
            state = w.scorer.init_state(SearchInit(memory, lens, CFG.beam_size, 4))
            tokens = torch.full((memory.shape[0] * CFG.beam_size,), BOS)
            with torch.no_grad(), count:
                w.scorer.score(state, tokens)
    return count.calls


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("arrangement", "variant"), [("cross", "mha"), ("prefix", "mtla")])
def test_graph_captured_step_equals_eager_on_cuda(arrangement: str, variant: str) -> None:
    """decode.compile_mode=reduce-overhead on CUDA: the step compiled by inductor and captured
    as a CUDA graph (inductor declined none: the caches it writes into are static) finds the
    eager search's n-best lists, in float64, with CTC and an LM."""
    from s2s.decode.compiled import COMPILE_STATS

    s = _stride(variant)
    dec = make_decoder(arrangement, variant, s, seed=1).double().cuda()
    lm = make_lm(variant, s, seed=2).double().cuda()
    memory, lens, ctc = (t.cuda() for t in _inputs(3, 11, [11, 8, 5]))
    want, _ = _search(dec, lm, memory, lens, ctc, CFG)
    cfg = dataclasses.replace(CFG, compile=True, compile_mode="reduce-overhead")
    skips = COMPILE_STATS["cudagraph_skips"]
    scorers = search_scorers(
        cfg, DecoderScorer(dec), ctc=CTCPrefixScorer(lambda m: ctc, 0, EOS), lm=LMScorer(lm)
    )
    for _ in range(2):  # the second search replays the captured graphs
        got = beam_search(scorers, memory, lens, cfg, bos_id=BOS, eos_id=EOS)
        _assert_same(got, want)
    assert COMPILE_STATS["cudagraph_skips"] == skips
