"""A target-side Transformer language model: the decoder's layers (any registered self-attention
variant, so MTLA's compressed cache serves it too) with no encoder and so no cross-attention.

Trained on the training texts (s2s-train --lm, recipe stage 7) and fused into beam search as one
more scorer beside the decoder and CTC (s2s.decode.beam_search, `decode.lm_weight`). For
decoding it keeps one AttentionCache per layer in a DecoderState, exactly as the decoder does,
so beam search reorders it through the same ancestry table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.data.tokenizer import PAD_ID
from s2s.models.decoder import DecoderConfig, DecoderLayer, DecoderState
from s2s.models.seq2seq import add_bos_eos


@dataclass
class LMConfig:
    """n_layers pre-LN layers of width d_model; `attention` picks the self-attention variant
    (docs/attention.md), as the decoder's does."""

    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.1
    tie_embeddings: bool = True
    attention: Any = field(default_factory=lambda: {"type": "mtla"})

    def __post_init__(self) -> None:
        self.attention = self.layer_config().attention  # validated, a plain dict

    def layer_config(self) -> DecoderConfig:
        """The decoder-layer settings (the arrangement is moot: an LM layer has no encoder)."""
        return DecoderConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            ffn_dim=self.ffn_dim,
            dropout=self.dropout,
            tie_embeddings=self.tie_embeddings,
            attention=dict(self.attention),
        )


class TransformerLM(nn.Module):
    """p(y_t | BOS, y_<t) over the target vocabulary (the ids of the ASR/ST tokenizer)."""

    def __init__(self, cfg: LMConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        layer_cfg = cfg.layer_config()
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model**-0.5)  # as the decoder's
        self.embed_scale = math.sqrt(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(DecoderLayer(layer_cfg, None) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.output = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.embed.weight

    def logits(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Teacher-forced, in parallel. tokens: (B, L) = [BOS] + y, right-padded; lengths (B,).
        Returns (B, L, V)."""
        x = self.dropout(self.embed(tokens) * self.embed_scale)
        for layer in self.layers:
            x = layer(x, lengths)
        return self.output(self.norm(x))

    def forward(self, batch) -> dict[str, Tensor]:
        """The trainer's contract: cross-entropy per target token (EOS included) of batch.tgt
        (B, L); the batch's source is not read."""
        inp, out, lens = add_bos_eos(batch.tgt, batch.tgt_lens)
        logits = self.logits(inp, lens)  # (B, L+1, V)
        n_tokens = lens.sum()
        loss = (
            F.cross_entropy(
                logits.transpose(1, 2).float(), out, ignore_index=PAD_ID, reduction="sum"
            )
            / n_tokens
        )
        acc = ((logits.argmax(-1) == out) & (out != PAD_ID)).sum() / n_tokens
        return {"loss": loss, "acc": acc, "n_tokens": n_tokens}

    @torch.no_grad()
    def init_state(
        self, n: int, *, ancestry: bool = False, max_len: int | None = None
    ) -> DecoderState:
        """Empty caches for n rows (B * beam, one utterance's rows adjacent). ancestry:
        append-only caches that reorder never copies (beam search's lean engine); max_len: the
        most tokens a row will be fed, so the cache is allocated once and never grows (its
        steps then read nothing back from the device: a compiled step, decode.compile)."""
        cap = {"capacity": max_len, "growable": False} if max_len else {}
        caches = [layer.self_attn.new_cache(n, ancestry=ancestry, **cap) for layer in self.layers]
        lens = torch.zeros(n, dtype=torch.long, device=self.embed.weight.device)
        return DecoderState(caches, None, lens)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """tokens: (N,) each row's latest token (BOS first). Returns next-token logits (N, V)."""
        x = self.dropout(self.embed(tokens) * self.embed_scale)[:, None]  # (N, 1, d)
        for layer, cache in zip(self.layers, state.caches):
            x = layer.step(x, cache)
        return self.output(self.norm(x[:, 0]))
