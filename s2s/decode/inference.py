"""The Python inference API: a trained experiment directory in, n-best hypotheses out.

    s2t = Speech2Text.from_dir("exp/tiny_mtla_s2_prefix")
    s2t("audio.flac")[0].text            # any sample rate, mono or stereo
    s2t.decode_texts(["a document ..."])  # summarisation (text-source) models

Features are computed exactly as in training (the experiment's FbankConfig, CMVN and
sample rate); decoding is the batched beam search of s2s.decode.beam_search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.experiment import (
    ExperimentConfig,
    build_model,
    decoding_config,
    load_cmvn,
    load_model_weights,
    load_tokenizer,
)
from s2s.models.seq2seq import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Result:
    text: str
    tokens: list[int]
    score: float
    log_prob: float


class Speech2Text:
    def __init__(
        self,
        model,
        tokenizer,
        cfg: ExperimentConfig,
        device: str | torch.device = "cpu",
        decode: BeamSearchConfig | None = None,
        fbank=None,
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(device)
        self.decode_cfg = decode or cfg.decode
        self.cmvn = load_cmvn(cfg.data.cmvn)
        self.fbank = fbank

    @classmethod
    def from_dir(
        cls,
        exp_dir: str | Path,
        *,
        device: str = "cpu",
        checkpoint: str = "",
        decode_config: str | Path | None = None,
        decode_overrides: Sequence[str] = (),
    ) -> Speech2Text:
        """Load exp_dir/config.yaml, its tokenizer, CMVN and weights (model_avg.pt, else the
        latest checkpoint, or `checkpoint`). Decode settings: config.yaml's, then
        decode_config's (a YAML with a `decode:` section), then decode_overrides
        ("decode.beam_size=2", ...), the later winning (experiment.decoding_config)."""
        exp_dir = Path(exp_dir)
        cfg = decoding_config(exp_dir, decode_config, decode_overrides)
        tokenizer = load_tokenizer(cfg.data.tokenizer)
        model = build_model(cfg, tokenizer.vocab_size)
        load_model_weights(model, exp_dir, checkpoint)
        fbank = cfg.data.features if cfg.data.source == "speech" else None
        return cls(model, tokenizer, cfg, device=device, fbank=fbank)

    # --- inputs ---------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.fbank.sample_rate

    def features(self, wave: Tensor) -> Tensor:
        """(N,) mono waveform at self.sample_rate -> normalised (T, F) features."""
        from s2s.data.features import compute_fbank, utterance_cmvn

        feats = compute_fbank(wave, self.fbank)
        return self.cmvn(feats) if self.cmvn is not None else utterance_cmvn(feats)

    def load(self, path: str | Path) -> Tensor:
        from s2s.data.audio import load_audio

        return load_audio(path, target_sr=self.sample_rate)

    # --- decoding -------------------------------------------------------------------------
    @torch.no_grad()
    def decode_sources(self, sources: list[Tensor]) -> list[list[Result]]:
        """sources: (T, F) feature matrices or (T,) token-id vectors -> n-best per source."""
        lens = torch.tensor([s.shape[0] for s in sources])
        pad_value = 0.0 if sources[0].is_floating_point() else PAD_ID
        src = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True, padding_value=pad_value)
        memory, memory_lens = self.model.encode(src.to(self.device), lens.to(self.device))
        ctc_log_probs = None
        if self.decode_cfg.ctc_weight > 0:
            if self.model.ctc is None:
                raise ValueError(
                    f"decode ctc_weight={self.decode_cfg.ctc_weight} but the model has no CTC "
                    "head (train with model.ctc_weight > 0)"
                )
            ctc_log_probs = self.model.ctc(memory).float().log_softmax(-1)
        hyps = beam_search(
            self.model.decoder,
            memory,
            memory_lens,
            self.decode_cfg,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            ctc_log_probs=ctc_log_probs,
            blank_id=PAD_ID,
        )
        return [
            [Result(self.tokenizer.decode(h.tokens), h.tokens, h.score, h.log_prob) for h in nb]
            for nb in hyps
        ]

    def __call__(self, speech: str | Path | Tensor, sample_rate: int | None = None) -> list[Result]:
        """A path, or a waveform (N,) / (C, N) at `sample_rate` -> the n-best list."""
        if self.fbank is None:
            raise ValueError("this model reads text: use decode_texts()")
        if isinstance(speech, str | Path):
            wave = self.load(speech)
        else:
            wave = speech.float()
            if wave.dim() == 2:  # (channels, samples): down-mix
                wave = wave.mean(0)
            if sample_rate is None:
                raise ValueError("a waveform needs its sample_rate")
            if sample_rate != self.sample_rate:
                import torchaudio.functional as AF

                wave = AF.resample(wave, sample_rate, self.sample_rate)
        return self.decode_sources([self.features(wave)])[0]

    def decode_texts(self, texts: Sequence[str]) -> list[list[Result]]:
        if self.fbank is not None:
            raise ValueError("this model reads speech: call it with audio")
        limit = self.cfg.data.max_src_len or None
        ids = [
            torch.tensor(self.tokenizer.encode(t)[:limit] or [self.tokenizer.unk_id]) for t in texts
        ]
        return self.decode_sources(ids)
