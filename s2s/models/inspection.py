"""What a teacher-forced forward computed, for a person to look at: `Seq2SeqModel.inspect(batch)`
returns an `Inspection` (the training monitor draws it, s2s.train.monitor).

The decoder's attention modules report into a probe (s2s.attention.probe) during one ordinary
forward; the model, which owns them, puts the reports in layer order and says where each part of
the key axis is, so whoever draws them needs to know nothing of the arrangements' layouts:

- cross: self-attention (B, H, L, L) of the decoder inputs over their own cache slots, and
  cross-attention (B, H, L, S) over the encoder frames;
- prefix: one softmax (B, H, L, T) of the decoder inputs over the packed keys
  [frames_b ; targets_b] of each utterance b (T = max_b P_b + L_b, s2s.attention.packing);
- prompt: one softmax (B, H, T, T) over the same packed sequence: the frames run through the
  layers too, so they are queries as well.

Positions are those of the key axis: for MTLA (stride s > 1) key column j is the cache slot's
content right after token j (a chunk's partial merge), and a query sees only the completed
chunks and its own slot. H is the variant's number of attention heads (for mlra and gla the
(head, block) pairs that each attend).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Inspection:
    """One teacher-forced forward of a batch of B utterances, L = 1 + the longest target.

    arrangement: the decoder's ("cross", "prefix" or "prompt"). tokens: (B, L) decoder inputs
    [bos] + target, padded; outputs: (B, L) what each input position predicts, target + [eos];
    token_lens: (B,) both lengths. memory_lens: (B,) the encoder's output lengths; frame_lens:
    (B,) the frames the decoder sees (Decoder.frame_lengths: the prefix projector stacks
    frames). logits: (B, L, V), exactly the plain forward's. n_layers: the decoder's layers.
    self_attention: per layer, the self-attention probabilities (B, H, Q, T) as the
    arrangement has them (module docstring); cross_attention: per layer (B, H, L, S), cross
    arrangement only, else None; merge_weights: per layer MTLA's merge weights w (B, T) over
    the self-attention's key positions, None for every other variant (and MTLA with stride 1).
    stride: tokens per cache slot. Every probability is float32, 0 where the mask hides a key;
    each row sums to 1.
    self_attention is None when the layers report no probabilities (the authors' MTLA module
    that s2s.bench.authors trains in our decoder reports its merge weights only)."""

    arrangement: str
    tokens: Tensor
    outputs: Tensor
    token_lens: Tensor
    memory_lens: Tensor
    frame_lens: Tensor
    logits: Tensor
    n_layers: int
    self_attention: list[Tensor] | None
    cross_attention: list[Tensor] | None
    merge_weights: list[Tensor] | None
    stride: int

    @property
    def key_lens(self) -> Tensor:
        """(B,) valid self-attention key positions: the decoder inputs (cross), the frames and
        the decoder inputs (prefix, prompt)."""
        if self.arrangement == "cross":
            return self.token_lens
        return self.frame_lens + self.token_lens

    def key_masks(self) -> tuple[Tensor, Tensor]:
        """Over the self-attention's key axis T (that of self_attention, else merge_weights):
        (valid, is_frame), two (B, T) bool masks (the frames come first in prefix and prompt;
        none in cross)."""
        widths = self.self_attention or self.merge_weights
        T = widths[0].shape[-1] if widths else int(self.key_lens.max())
        pos = torch.arange(T, device=self.token_lens.device)[None, :]
        valid = pos < self.key_lens[:, None]
        if self.arrangement == "cross":
            return valid, torch.zeros_like(valid)
        return valid, valid & (pos < self.frame_lens[:, None])

    def self_map(self, layer: int, b: int) -> Tensor:
        """Utterance b's decoder inputs over their own cache slots in `layer`: (H, L_b, L_b),
        L_b = token_lens[b] (row i: input i, which predicts outputs[b, i]; column j: the slot
        after input j). In prefix and prompt the rest of each row's probability is on the
        frames (frames_map)."""
        assert self.self_attention is not None, "the layers reported no probabilities"
        a, L, P = self.self_attention[layer][b], int(self.token_lens[b]), int(self.frame_lens[b])
        if self.arrangement == "cross":
            return a[:, :L, :L]
        if self.arrangement == "prefix":  # queries: the inputs; keys: [frames ; inputs]
            return a[:, :L, P : P + L]
        return a[:, P : P + L, P : P + L]  # prompt: queries and keys both [frames ; inputs]

    def frames_map(self, layer: int, b: int) -> Tensor:
        """Utterance b's decoder inputs over the frames it sees in `layer`: (H, L_b, P_b),
        P_b = frame_lens[b]: the cross-attention, or the frames part of the one softmax."""
        L, P = int(self.token_lens[b]), int(self.frame_lens[b])
        if self.arrangement == "cross":
            assert self.cross_attention is not None
            return self.cross_attention[layer][b, :, :L, :P]
        assert self.self_attention is not None, "the layers reported no probabilities"
        a = self.self_attention[layer][b]
        if self.arrangement == "prefix":
            return a[:, :L, :P]
        return a[:, P : P + L, :P]
