"""The decoder: N pre-LN layers whose self-attention comes from the attention registry, in one
of three arrangements (docs/arrangements.md):

- cross:  self-attention over target tokens + cross-attention over the encoder output.
- prefix: the MTLA paper's (the authors' fairseq "cross self-attention"): the encoder output
  goes once through a projector (Linear -> ReLU -> Linear, after stacking `projector_stack`
  frames); in every layer the self-attention's keys/values come from [frames ; the layer's
  normalised targets] through that layer's own projections, queries only from the targets. The
  frames are never transformed by the layers, so decoding prefills every layer's cache straight
  from them.
- prompt: a decoder-only LM with the frames as a prompt: the projected frames run through every
  layer like tokens (causal self-attention, FFN), the targets follow.

In prefix and prompt, positions and MTLA chunks count from each sample's first real frame
(targets at P_b + j) and padded frames are never merged into a chunk.

Training runs the layers in parallel; decoding uses `init_state` then `step` per token, through
each layer's attention cache.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from s2s.attention import AttentionCache, AttentionConfig, attention_config, build_attention
from s2s.attention.packing import pack_prefix
from s2s.models.cross_attention import CrossAttention

ARRANGEMENTS = ("cross", "prefix", "prompt")


@dataclass
class DecoderConfig:
    """n_layers pre-LN layers of width d_model; `attention` picks the self-attention variant
    (`type` plus that variant's own keys, docs/attention.md; its d_model / n_heads are
    inherited from here). `dropout` is applied to the embeddings and each sublayer's output;
    `attn_dropout` to the cross-attention's probabilities and `activation_dropout` inside the
    feed-forward, after the ReLU (fairseq's names; None: `dropout`, as ESPnet applies one rate
    everywhere). The self-attention's own rate is `attention.dropout`."""

    n_layers: int = 6
    d_model: int = 256
    n_heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    attn_dropout: float | None = None
    activation_dropout: float | None = None
    arrangement: str = "cross"
    tie_embeddings: bool = True
    projector_stack: int = 1
    projector_norm: bool = False
    # A plain mapping (a YAML section), validated against the chosen variant's own config
    # class by `self_attention()`. It stays a mapping so the OmegaConf schema stays untyped
    # there: OmegaConf cannot type a node by the value of its `type` key, and a node typed
    # after the default variant would refuse every other variant's keys.
    attention: Any = field(default_factory=lambda: {"type": "mtla"})

    def __post_init__(self) -> None:
        if self.arrangement not in ARRANGEMENTS:
            raise ValueError(f"decoder arrangement {self.arrangement!r} not in {ARRANGEMENTS}")
        if self.projector_stack < 1:
            raise ValueError(f"decoder projector_stack must be >= 1, got {self.projector_stack}")
        if self.n_layers < 1 or self.d_model < 1 or self.n_heads < 1 or self.ffn_dim < 1:
            raise ValueError("decoder n_layers, d_model, n_heads, ffn_dim must be >= 1")
        for name in ("dropout", "attn_dropout", "activation_dropout"):
            rate = getattr(self, name)
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ValueError(f"decoder {name} must be in [0, 1), got {rate}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"decoder d_model {self.d_model} not divisible by {self.n_heads} heads"
            )
        if isinstance(self.attention, AttentionConfig):
            self.attention = asdict(self.attention)
        self.attention = dict(self.attention)
        self.self_attention().resolved(self.d_model, self.n_heads)  # validate early

    def rate(self, name: str) -> float:
        """The dropout rate of "attn_dropout" or "activation_dropout" (`dropout` when None)."""
        rate = getattr(self, name)
        return self.dropout if rate is None else rate

    def self_attention(self) -> AttentionConfig:
        """The chosen variant's config (its own class: an unused key is an error)."""
        return attention_config(self.attention)


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )


class DecoderLayer(nn.Module):
    """memory_dim None: no encoder, so no cross-attention in any arrangement (the layer of a
    language model, s2s.models.lm)."""

    compile_region = True  # train.compile compiles each layer (s2s.train.speed)

    def __init__(self, cfg: DecoderConfig, memory_dim: int | None) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(cfg.d_model)
        self.self_attn = build_attention(cfg.attention, cfg.d_model, cfg.n_heads)
        self.cross_attn: CrossAttention | None = None
        if cfg.arrangement == "cross" and memory_dim is not None:
            self.cross_norm = nn.LayerNorm(cfg.d_model)
            self.cross_attn = CrossAttention(
                cfg.d_model, cfg.n_heads, memory_dim, cfg.rate("attn_dropout")
            )
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.rate("activation_dropout"))
        self.dropout = nn.Dropout(cfg.dropout)

    def _rest(self, x: Tensor, memory_kv, memory_lens: Tensor | None, beam: int) -> Tensor:
        if self.cross_attn is not None:
            x = x + self.dropout(self.cross_attn(self.cross_norm(x), memory_kv, memory_lens, beam))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None,
        memory_kv=None,
        memory_lens: Tensor | None = None,
        cache: AttentionCache | None = None,
        frames: Tensor | None = None,
    ) -> Tensor:
        """x: (B, T, d). cross: memory_kv/memory_lens; prefix: frames (B, P, d) with
        memory_lens (B,), key/value-only in front of x. With `cache`, prefills it (the prompt
        arrangement's prompt)."""
        h = self.self_attn(
            self.self_norm(x), lengths, cache, prefix=frames, prefix_lengths=memory_lens
        )
        x = x + self.dropout(h)
        return self._rest(x, memory_kv, memory_lens, 1)

    def step(
        self,
        x: Tensor,
        cache: AttentionCache,
        memory_kv=None,
        memory_lens: Tensor | None = None,
        beam: int = 1,
    ) -> Tensor:
        """x: (B*beam, 1, d) -> (B*beam, 1, d)."""
        x = x + self.self_attn.step(self.self_norm(x), cache)
        return self._rest(x, memory_kv, memory_lens, beam)


