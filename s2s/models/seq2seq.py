"""The encoder-decoder model: encoder (speech or text) -> decoder (cross or prefix), trained
with label-smoothed cross-entropy plus, optionally, CTC on the encoder output (ASR).

forward(batch) follows the trainer's contract: a dict with "loss" (per target token), the
token count and metrics to log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.models.decoder import Decoder, DecoderConfig
from s2s.models.encoder import EncoderConfig, build_encoder

PAD_ID, BOS_ID, EOS_ID = 0, 2, 3  # SentencePiece ids fixed by s2s.data.tokenizer; pad = blank


@dataclass
class ModelConfig:
    """encoder + decoder; ctc_weight in [0, 1) mixes CTC into the loss (ASR)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    ctc_weight: float = 0.0
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {self.ctc_weight}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def add_bos_eos(tgt: Tensor, tgt_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Targets (B, L) padded with PAD_ID -> decoder input [BOS] + y (B, L+1), output y + [EOS]
    (B, L+1) padded with PAD_ID, and their lengths (B,)."""
    B = tgt.shape[0]
    bos = tgt.new_full((B, 1), BOS_ID)
    inp = torch.cat((bos, tgt), 1)
    out = torch.cat((tgt, tgt.new_full((B, 1), PAD_ID)), 1)
    out[torch.arange(B, device=tgt.device), tgt_lens] = EOS_ID
    return inp, out, tgt_lens + 1


class Seq2SeqModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.encoder = build_encoder(cfg.encoder, vocab_size=vocab_size)
        self.decoder = Decoder(cfg.decoder, vocab_size, memory_dim=cfg.encoder.d_model)
        self.ctc = nn.Linear(cfg.encoder.d_model, vocab_size) if cfg.ctc_weight > 0 else None

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        """src: (B, T, F) features or (B, T) token ids -> memory (B, S, d), lengths (B,)."""
        return self.encoder(src, src_lens)

    @property
    def min_input_length(self) -> int:
        """The fewest source frames (or tokens) the encoder's frontend takes."""
        return self.encoder.frontend.min_input_length

    def ctc_log_probs(self, memory: Tensor) -> Tensor | None:
        """CTC log-posteriors (B, S, V) float32 over the encoder output, None without a head."""
        return None if self.ctc is None else self.ctc(memory).float().log_softmax(-1)

    def forward(self, batch) -> dict[str, Tensor]:
        memory, memory_lens = self.encode(batch.src, batch.src_lens)
        inp, out, lens = add_bos_eos(batch.tgt, batch.tgt_lens)
        logits = self.decoder(inp, lens, memory, memory_lens)  # (B, L+1, V)
        n_tokens = lens.sum()
        loss_att = (
            F.cross_entropy(
                logits.transpose(1, 2).float(),
                out,
                ignore_index=PAD_ID,
                label_smoothing=self.cfg.label_smoothing,
                reduction="sum",
            )
            / n_tokens
        )
        valid = out != PAD_ID
        acc = ((logits.argmax(-1) == out) & valid).sum() / n_tokens
        result = {"loss_att": loss_att, "acc": acc, "n_tokens": n_tokens}
        loss = loss_att
        if self.ctc is not None:
            loss_ctc = self.ctc_loss(memory, memory_lens, batch.tgt, batch.tgt_lens) / n_tokens
            loss = (1 - self.cfg.ctc_weight) * loss_att + self.cfg.ctc_weight * loss_ctc
            result["loss_ctc"] = loss_ctc
        result["loss"] = loss
        return result

    def ctc_loss(
        self, memory: Tensor, memory_lens: Tensor, tgt: Tensor, tgt_lens: Tensor
    ) -> Tensor:
        """Summed CTC loss (blank = PAD_ID). memory: (B, S, d); tgt: (B, L)."""
        log_probs = self.ctc(memory).float().log_softmax(-1).transpose(0, 1)  # (S, B, V)
        return F.ctc_loss(
            log_probs, tgt, memory_lens, tgt_lens, blank=PAD_ID, reduction="sum", zero_infinity=True
        )
