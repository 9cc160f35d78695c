"""Encoder-decoder cross-attention whose memory keys/values are computed once per utterance.

During beam search the K hypotheses of an utterance share one copy of the memory K/V: their
queries are folded into the query axis, (B*K, L) -> (B, K*L), so nothing is copied per beam.
"""

from __future__ import annotations

from torch import Tensor, nn

from s2s.attention.masks import lengths_to_padding_mask
from s2s.attention.ops import sdpa
from s2s.attention.probe import probing, report


class CrossAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, memory_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"cross-attention d_model {d_model} not divisible by {n_heads} heads")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(memory_dim, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """memory: (B, S, memory_dim) -> k, v: (B, H, S, D), once per utterance."""
        B, S, _ = memory.shape
        k, v = self.kv_proj(memory).view(B, S, 2, self.n_heads, self.head_dim).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(
        self, x: Tensor, memory_kv: tuple[Tensor, Tensor], memory_lens: Tensor, beam: int = 1
    ) -> Tensor:
        """x: (B*beam, L, d) queries, rows of one utterance adjacent; memory_kv from
        project_memory over B utterances; memory_lens: (B,). Returns (B*beam, L, d). Under a
        probe (s2s.attention.probe) it also reports "attention": the probabilities
        (B*beam, H, L, S) over the frames, 0 past an utterance's memory_lens."""
        k, v = memory_kv
        N, L, d = x.shape
        B = N // beam
        q = self.q_proj(x).view(B, beam * L, self.n_heads, self.head_dim).transpose(1, 2)
        keep = ~lengths_to_padding_mask(memory_lens, k.shape[2])  # (B, S)
        if probing():
            scores = (q.float() @ k.float().transpose(-1, -2)) * self.head_dim**-0.5
            probs = scores.masked_fill(~keep[:, None, None, :], float("-inf")).softmax(-1)
            S = k.shape[2]
            # (B, H, K*L, S) -> (B*K, H, L, S)
            probs = probs.view(B, self.n_heads, beam, L, S).transpose(1, 2)
            report(self, attention=probs.reshape(N, -1, L, S))
        out = sdpa(q, k, v, keep[:, None, None, :], dropout=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(N, L, d))
