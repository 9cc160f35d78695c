"""The encoder-decoder model: encoder (speech or text) -> decoder (cross or prefix), trained
with label-smoothed cross-entropy plus, optionally, CTC on the encoder output: over the targets
(ASR; joint CTC/attention decoding uses it) and, for speech translation, over the source
transcript (ESPnet-ST's ASR multi-task: the encoder is taught to read the audio, monotonically,
while the decoder learns to translate; training only).

forward(batch) follows the trainer's contract: a dict with "loss" (per target token), the
token count and metrics to log. inspect(batch) returns what the same forward computes for a
person to look at (attention probabilities, merge weights, lengths: s2s.models.inspection).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.attention.probe import probe
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID  # pad = the CTC blank
from s2s.models.decoder import Decoder, DecoderConfig
from s2s.models.encoder import EncoderConfig, build_encoder
from s2s.models.inspection import Inspection


@dataclass
class ModelConfig:
    """encoder + decoder. The loss is (1 - ctc_weight - src_ctc_weight) * attention
    + ctc_weight * CTC over the targets + src_ctc_weight * CTC over the source transcript
    (data.src_ctc_field; both heads share the tokenizer). consistency_weight > 0 trains on two
    SpecAugment views of every utterance (data.specaug drawn twice: time shift, masks) and adds
    that weight times the symmetric KL between the two views' decoder distributions, each view
    pulled towards the other held fixed (CR-CTC's form, arXiv 2410.05101, on the decoder's
    token distributions, which line up whatever the views' time shifts)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    ctc_weight: float = 0.0
    src_ctc_weight: float = 0.0
    label_smoothing: float = 0.1
    consistency_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ctc_weight", "src_ctc_weight"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.ctc_weight + self.src_ctc_weight >= 1.0:
            raise ValueError(
                f"ctc_weight + src_ctc_weight must be < 1 (the attention loss keeps the rest), "
                f"got {self.ctc_weight} + {self.src_ctc_weight}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.consistency_weight < 0:
            raise ValueError(f"consistency_weight must be >= 0, got {self.consistency_weight}")


def add_bos_eos(tgt: Tensor, tgt_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Targets (B, L) padded with PAD_ID -> decoder input [BOS] + y (B, L+1), output y + [EOS]
    (B, L+1) padded with PAD_ID, and their lengths (B,)."""
    B = tgt.shape[0]
    bos = tgt.new_full((B, 1), BOS_ID)
    inp = torch.cat((bos, tgt), 1)
    out = torch.cat((tgt, tgt.new_full((B, 1), PAD_ID)), 1)
    out[torch.arange(B, device=tgt.device), tgt_lens] = EOS_ID
    return inp, out, tgt_lens + 1


def consistency_loss(logits: Tensor, valid: Tensor, views: int) -> Tensor:
    """Summed symmetric KL between the views' distributions, each against the other detached:
    sum over positions of KL(sg(p_b) || p_a) + KL(sg(p_a) || p_b) for each pair of views.
    logits: (V * B, L, C), view v in rows [v * B, (v + 1) * B); valid: (V * B, L) bool, the
    same for every view (the same targets). Returns a float32 scalar."""
    logp = logits.float().log_softmax(-1).unflatten(0, (views, -1))  # (V, B, L, C)
    mask = valid.unflatten(0, (views, -1))[0]  # (B, L)
    total = logits.new_zeros((), dtype=torch.float32)
    for a in range(views):
        for b in range(views):
            if a != b:  # KL(sg(p_b) || p_a): p_a learns from a fixed p_b
                target = logp[b].detach()
                kl = (target.exp() * (target - logp[a])).sum(-1)  # (B, L)
                total = total + kl[mask].sum()
    return total


class Seq2SeqModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.encoder = build_encoder(cfg.encoder, vocab_size=vocab_size)
        self.decoder = Decoder(cfg.decoder, vocab_size, memory_dim=cfg.encoder.d_model)
        d = cfg.encoder.d_model
        self.ctc = nn.Linear(d, vocab_size) if cfg.ctc_weight > 0 else None
        self.src_ctc = nn.Linear(d, vocab_size) if cfg.src_ctc_weight > 0 else None

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        """src: (B, T, F) features or (B, T) token ids -> memory (B, S, d), lengths (B,)."""
        return self.encoder(src, src_lens)

    @property
    def min_input_length(self) -> int:
        """The fewest source frames (or tokens) the encoder's frontend takes."""
        return self.encoder.frontend.min_input_length

    @property
    def subsampling_factor(self) -> int:
        """Input frames (or tokens) per encoder frame: the product of the frontend's strides."""
        return self.encoder.frontend.subsampling_factor

    def ctc_log_probs(self, memory: Tensor) -> Tensor | None:
        """CTC log-posteriors (B, S, V) float32 over the encoder output, None without a head."""
        return None if self.ctc is None else self.ctc(memory).float().log_softmax(-1)

    @torch.no_grad()
    def inspect(self, batch) -> Inspection:
        """What one teacher-forced forward of `batch` computes, for a person to look at: every
        decoder layer's attention probabilities, MTLA's merge weights, the encoder's output
        lengths and the frames the decoder sees (s2s.models.inspection). The forward is the
        plain one (its logits bitwise the same), in the mode the model is in (the monitor
        inspects in eval mode), run eagerly where train.compile compiled the layers; its
        attention modules report into a probe (s2s.attention.probe)."""
        with torch.compiler.set_stance("force_eager"), probe() as found:
            memory, memory_lens = self.encode(batch.src, batch.src_lens)
            inp, out, lens = add_bos_eos(batch.tgt, batch.tgt_lens)
            logits = self.decoder(inp, lens, memory, memory_lens)
        layers = list(self.decoder.layers)
        reports = [found.of(layer.self_attn) for layer in layers]
        cross = None
        if self.decoder.cfg.arrangement == "cross":
            cross = [found.of(layer.cross_attn)["attention"] for layer in layers]
        merge = None
        if all("merge_weight" in r for r in reports):
            merge = [r["merge_weight"] for r in reports]
        probs = None
        if all("attention" in r for r in reports):
            probs = [r["attention"] for r in reports]
        return Inspection(
            arrangement=self.decoder.cfg.arrangement,
            tokens=inp,
            outputs=out,
            token_lens=lens,
            memory_lens=memory_lens,
            frame_lens=self.decoder.frame_lengths(memory_lens),
            logits=logits,
            n_layers=len(layers),
            self_attention=probs,
            cross_attention=cross,
            merge_weights=merge,
            stride=self.decoder.stride,
        )

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
        cw, sw = self.cfg.ctc_weight, self.cfg.src_ctc_weight
        loss = (1 - cw - sw) * loss_att
        if self.ctc is not None:
            loss_ctc = self.ctc_loss(memory, memory_lens, batch.tgt, batch.tgt_lens) / n_tokens
            loss = loss + cw * loss_ctc
            result["loss_ctc"] = loss_ctc
        if self.src_ctc is not None:
            if batch.src_text is None:
                raise ValueError(
                    "model.src_ctc_weight > 0 needs the source transcript in the batch "
                    "(data.src_ctc_field)"
                )
            # per target token, like the other terms, so the weights mean what they say
            src, src_lens = batch.src_text, batch.src_text_lens
            loss_src = self.ctc_loss(memory, memory_lens, src, src_lens, self.src_ctc) / n_tokens
            loss = loss + sw * loss_src
            result["loss_src_ctc"] = loss_src
        views = getattr(batch, "views", 1)
        if self.cfg.consistency_weight > 0 and views > 1:
            loss_cons = consistency_loss(logits, valid, views) / n_tokens
            loss = loss + self.cfg.consistency_weight * loss_cons
            result["loss_cons"] = loss_cons
        result["loss"] = loss
        return result

    def ctc_loss(
        self,
        memory: Tensor,
        memory_lens: Tensor,
        tgt: Tensor,
        tgt_lens: Tensor,
        head: nn.Linear | None = None,
    ) -> Tensor:
        """Summed CTC loss (blank = PAD_ID) of `head` (default: the target CTC head).
        memory: (B, S, d); tgt: (B, L)."""
        head = self.ctc if head is None else head
        log_probs = head(memory).float().log_softmax(-1).transpose(0, 1)  # (S, B, V)
        return F.ctc_loss(
            log_probs, tgt, memory_lens, tgt_lens, blank=PAD_ID, reduction="sum", zero_infinity=True
        )
