"""The modules `s2s-export` traces to ONNX: pure tensor functions around a trained model, with
the decoding cache as explicit inputs and outputs (docs/export.md).

- EncoderGraph:  feats (B, T, F), feat_lens (B,) -> memory (B, S, d), memory_lens (B,)
- CtcGraph:      memory (B, S, d) -> ctc_log_probs (B, S, V) (models trained with CTC)
- StartGraph:    the decoder's start. cross: memory -> each layer's cross-attention keys and
  values (B, H, S, D). prefix / prompt: memory, memory_lens -> each layer's cache slots of the
  frames (B, ceil(P / s), *slot) and prefix_lens (B,), what AttentionCache.fill_prefix takes.
- StepGraph:     one decode step of U utterances x K hypotheses. The cache goes in as the lean
  engine holds it (s2s.attention.cache): each layer's own buffers (U, K, S_own, *slot), the
  ancestry table owner (U, K, S_own), every row's token count length (U, K) and, for prefix /
  prompt, each layer's shared buffers (U, S_shared, *slot) once per utterance with
  shared_slots (U,); for cross, each layer's memory keys/values (U, H, S, D) and memory_lens.
  Out come log_probs (U, K, V) and each layer's new slot contents (U, K, *slot), which the
  caller writes into its buffers at slot length // s (MTLA's partial chunk update included:
  the new content is the chunk's sum so far). Rows are passed as (U, K) so that the graph
  knows N = U * K without a constraint between independent dimensions.

The owner table, token counts and shared slot counts are the same in every layer (beam search
moves the layers together), so they go in once. step_inputs builds these inputs from a
DecoderState, for tracing and for the runtime alike. The variants' own `step` code runs unchanged
inside StepGraph, over a StepCache that reads the inputs and records what the step writes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s2s.attention.cache import AttentionCache
from s2s.models.decoder import DecoderState


class StepCache(AttentionCache):
    """An AttentionCache over a step's input tensors, for tracing: no checks that read the
    device, writes out of place (the layer's attention then sees the new slot) and recorded
    in `written`. buffers: {name: (N, S, *slot)}; owner (N, S); length (N,); shared:
    {name: (U, S_sh, *slot)} or {}; shared_slots (U,); group = N // U."""

    def __init__(
        self,
        buffers: dict[str, Tensor],
        owner: Tensor,
        length: Tensor,
        stride: int,
        shared: dict[str, Tensor],
        shared_slots: Tensor,
        group: int,
    ) -> None:
        # Not AttentionCache.__init__: nothing is allocated, the state is the inputs.
        self.stride, self.growable, self.fill, self.share_prefix = stride, False, None, True
        self.slot_shapes = {name: tuple(b.shape[2:]) for name, b in buffers.items()}
        self.buffers, self.owner, self.length = dict(buffers), owner, length
        self.shared, self.shared_slots, self.group = dict(shared), shared_slots, group
        self.written: dict[str, Tensor] = {}

    def base(self) -> Tensor:
        U = self.shared_slots.shape[0]
        return self.shared_slots[:, None].expand(U, self.group).reshape(-1)

    def own_index(self, slot: Tensor) -> Tensor:
        return slot - self.base()

    def write(self, name: str, slot: Tensor, value: Tensor) -> None:
        j, rows = self.own_index(slot), self._rows()
        self.buffers[name] = self.buffers[name].index_put((rows, j), value)
        self.owner = self.owner.index_put((rows, j), rows)
        self.written[name] = value

    def _track(self) -> None:  # no memory accounting while tracing
        pass


class RecordingCache(AttentionCache):
    """An empty cache whose fill_prefix records the prefix slots instead of storing them: what
    the decoder's prefill computes, for StartGraph to return."""

    def __init__(self, stride: int) -> None:
        # Not AttentionCache.__init__: nothing is stored, prefill only calls fill_prefix.
        self.stride = stride
        self.values: dict[str, Tensor] = {}

    def fill_prefix(self, values: dict[str, Tensor], lengths: Tensor) -> None:
        self.values = dict(values)


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(feats, feat_lens)


class CtcGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.ctc = model.ctc

    def forward(self, memory: Tensor) -> Tensor:
        return self.ctc(memory).float().log_softmax(-1)


class StartGraph(nn.Module):
    """cross: memory -> (k_0, v_0, k_1, ...). prefix / prompt: (memory, memory_lens) ->
    (prefix_lens, layer 0's slots by name, layer 1's, ...)."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.names = list(decoder.layers[0].self_attn.slot_shapes())

    def forward(self, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, ...]:
        dec = self.decoder
        if dec.cfg.arrangement == "cross":
            return tuple(t for layer in dec.layers for t in layer.cross_attn.project_memory(memory))
        caches = [RecordingCache(dec.stride) for _ in dec.layers]
        if dec.cfg.arrangement == "prefix":
            frames, lens = dec.project_frames(memory, memory_lens)
            for layer, cache in zip(dec.layers, caches):
                layer.self_attn.prefill(frames, lens, cache)
        else:  # prompt
            x, lens = dec.projector(memory), memory_lens
            for layer, cache in zip(dec.layers, caches):
                x = layer(x, lens, cache=cache)
        return (lens, *(c.values[n] for c in caches for n in self.names))


class StepGraph(nn.Module):
    """Inputs: tokens (U, K), length (U, K), owner (U, K, S_own), then per layer its own
    buffers by name (U, K, S_own, *slot); cross: memory_lens (U,) and per layer k, v
    (U, H, S, D); prefix / prompt: shared_slots (U,) and per layer its shared buffers by name
    (U, S_sh, *slot). Outputs: log_probs (U, K, V), then per layer its new slots by name
    (U, K, *slot)."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.names = list(decoder.layers[0].self_attn.slot_shapes())

    def forward(self, tokens: Tensor, length: Tensor, owner: Tensor, *rest: Tensor):
        dec = self.decoder
        U, K = tokens.shape
        L, n = len(dec.layers), len(self.names)
        cross = dec.cfg.arrangement == "cross"
        own, lens_or_slots, extra = rest[: L * n], rest[L * n], rest[L * n + 1 :]
        no_shared = torch.zeros_like(lens_or_slots)
        caches = []
        for i in range(L):
            layer = dict(zip(self.names, own[i * n : (i + 1) * n]))
            shared = {} if cross else dict(zip(self.names, extra[i * n : (i + 1) * n]))
            caches.append(
                StepCache(
                    {name: buf.flatten(0, 1) for name, buf in layer.items()},
                    owner.flatten(0, 1),
                    length.flatten(),
                    dec.stride,
                    shared,
                    no_shared if cross else lens_or_slots,
                    K,
                )
            )
        memory_kv = [(extra[2 * i], extra[2 * i + 1]) for i in range(L)] if cross else None
        # memory_lens matters to cross-attention only; prefix and prompt steps never read it
        state = DecoderState(caches, memory_kv, lens_or_slots, K)
        log_probs = dec.step(tokens.flatten(), state).float().log_softmax(-1)
        out = [log_probs.view(U, K, -1)]
        for cache in caches:
            out += [cache.written[name].unflatten(0, (U, K)) for name in self.names]
        return tuple(out)


def step_inputs(state, tokens: Tensor) -> tuple[list[str], list[Tensor]]:
    """The step graph's inputs, named, from a DecoderState of U utterances x K rows (the lean
    engine's caches: ancestry, shared prefix) and tokens (N,): rows as (U, K), each layer's own
    buffers cut to the slots this step can touch, shared buffers with at least one slot."""
    caches = state.caches
    c0 = caches[0]
    N, K = c0.batch_size, state.beam
    U = N // K
    s = c0.stride
    # Own slots this step reads or writes: up to the slot of the token it feeds.
    used = max(1, min(c0.capacity, int(((c0.length // s) - c0.base()).max()) + 1))
    owner = c0.owner if c0.owner is not None else c0._rows()[:, None].expand(-1, c0.capacity)
    names = ["tokens", "length", "owner"]
    values = [tokens.view(U, K), c0.length.view(U, K), owner[:, :used].reshape(U, K, used)]
    slot_names = list(c0.slot_shapes)
    for i, cache in enumerate(caches):
        for n in slot_names:
            names.append(f"own.{i}.{n}")
            buf = cache.buffers[n][:, :used]
            values.append(buf.reshape(U, K, used, *buf.shape[2:]))
    if state.memory_kv is not None:  # cross
        names.append("memory_lens")
        values.append(state.memory_lens)
        for i, (k, v) in enumerate(state.memory_kv):
            names += [f"memory.{i}.k", f"memory.{i}.v"]
            values += [k, v]
    else:
        names.append("shared_slots")
        values.append(c0.shared_slots)
        for i, cache in enumerate(caches):
            for n in slot_names:
                names.append(f"shared.{i}.{n}")
                sh = cache.shared.get(n)
                if sh is None or sh.shape[1] == 0:  # no completed slot: one unused column
                    sh = cache.buffers[n].new_zeros(U, 1, *cache.slot_shapes[n])
                values.append(sh)
    return names, values
