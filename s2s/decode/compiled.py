"""`decode.compile`: the decoder's (and the LM's) beam-search step as one graph compiled by
`torch.compile(fullgraph=True)`, over the lean engine's preallocated caches (docs/engine.md).

A full scorer whose score is its model's step and log-softmax (`DecoderScorer` over a
`Decoder`, `LMScorer` over a `TransformerLM`) is wrapped in `CompiledStep`: every decoder
layer's step over its cache (the new slot written in place, attention over the whole
allocation with the slots past each row's count masked), the output projection and the
float64 log-softmax run as one compiled graph, with no graph break (`fullgraph=True`: a break
is an error, not a silent fallback to eager) and so no host synchronisation inside the step.
The variants' own `step` code runs unchanged; what the compiler cannot trace reads the mode
(`torch.compiler.is_compiling()`): `ops.slots_in_use` takes every column instead of reading
the largest count back, `ops.kernels_active` is False (the compiler generates the kernels).
The search around the step (top-k, the finished hypotheses, the CTC prefix scores, the
ancestry reorder, in place) stays eager; the eager scorers remain the reference.

Shapes. A graph is specialised to its shapes (`dynamic=False`), so the state is built at
bucket sizes and a test set reuses a few graphs: the utterances U, the encoder frames, the
own cache part's slots and the shared part's slots are each rounded up by `bucket` (one of
`per_octave` sizes between consecutive powers of two: less than 1/per_octave of padding,
none up to 2 * per_octave). The search's N = U * K rows are the first rows of the
state's bucket(U) * K; the extra utterances copy the last real one, decode alongside, and are
never read. The padding is allocated memory and counts in `peak_cache_bytes`; with
per_octave = 0 nothing is padded (a graph per distinct shape) and the state is byte for byte
the eager one's.

Weights. On the CPU, inductor's graphs are compiled with its `freezing` (and with its C++
wrapper: `cpu_graph_options`): the model's weights become constants of the graph, which lets
inductor pack every Linear's weight once for MKL's packed GEMM, the step's dominant cost (at the
paper's size 1.4x faster than `addmm` on two threads, BENCHMARKS.md §23), at the price of one
packed copy of the weights per graph. Which library packs and computes them is
`decode.compile_gemm`: inductor picks MKL wherever torch has it, but MKL runs its AVX2 code on
AMD CPUs, and on an AVX-512 one (Zen 5) oneDNN's packed GEMM computes the step's 40-row
products up to 2x faster (BENCHMARKS.md §38); "auto" times both at the model's Linear shapes
once per process and packs for the faster (`linear_packing`). oneDNN's packed GEMM runs some
widths (512 -> 1024 or 2048 at 40 rows) at a third of the rate it reaches 16 columns wider, so
the shapes where that was timed faster are computed padded (`plan_gemms`,
`PadLinearColumns`; BENCHMARKS.md §39). A frozen graph is the model's
as it was when compiled, so dynamo keeps a graph per model (it guards the parameters'
identity), and `CompiledStep` notes the weights' fingerprint (each parameter's and buffer's
identity, storage and version counter, which every in-place update bumps): if they changed
since a search compiled them (a model trained further, `load_state_dict`), the process's
compiled graphs are dropped (`torch._dynamo.reset()`) and compiled again, with a warning. So
are they when a search packs for the other GEMM library. Elsewhere (CUDA, other backends) the
weights stay inputs of the graph.

Compiled graphs live in torch's compile cache for the process: a second search whose state
falls in the same bucket reuses the graph without tracing again. `COMPILE_STATS` adds up the
graphs compiled and the seconds of the calls that compiled them (tracing and code generation,
plus the one step they ran).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._inductor.custom_graph_pass import CustomGraphPass

from s2s.decode.scorers import DecoderScorer, SearchInit, Weighted

log = logging.getLogger(__name__)

#: graphs compiled in this process, the seconds the calls that compiled them took, and how
#: many of them inductor declined to capture as CUDA graphs (mode="reduce-overhead"; on the
#: CPU every one: there are no CUDA graphs to capture)
COMPILE_STATS: dict[str, float] = {"graphs": 0, "seconds": 0.0, "cudagraph_skips": 0}
#: the most graphs torch keeps for the one step function (every model, every bucket) before
#: refusing to compile another: far above what a test set needs, never a silent eager fallback
RECOMPILE_LIMIT = 256


def bucket(n: int, per_octave: int = 8) -> int:
    """n rounded up to one of per_octave evenly spaced sizes in (2^(k-1), 2^k], so by less
    than n / per_octave: 100 -> 104, 300 -> 320, 61 -> 64 at 8 per octave, powers of two at 1;
    n itself up to 2 * per_octave, and always when per_octave <= 0."""
    if per_octave <= 0:
        return n
    step = max(1, (1 << (n - 1).bit_length()) // (2 * per_octave))
    return -(-n // step) * step


def _scored_step(model: nn.Module, tokens: Tensor, state) -> Tensor:
    """What DecoderScorer.score computes: tokens (N,) -> float64 log-probs (N, V)."""
    return model.step(tokens, state).double().log_softmax(-1)


#: each model whose weights a frozen graph holds -> their fingerprint when it was compiled
_FROZEN: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    """What a frozen graph assumes of the weights: every parameter's and buffer's identity,
    storage and version counter (bumped by each in-place update: an optimiser step, copy_)."""
    # An inference tensor has no version counter (and no in-place update outside inference mode).
    return tuple(
        (id(t), t.data_ptr(), 0 if t.is_inference() else t._version)
        for t in (*model.parameters(), *model.buffers())
    )


def freezes(backend, device: torch.device) -> bool:
    """Whether CompiledStep freezes the weights into its graphs: inductor on the CPU."""
    return backend == "inductor" and device.type == "cpu"


def cpu_graph_options(
    backend, device: torch.device, gemms: GemmPlan | None = None
) -> dict[str, object]:
    """Inductor's options for CompiledStep's graphs: on the CPU, the weights frozen (each
    Linear's packed once for the GEMM of `gemms.library`) and the graph's calls made from C++
    (`cpp_wrapper`): from Python, the few hundred kernel and GEMM calls of a step cost 13% of
    a paper-sized search, and the C++ wrapper took 9-10% off the compiled search for a few
    seconds more compiling (BENCHMARKS.md §28); the Linears of `gemms.padded` computed wider
    (PadLinearColumns). Elsewhere nothing changes."""
    on = freezes(backend, device)
    wide = PadLinearColumns(gemms.padded) if on and gemms and gemms.padded else None
    return {"freezing": on, "cpp_wrapper": on, "joint_custom_post_pass": wide}


class _OneDNNPacking:
    """torch.ops.mkldnn as inductor's weight-pack pass sees it under `linear_packing("onednn")`:
    the pass packs a float32 Linear for oneDNN (`mkldnn._reorder_linear_weight`,
    `mkldnn._linear_pointwise`) where `_is_mkldnn_acl_supported()`, and for MKL otherwise (torch
    2.11, torch/_inductor/fx_passes/mkldnn_fusion.py); everything else is torch.ops.mkldnn's."""

    def __init__(self, ops) -> None:
        self._ops = ops

    def __getattr__(self, name: str):
        if name == "_is_mkldnn_acl_supported":
            return lambda: True
        return getattr(self._ops, name)


@contextlib.contextmanager
def linear_packing(gemm: str) -> Iterator[None]:
    """The library inductor's freezing packs float32 Linears for in the graphs compiled inside:
    "mkl" (its own choice where torch has MKL) or "onednn". It acts when a graph is compiled;
    compiled graphs keep what they were packed for. tests/test_compiled_decode.py reads the
    generated code, so a torch whose pass decides otherwise fails there, not silently."""
    if gemm == "mkl":
        yield
        return
    if gemm != "onednn":
        raise ValueError(f"linear_packing: gemm must be 'mkl' or 'onednn', got {gemm!r}")
    from torch._inductor.fx_passes import mkldnn_fusion

    ops = mkldnn_fusion.mkldnn
    mkldnn_fusion.mkldnn = _OneDNNPacking(ops)
    try:
        yield
    finally:
        mkldnn_fusion.mkldnn = ops


#: outputs a padded Linear computes past its width: one AVX-512 vector of float32
PAD_COLUMNS = 16
#: a Linear shape is computed padded where that made oneDNN's packed GEMM this much faster
PAD_GAIN = 1.1


def linear_shapes(model: nn.Module) -> Counter[tuple[int, int]]:
    """How many of `model`'s Linear layers have each (in, out) shape."""
    return Counter(
        (m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)
    )


def time_gemms(
    model: nn.Module, rows: int, calls: int = 20
) -> dict[str, dict[tuple[int, int], float]]:
    """Seconds a call of each packed float32 GEMM takes at each of `model`'s distinct Linear
    shapes (in, out) at `rows` rows, best of 3 rounds of `calls`: "mkl" (where torch has MKL),
    "onednn" and "onednn-padded" (PAD_COLUMNS more outputs; where torch has oneDNN)."""
    kinds = ["mkl"] if torch._C.has_mkl else []
    if torch.backends.mkldnn.is_available():
        kinds += ["onednn", "onednn-padded"]
    times: dict[str, dict[tuple[int, int], float]] = {kind: {} for kind in kinds}
    g = torch.Generator().manual_seed(0)  # not the global one: a training run draws from it
    with torch.no_grad():
        for k, n in linear_shapes(model):
            x = torch.randn(rows, k, generator=g)
            for kind in kinds:
                width = n + PAD_COLUMNS if kind == "onednn-padded" else n
                w, b = torch.randn(width, k, generator=g), torch.randn(width, generator=g)
                if kind == "mkl":
                    packed = torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
                    call = functools.partial(torch.ops.mkl._mkl_linear, x, packed, w, b, rows)
                else:
                    packed = torch.ops.mkldnn._reorder_linear_weight(w, rows)
                    call = functools.partial(
                        torch.ops.mkldnn._linear_pointwise, x, packed, b, "none", [], ""
                    )
                call()  # builds the kernel
                best = float("inf")
                for _ in range(3):
                    t = time.perf_counter()
                    for _ in range(calls):
                        call()
                    best = min(best, time.perf_counter() - t)
                times[kind][(k, n)] = best / calls
    return times


@dataclass(frozen=True)
class GemmPlan:
    """How a frozen CPU graph computes its float32 Linears: whose packed GEMM (`library`),
    and the (in, out) shapes it computes PAD_COLUMNS wider (`padded`; oneDNN only)."""

    library: str
    padded: frozenset[tuple[int, int]] = frozenset()


#: decode.compile_gemm=auto as this process resolved it (once: graphs packed for one library)
_AUTO_GEMM: list[str] = []
#: the library the process's compiled graphs were packed for, if any
_PACKED_FOR: list[str] = []
#: time_gemms per (the model's Linear shapes, rows): each timed once per process
_GEMM_TIMES: dict[tuple, dict[str, dict[tuple[int, int], float]]] = {}


def _gemm_times(model: nn.Module, rows: int) -> dict[str, dict[tuple[int, int], float]]:
    key = (tuple(sorted(linear_shapes(model).items())), rows)
    if key not in _GEMM_TIMES:
        _GEMM_TIMES[key] = time_gemms(model, rows)
    return _GEMM_TIMES[key]


def plan_gemms(gemm: str, model: nn.Module, rows: int) -> GemmPlan:
    """decode.compile_gemm for a CPU graph of `rows` rows. "mkl": as named. "onednn": with
    the shapes whose padded product was PAD_GAIN faster computed padded. oneDNN's packed GEMM
    runs some widths at a third of its rate (on an AVX-512 Zen 5 at 40 rows, 512 -> 1024,
    2048 or 3072 at about 155 GFLOP/s, 16 columns more at 420-460; BENCHMARKS.md §39), and
    which ones depends on the CPU and the rows, so it is timed, not assumed. "auto": the
    faster library over the model's Linears at these rows (a shape's oneDNN time the better
    of plain and padded), decided once per process; the one torch has where it lacks the
    other. The timings are float32's, the dtype the packing is for."""
    if gemm == "mkl" or not torch.backends.mkldnn.is_available():
        return GemmPlan("mkl" if gemm == "auto" else gemm)  # nothing to time
    times = _gemm_times(model, rows)
    padded = frozenset(
        s for s, t in times["onednn-padded"].items() if PAD_GAIN * t < times["onednn"][s]
    )
    if gemm == "auto" and not _AUTO_GEMM:
        count = linear_shapes(model)
        mkl = sum(count[s] * t for s, t in times.get("mkl", {}).items())
        dnn = sum(count[s] * min(t, times["onednn-padded"][s]) for s, t in times["onednn"].items())
        _AUTO_GEMM.append("mkl" if torch._C.has_mkl and mkl <= dnn else "onednn")
        log.info(
            "decode.compile_gemm=auto: %s (a pass over the Linears at %d rows: MKL %.3f ms, "
            "oneDNN %.3f ms with %d shape(s) padded)",
            _AUTO_GEMM[0],
            rows,
            1e3 * mkl,
            1e3 * dnn,
            len(padded),
        )
    library = _AUTO_GEMM[0] if gemm == "auto" else gemm
    return GemmPlan(library, padded if library == "onednn" else frozenset())


class PadLinearColumns(CustomGraphPass):
    """Inductor's joint-graph pass, run before freezing packs the weights: each Linear over a
    weight that is a graph input (a parameter freezing makes a constant) whose (in, out) shape
    is in `shapes` computes PAD_COLUMNS more outputs, from zero weight rows and bias, and the
    graph reads its first `out` columns. The padding folds into the constant the weight pack
    packs; the columns kept are the same products of the same weights."""

    def __init__(self, shapes: frozenset[tuple[int, int]]) -> None:
        self.shapes = frozenset(shapes)

    def __call__(self, graph: torch.fx.Graph) -> None:
        aten = torch.ops.aten
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target not in (
                aten.addmm.default,
                aten.mm.default,
            ):
                continue
            w_at = 2 if node.target is aten.addmm.default else 1  # the weight, transposed
            wt = node.args[w_at]
            if wt.op != "call_function" or wt.target not in (aten.permute.default, aten.t.default):
                continue
            weight = wt.args[0]
            val = weight.meta.get("val")
            if weight.op != "placeholder" or val is None or val.dim() != 2:
                continue
            n, k = val.shape
            if (k, n) not in self.shapes:
                continue
            with graph.inserting_before(node):
                wide_w = graph.call_function(
                    aten.constant_pad_nd.default, (weight, [0, 0, 0, PAD_COLUMNS])
                )
                args = list(node.args)
                args[w_at] = graph.call_function(aten.permute.default, (wide_w, [1, 0]))
                if w_at == 2:  # the bias
                    args[0] = graph.call_function(
                        aten.constant_pad_nd.default, (args[0], [0, PAD_COLUMNS])
                    )
                wide = graph.call_function(node.target, tuple(args), dict(node.kwargs))
                kept = graph.call_function(aten.slice.Tensor, (wide, 1, 0, n))
            node.replace_all_uses_with(kept)
            graph.erase_node(node)
            torch._dynamo.utils.counters["s2s"]["linears_padded"] += 1
        graph.eliminate_dead_code()

    def uuid(self) -> tuple:
        return ("s2s.PadLinearColumns", PAD_COLUMNS, tuple(sorted(self.shapes)))


@functools.cache
def _compiled(backend, mode: str | None):
    """The step compiled once per (backend, mode); torch keeps one graph per shape bucket."""
    return torch.compile(_scored_step, fullgraph=True, dynamic=False, backend=backend, mode=mode)


def compilable(scorer) -> bool:
    """Whether `scorer` scores by its PyTorch model's step and log-softmax (DecoderScorer,
    LMScorer), the step CompiledStep compiles; not the ONNX bundle's decoder or the test-side
    lockstep, which score otherwise."""
    return (
        isinstance(scorer, DecoderScorer)
        and type(scorer).score is DecoderScorer.score
        and isinstance(scorer.model, nn.Module)
    )


@dataclass
class CompiledState:
    """inner: the wrapped scorer's state over N' = bucket(U) * K rows; rows: the search's N
    (the first N rows); tokens (N',): the step's input, the padding rows' tokens fixed;
    index (N',): the reorder index, the padding rows keeping their own; gemms: how its frozen
    CPU graph computes the float32 Linears (None: not frozen)."""

    inner: object
    rows: int
    tokens: Tensor
    index: Tensor
    gemms: GemmPlan | None = None


class CompiledStep:
    """A full scorer (s2s.decode.scorers) over `scorer`'s model and state with its step
    compiled; same interface, same scores (up to the compiler's rounding). per_octave: the
    bucket sizes (0: exact shapes); backend / mode: torch.compile's ("inductor"; on CUDA,
    mode="reduce-overhead" adds CUDA graphs); gemm: decode.compile_gemm, the library the
    frozen CPU graphs' float32 Linears are packed for. Lean engine only: its caches are
    allocated once, so the shapes stay put through a search."""

    partial = False
    fixed_shapes = True  # its graphs are specialised to the state's bucket

    def __init__(
        self,
        scorer: DecoderScorer,
        per_octave: int = 8,
        backend="inductor",
        mode=None,
        gemm: str = "auto",
    ):
        if not compilable(scorer):
            raise ValueError(f"{type(scorer).__name__} does not score by a PyTorch model's step")
        self.scorer, self.model = scorer, scorer.model
        self.per_octave = per_octave
        self.backend, self.mode = backend, mode
        self.gemm = gemm  # decode.compile_gemm; resolved at the first frozen graph
        self.step = _compiled(backend, mode)

    def init_state(self, search: SearchInit) -> CompiledState:
        if not search.lean:
            raise ValueError("decode.compile runs the lean engine only (caches allocated once)")
        memory, lens = search.memory, search.memory_lens
        U, S = memory.shape[:2]
        B = self.per_octave
        gemms = None
        if freezes(self.backend, memory.device):
            self._check_frozen_weights()
            gemms = plan_gemms(self.gemm, self.model, bucket(U, B) * search.beam)
            self.gemm = gemms.library
            if _PACKED_FOR and _PACKED_FOR[0] != self.gemm:
                # dynamo would reuse graphs packed for the other library (its guards do not
                # see the packing): drop them
                log.warning(
                    "decode.compile: packing for %s where the compiled graphs were packed for "
                    "%s; dropping them and compiling again",
                    self.gemm,
                    _PACKED_FOR[0],
                )
                torch._dynamo.reset()
            _PACKED_FOR[:] = [self.gemm]
        # Extra utterances copy the last real one; frames past S are padding its lengths hide.
        pick = torch.arange(bucket(U, B), device=memory.device).clamp(max=U - 1)
        padded = F.pad(memory[pick], (0, 0, 0, bucket(S, B) - S))
        inner = self.scorer.init_state(replace(search, memory=padded, memory_lens=lens[pick]))
        for cache in inner.caches:
            shared = next(iter(cache.shared.values())).shape[1] if cache.shared else 0
            cache.pad_slots(bucket(cache.capacity, B), bucket(shared, B))
        N, N2 = search.rows, pick.numel() * search.beam
        device = memory.device
        state = CompiledState(
            inner=inner,
            rows=N,
            tokens=torch.zeros(N2, dtype=torch.long, device=device),
            index=torch.arange(N2, device=device),
            gemms=gemms,
        )
        if self.mode == "reduce-overhead":
            # A CUDA graph replays fixed addresses: the tensors the step writes into in place
            # (the caches) and reads every step keep theirs for the whole search; marked static,
            # inductor captures the step instead of skipping it for "mutated inputs".
            for cache in inner.caches:
                owner = [] if cache.owner is None else [cache.owner]
                for t in (*cache.buffers.values(), *cache.shared.values(), *owner):
                    torch._dynamo.mark_static_address(t)
            torch._dynamo.mark_static_address(state.tokens)
        return state

    def score(self, state: CompiledState, tokens: Tensor, cand: Tensor | None = None) -> Tensor:
        """tokens (N,) -> float64 log-probs (N, V), through the graph of state's bucket."""
        state.tokens[: state.rows].copy_(tokens)
        counters = torch._dynamo.utils.counters
        graphs, skips = counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"]
        t = time.perf_counter()
        with (
            torch._dynamo.config.patch(
                recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True
            ),
            torch._inductor.config.patch(
                cpu_graph_options(self.backend, state.tokens.device, state.gemms)
            ),
            linear_packing(state.gemms.library if state.gemms else "mkl"),
        ):
            out = self.step(self.model, state.tokens, state.inner)
        new = counters["stats"]["unique_graphs"] - graphs
        if new:
            COMPILE_STATS["graphs"] += new
            COMPILE_STATS["seconds"] += time.perf_counter() - t
        COMPILE_STATS["cudagraph_skips"] += counters["inductor"]["cudagraph_skips"] - skips
        return out[: state.rows]

    def _check_frozen_weights(self) -> None:
        """Frozen graphs hold the weights they were compiled with: drop them all when this
        model's weights changed since (dynamo's guards see the same parameter objects)."""
        now, then = _fingerprint(self.model), _FROZEN.get(self.model)
        if then is not None and then != now:
            log.warning(
                "decode.compile: %s's weights changed since its step was compiled with them "
                "(frozen into the graphs); dropping the compiled graphs and compiling again",
                type(self.model).__name__,
            )
            torch._dynamo.reset()
        _FROZEN[self.model] = now

    def select(self, state: CompiledState, rows: Tensor, cols: Tensor, tokens: Tensor) -> None:
        state.index[: state.rows].copy_(rows)
        self.scorer.select(state.inner, state.index, state.index, state.tokens)

    def peak_cache_bytes(self, state: CompiledState) -> int:
        """The padded state's peak: its padding rows and slots are allocated too."""
        return self.scorer.peak_cache_bytes(state.inner)

    def keep(self, state: CompiledState, rows: Tensor) -> CompiledState:
        raise RuntimeError("a compiled step's state keeps its shapes (fixed_shapes)")


def compile_scorers(
    scorers: Mapping[str, Weighted],
    per_octave: int = 8,
    backend="inductor",
    mode=None,
    gemm: str = "auto",
) -> dict[str, Weighted]:
    """The same weighted set with every compilable scorer (see `compilable`) in a
    CompiledStep; the others (the CTC prefix scorer, an ONNX decoder) as they are."""
    return {
        name: Weighted(CompiledStep(w.scorer, per_octave, backend, mode, gemm), w.weight)
        if compilable(w.scorer)
        else w
        for name, w in scorers.items()
    }
