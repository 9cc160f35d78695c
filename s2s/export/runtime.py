"""An ONNX bundle decoded by onnxruntime, behind the interfaces Speech2Text and beam search
already use (docs/export.md):

- OnnxModel: encode(src, src_lens) and ctc_log_probs(memory), like Seq2SeqModel;
- OnnxDecoder: init_state(...) and step(tokens, state), like Decoder, so beam search scores it
  through the same s2s.decode.scorers.DecoderScorer. The caches are the lean engine's own
  AttentionCache objects (torch tensors on the CPU): the frames' slots once per utterance, own
  parts allocated once per search, ancestry reordering. Each step hands onnxruntime the slots
  the step can read (zero-copy where the tensor is contiguous) and writes the slot contents it
  returns, as the PyTorch step does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor

from s2s.attention.cache import AttentionCache
from s2s.export.bundle import read_bundle
from s2s.export.graphs import step_inputs
from s2s.models.decoder import DecoderState, own_slots_needed


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _np(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


class OnnxDecoder:
    """Decoder.init_state / Decoder.step over decoder_start.onnx and decoder_step.onnx."""

    def __init__(self, folder: Path, model: dict, threads: int = 0) -> None:
        self.start = _session(folder / "decoder_start.onnx", threads)
        self.step_session = _session(folder / "decoder_step.onnx", threads)
        self.arrangement = model["arrangement"]
        self.stride = int(model["stride"])
        self.n_layers = int(model["n_layers"])
        self.slot_shapes = {n: tuple(s) for n, s in model["slot_shapes"].items()}
        self.step_outputs = [o.name for o in self.step_session.get_outputs()]
        self.start_outputs = [o.name for o in self.start.get_outputs()]
        self._bytes_per_token = float(model["cache_bytes_per_token"])

    def cache_bytes_per_token(self, dtype: torch.dtype = torch.float32) -> float:
        """As Decoder.cache_bytes_per_token: the graphs run in float32."""
        if dtype != torch.float32:
            raise ValueError("an ONNX bundle decodes in float32")
        return self._bytes_per_token

    def _cache(self, rows: int, **kw) -> AttentionCache:
        # the shared part slot-major: the step graph's inputs are plain arrays (no copy a step)
        return AttentionCache(
            rows, self.slot_shapes, stride=self.stride, ancestry=True, head_major_shared=False, **kw
        )

    @torch.no_grad()
    def init_state(
        self,
        memory: Tensor,
        memory_lens: Tensor,
        beam: int = 1,
        ancestry: bool = True,
        *,
        max_len: int | None = None,
        share_prefix: bool = True,
    ) -> DecoderState:
        """As Decoder.init_state, for the lean engine only (ancestry and a shared prefix: the
        cache layout the step graph reads)."""
        if not (ancestry and share_prefix):
            raise ValueError("the onnxruntime backend runs the lean engine only")
        B = memory.shape[0]
        outs = self.start.run(None, {"memory": _np(memory), "memory_lens": _np(memory_lens)})
        got = dict(zip(self.start_outputs, (torch.from_numpy(o) for o in outs)))
        if self.arrangement == "cross":
            own = own_slots_needed(torch.zeros_like(memory_lens), max_len, self.stride, True)
            cap = {"capacity": own, "growable": False} if own else {}
            caches = [self._cache(B * beam, **cap) for _ in range(self.n_layers)]
            kvs = [(got[f"memory.{i}.k"], got[f"memory.{i}.v"]) for i in range(self.n_layers)]
            return DecoderState(caches, kvs, memory_lens, beam)
        lens = got["prefix_lens"]
        caches = []
        for i in range(self.n_layers):
            cache = self._cache(B, capacity=1)
            cache.fill_prefix({n: got[f"prefix.{i}.{n}"] for n in self.slot_shapes}, lens)
            cache.expand(beam, own_slots_needed(lens, max_len, self.stride, True))
            caches.append(cache)
        return DecoderState(caches, None, lens, beam)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """tokens (N,) -> log-probabilities (N, V); every layer's cache takes its new slot."""
        names, values = step_inputs(state, tokens)
        outs = self.step_session.run(None, {n: _np(v) for n, v in zip(names, values)})
        got = dict(zip(self.step_outputs, outs))
        N = tokens.shape[0]
        for i, cache in enumerate(state.caches):
            slot = cache.length // self.stride
            for n in self.slot_shapes:
                value = torch.from_numpy(got[f"slot.{i}.{n}"])
                cache.write(n, slot, value.view(N, *self.slot_shapes[n]))
            cache.advance()
        return torch.from_numpy(got["log_probs"]).view(N, -1)


class OnnxModel:
    """The encoder (and CTC head) sessions of a bundle, plus its OnnxDecoder."""

    def __init__(self, folder: str | Path, threads: int = 0, manifest: dict | None = None) -> None:
        """folder: a bundle, checked by read_bundle; or, with `manifest` (its "model" entry
        is what is read), a folder of graphs taken as they are: a bundle its caller has
        already read (Speech2Text.from_bundle), or graphs outside one (benchmarks)."""
        folder = Path(folder)
        self.manifest = manifest if manifest is not None else read_bundle(folder)
        model = self.manifest["model"]
        self.encoder_session = _session(folder / "encoder.onnx", threads)
        self.ctc = _session(folder / "ctc.onnx", threads) if model["ctc"] else None
        self.decoder = OnnxDecoder(folder, model, threads)
        self.vocab_size = int(model["vocab_size"])
        self.min_input_length = int(model["min_input_length"])
        # inputs per encoder frame (decode.encoder_views); 1: a bundle from before the key
        self.subsampling_factor = int(model.get("subsampling_factor", 1))

    def to(self, device) -> OnnxModel:
        if torch.device(device).type != "cpu":
            raise ValueError("the onnxruntime backend runs on the CPU (--device cpu)")
        return self

    def eval(self) -> OnnxModel:
        return self

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        memory, lens = self.encoder_session.run(
            None, {"src": _np(src), "src_lens": _np(src_lens.long())}
        )
        return torch.from_numpy(memory), torch.from_numpy(lens)

    def ctc_log_probs(self, memory: Tensor) -> Tensor | None:
        if self.ctc is None:
            return None
        return torch.from_numpy(self.ctc.run(None, {"memory": _np(memory)})[0])