@dataclass
class DecoderState:
    """Incremental decoding state for N = B * beam rows (rows of one utterance adjacent).

    caches: one self-attention cache per layer, N rows (prefix/prompt: already holding the
    frames). memory_kv: per layer (k, v) of shape (B, H, S, D), shared by the beams (cross
    arrangement); memory_lens: (B,).
    """

    caches: list[AttentionCache]
    memory_kv: list[tuple[Tensor, Tensor]] | None
    memory_lens: Tensor
    beam: int = 1

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (N,) (each within its own utterance's block of rows)."""
        for cache in self.caches:
            cache.reorder(index)

    def keep_rows(self, rows: Tensor) -> None:
        """Only rows `rows` (N',) continue, whole utterances (beam rows each) in order."""
        for cache in self.caches:
            cache.keep_rows(rows)
        utts = rows[:: self.beam] // self.beam
        if self.memory_kv is not None:
            self.memory_kv = [(k.index_select(0, utts), v.index_select(0, utts))
                              for k, v in self.memory_kv]  # fmt: skip
        self.memory_lens = self.memory_lens.index_select(0, utts)

    def allocated_cache_bytes(self) -> int:
        """Bytes the self-attention caches hold now (all layers)."""
        return sum(c.allocated_bytes() for c in self.caches)

    def peak_cache_bytes(self) -> int:
        """The most bytes the self-attention caches held at once (per layer peaks, summed:
        every layer grows and shrinks in step)."""
        return sum(c.peak_allocated for c in self.caches)


def own_slots_needed(
    prefix_lens: Tensor, max_len: int | None, stride: int, shared: bool
) -> int | None:
    """Own cache slots a row needs to take max_len more tokens after its prefix (prefix_lens
    (B,); zeros for cross): the slots of prefix + max_len tokens, less the prefix's completed
    ones when those are shared. None when max_len is None (the cache then grows)."""
    if max_len is None:
        return None
    total = (prefix_lens + max_len + stride - 1) // stride
    return int((total - prefix_lens // stride if shared else total).max())


class FrameProjector(nn.Module):
    """The prefix arrangement's projector (the authors' EncoderProjectorConcat): stack k
    adjacent frames, then Linear -> ReLU -> Linear, d_enc * k -> d / 2 -> d. A stacked frame is
    real when all k of its frames are: S frames of a sample give S // k."""

    def __init__(self, memory_dim: int, d_model: int, stack: int = 1, norm: bool = False) -> None:
        super().__init__()
        self.stack = stack
        self.net = nn.Sequential(
            nn.Linear(memory_dim * stack, d_model // 2), nn.ReLU(), nn.Linear(d_model // 2, d_model)
        )
        if norm:
            self.net.append(nn.LayerNorm(d_model))

    def forward(self, memory: Tensor) -> Tensor:
        """(B, S, memory_dim) -> (B, S // k, d)."""
        B, S, D = memory.shape
        k = self.stack
        return self.net(memory[:, : S - S % k].reshape(B, S // k, D * k))


class Decoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, vocab_size: int, memory_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        # fairseq's init: N(0, d^-1/2), so the sqrt(d)-scaled input has unit scale and tied
        # output logits start near unit scale (N(0, 1) would start the loss far above ln V).
        nn.init.normal_(self.embed.weight, std=cfg.d_model**-0.5)
        self.embed_scale = math.sqrt(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(DecoderLayer(cfg, memory_dim) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.output = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.embed.weight
        self.projector: nn.Module | None = None
        if cfg.arrangement == "prefix":
            self.projector = FrameProjector(
                memory_dim, cfg.d_model, cfg.projector_stack, cfg.projector_norm
            )
        elif cfg.arrangement == "prompt":
            self.projector = nn.Sequential(
                nn.Linear(memory_dim, cfg.d_model), nn.LayerNorm(cfg.d_model)
            )

    def cache_bytes_per_token(self, dtype: torch.dtype = torch.float32) -> float:
        """Self-attention cache bytes per decoded token, summed over layers (docs/attention.md)."""
        per_elem = torch.finfo(dtype).bits // 8
        return sum(layer.self_attn.cache_elements_per_token() for layer in self.layers) * per_elem

    def _embed(self, tokens: Tensor) -> Tensor:
        return self.dropout(self.embed(tokens) * self.embed_scale)

    def forward(
        self, tokens: Tensor, token_lens: Tensor, memory: Tensor, memory_lens: Tensor
    ) -> Tensor:
        """Teacher-forced logits. tokens: (B, L) decoder inputs ([bos] + target), token_lens (B,);
        memory: (B, S, memory_dim), memory_lens (B,). Returns (B, L, V)."""
        x = self._embed(tokens)
        arrangement = self.cfg.arrangement
        if arrangement == "cross":
            for layer in self.layers:
                x = layer(x, token_lens, layer.cross_attn.project_memory(memory), memory_lens)
        elif arrangement == "prefix":
            frames, frame_lens = self.project_frames(memory, memory_lens)
            for layer in self.layers:
                x = layer(x, token_lens, memory_lens=frame_lens, frames=frames)
        else:  # prompt
            seq, lens, where = pack_prefix(self.projector(memory), memory_lens, x, token_lens)
            for layer in self.layers:
                seq = layer(seq, lens)
            x = seq.gather(1, where[..., None].expand(-1, -1, seq.shape[-1]))
        return self.output(self.norm(x))

    def project_frames(self, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, Tensor]:
        """prefix arrangement: memory (B, S, memory_dim) -> frames (B, S // k, d), (B,) lengths."""
        assert isinstance(self.projector, FrameProjector)
        return self.projector(memory), self.frame_lengths(memory_lens)

    def frame_lengths(self, memory_lens: Tensor) -> Tensor:
        """(B,) encoder output lengths -> (B,) frames the decoder sees: the prefix projector
        stacks k frames into one (S -> S // k); cross and prompt see every frame."""
        if isinstance(self.projector, FrameProjector):
            return memory_lens // self.projector.stack
        return memory_lens

    @torch.no_grad()
    def init_state(
        self,
        memory: Tensor,
        memory_lens: Tensor,
        beam: int = 1,
        ancestry: bool = False,
        *,
        max_len: int | None = None,
        share_prefix: bool = True,
    ) -> DecoderState:
        """Decoding state for B utterances x `beam` hypotheses. memory: (B, S, memory_dim).
        ancestry: append-only caches that beam reordering never copies. max_len: the most
        tokens any hypothesis will be fed (beam search knows it): each row's own cache part is
        then allocated once, exactly, and never grows. share_prefix: the frames' slots stored
        once per utterance (False: in every hypothesis's rows, the naive engine)."""
        B = memory.shape[0]
        kw = dict(ancestry=ancestry, share_prefix=share_prefix)
        if self.cfg.arrangement == "cross":
            own = own_slots_needed(
                torch.zeros_like(memory_lens), max_len, self.stride, share_prefix
            )
            cap = {"capacity": own * self.stride, "growable": False} if own else {}
            caches = [layer.self_attn.new_cache(B * beam, **kw, **cap) for layer in self.layers]
            kvs = [layer.cross_attn.project_memory(memory) for layer in self.layers]
            return DecoderState(caches, kvs, memory_lens, beam)
        # Own part: one slot (MTLA's incomplete chunk) until expand sizes it for the search.
        caches = [layer.self_attn.new_cache(B, capacity=self.stride, **kw) for layer in self.layers]
        if self.cfg.arrangement == "prefix":
            # The frames are the same in every layer: each layer's cache straight from them.
            frames, memory_lens = self.project_frames(memory, memory_lens)
            for layer, cache in zip(self.layers, caches):
                layer.self_attn.prefill(frames, memory_lens, cache)
        else:  # prompt: run the projected frames through every layer once
            x = self.projector(memory)
            for layer, cache in zip(self.layers, caches):
                x = layer(x, memory_lens, cache=cache)
        own = own_slots_needed(memory_lens, max_len, self.stride, share_prefix)
        for cache in caches:  # then give each hypothesis its own rows
            cache.expand(beam, own)
        return DecoderState(caches, None, memory_lens, beam)

    @property
    def stride(self) -> int:
        """Tokens per cache slot (every layer has the same self-attention)."""
        return self.layers[0].self_attn.stride

    @torch.no_grad()
    def step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """tokens: (N,) the latest token of each row. Returns next-token logits (N, V)."""
        x = self._embed(tokens)[:, None]
        kvs = state.memory_kv or [None] * len(self.layers)
        for layer, cache, kv in zip(self.layers, state.caches, kvs):
            x = layer.step(x, cache, kv, state.memory_lens, state.beam)
        return self.output(self.norm(x[:, 0]))
