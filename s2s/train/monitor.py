"""What TensorBoard shows besides the losses: the figures a researcher watches to see whether
the decoder learns (ESPnet's report_bleu / report_wer and attention plots, plus MTLA's own).

At every validation (rank 0 only, eval mode, no gradient, no random number drawn):

- ``valid/<metric>``: the dev set decoded greedily by the attention decoder and scored with
  the recipe's metrics (s2s.metrics: bleu, chrf, wer, cer, ...), so a run shows its BLEU/WER
  per epoch and not only the teacher-forced accuracy;
- ``attention/layer<i>/self`` and ``attention/layer<i>/frames``: images of one fixed dev
  utterance's attention (the first of the first dev batch), averaged over heads, rows = target
  tokens: its self-attention over the cache slots of the targets (for MTLA a key column is
  the partial slot after that token: only completed chunks and the query's own slot are seen),
  and its attention to the encoder frames (cross-attention, or the frames part of the prefix
  arrangement's one softmax, or of the prompt);
- ``merge/layer<i>/{mean,below_0.05,above_0.95,frames_mean,targets_mean}`` and a histogram
  ``merge/layer<i>``: MTLA's hyper-network merge weights w over the first dev batch's valid
  tokens (a weight near 0 drops its token from the slot, near 1 adds it whole).

At every logged training step: ``grad_norm/layer<i>/<part>``, the gradient norm of each
projection of every decoder layer's self-attention (for MTLA: q_proj, dkv_proj, uk_proj,
uv_proj, out_proj, and the hyper-network's hyper_pe / hyper_latent), before clipping.

`train.monitor.enabled: false` turns all of it off.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from s2s.data.tokenizer import BOS_ID, EOS_ID
from s2s.experiment.train_config import MonitorConfig

SEARCH_BATCH = 256  # dev utterances searched together by the monitor's greedy decode


class TrainingMonitor:
    """Called by the Trainer: `grad_scalars(model)` after a logged step's backward,
    `on_validate(model, step, tb)` after each validation. `model` is a Seq2SeqModel."""

    def __init__(self, cfg: MonitorConfig, tokenizer, valid_loader: Iterable | None) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.valid_loader = valid_loader

    # --- training steps ---------------------------------------------------------------------
    def grad_scalars(self, model: nn.Module) -> dict[str, float]:
        """Gradient norm of each child module of every decoder self-attention (parts without a
        gradient are left out)."""
        if not (self.cfg.enabled and self.cfg.grad_norms):
            return {}
        out: dict[str, float] = {}
        for i, layer in enumerate(_decoder_layers(model)):
            for name, part in layer.self_attn.named_children():
                grads = [p.grad for p in part.parameters() if p.grad is not None]
                if grads:
                    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
                    out[f"grad_norm/layer{i}/{name}"] = float(norm)
        return out

    # --- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def on_validate(self, model: nn.Module, step: int, tb) -> dict[str, float]:
        """Dev-set scores (returned, "valid/<metric>") and the images, merge-weight scalars and
        histograms (written to `tb`, a TBLogger)."""
        if not self.cfg.enabled or self.valid_loader is None:
            return {}
        t0 = time.time()
        was_training = model.training
        model.eval()
        rng = torch.get_rng_state()
        try:
            scores = self._score_dev(model) if self.cfg.metrics else {}
            if self.cfg.images or self.cfg.merge_stats:
                self._probe(model, step, tb)
        finally:
            torch.set_rng_state(rng)
            model.train(was_training)
        tb.scalars({"time/monitor_s": time.time() - t0}, step)
        return scores

    def _score_dev(self, model: nn.Module) -> dict[str, float]:
        """Greedy-decode the dev set (up to decode_utts) and score it. The loader's batches are
        only encoded; the search runs over up to SEARCH_BATCH utterances at once: at small
        sizes a search step costs the same for 30 utterances as for 200 (padding never
        changes a result: tests/test_beam_search.py)."""
        from s2s.decode.beam_search import BeamSearchConfig, beam_search
        from s2s.decode.scorers import DecoderScorer, search_scorers
        from s2s.metrics import compute

        device = next(model.parameters()).device
        frames: list[Tensor] = []
        refs: list[str] = []
        longest = 0
        limit = self.cfg.decode_utts or None
        for batch in self.valid_loader:
            batch = batch.to(device)
            memory, memory_lens = model.encode(batch.src, batch.src_lens)
            frames += [m[:n] for m, n in zip(memory, memory_lens.tolist())]
            refs += [
                self.tokenizer.decode(t[:n].tolist()) for t, n in zip(batch.tgt, batch.tgt_lens)
            ]
            longest = max(longest, int(batch.tgt_lens.max()))
            if limit and len(refs) >= limit:
                frames, refs = frames[:limit], refs[:limit]
                break
        if not refs:
            return {}
        cfg = BeamSearchConfig(
            beam_size=1, max_len_a=0.0, max_len_b=int(self.cfg.max_len_ratio * longest) + 5
        )
        scorers = search_scorers(cfg, DecoderScorer(model.decoder))
        hyps: list[str] = []
        for i in range(0, len(frames), SEARCH_BATCH):  # bounded memory on a large dev set
            part = frames[i : i + SEARCH_BATCH]
            memory = torch.nn.utils.rnn.pad_sequence(part, batch_first=True)
            memory_lens = torch.tensor([f.shape[0] for f in part], device=device)
            found = beam_search(scorers, memory, memory_lens, cfg, bos_id=BOS_ID, eos_id=EOS_ID)
            hyps += [self.tokenizer.decode(nbest[0].tokens) for nbest in found]
        values = compute(self.cfg.metrics, hyps, refs).values
        return {f"valid/{k}": float(v) for k, v in values.items()}

    def _probe(self, model: nn.Module, step: int, tb) -> None:
        """One teacher-forced forward of the first dev batch with every attention recording."""
        batch = next(iter(self.valid_loader), None)
        if batch is None:
            return
        batch = batch.to(next(model.parameters()).device)
        records = [_LayerRecord(layer) for layer in _decoder_layers(model)]
        encoded: dict[str, Tensor] = {}  # the encoder's output lengths (B,)
        hook = model.encoder.register_forward_hook(lambda m, i, out: encoded.update(lens=out[1]))
        try:
            model(batch)
        finally:
            hook.remove()
            for r in records:
                r.close()
        memory_lens = encoded["lens"]
        frames = int(_frame_lengths(model, memory_lens)[0])
        n_tgt = int(batch.tgt_lens[0]) + 1  # [bos] + target
        for i, r in enumerate(records):
            if self.cfg.images:
                self._images(r, i, frames, n_tgt, model.decoder.cfg.arrangement, step, tb)
            if self.cfg.merge_stats and "merge_weight" in r.self_rec:
                self._merge(r.self_rec, i, memory_lens, model, step, tb)

    def _images(self, r, i: int, P: int, L: int, arrangement: str, step: int, tb) -> None:
        att = r.self_rec.get("attention")
        if att is None:
            return
        a = att[0].mean(0)  # (queries, keys), utterance 0, heads averaged
        if arrangement == "cross":
            self_map, frames_map = a[:L, :L], None
            if r.cross_rec.get("attention") is not None:
                frames_map = r.cross_rec["attention"][0].mean(0)[:L, :P]
        elif arrangement == "prefix":  # queries are the targets; keys [frames ; targets]
            self_map, frames_map = a[:L, P : P + L], a[:L, :P]
        else:  # prompt: queries and keys both [frames ; targets]
            self_map, frames_map = a[P : P + L, P : P + L], a[P : P + L, :P]
        tb.image(f"attention/layer{i}/self", heat_map(self_map), step)
        if frames_map is not None:
            tb.image(f"attention/layer{i}/frames", heat_map(frames_map), step)

    def _merge(self, rec, i: int, memory_lens: Tensor, model, step: int, tb) -> None:
        w, lens = rec["merge_weight"], rec["lengths"]
        pos = torch.arange(w.shape[1], device=w.device)[None, :]
        valid = pos < lens[:, None]
        values = {
            "mean": w[valid].mean(),
            "below_0.05": (w[valid] < 0.05).float().mean(),
            "above_0.95": (w[valid] > 0.95).float().mean(),
        }
        if model.decoder.cfg.arrangement in ("prefix", "prompt"):
            P = _frame_lengths(model, memory_lens)[:, None]
            values["frames_mean"] = w[valid & (pos < P)].mean()
            values["targets_mean"] = w[valid & (pos >= P)].mean()
        tb.scalars({f"merge/layer{i}/{k}": float(v) for k, v in values.items()}, step)
        tb.histogram(f"merge/layer{i}", w[valid], step)


class _LayerRecord:
    """Turns on recording in one decoder layer's attention modules until close()."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.self_rec: dict[str, Tensor] = {}
        self.cross_rec: dict[str, Tensor] = {}
        layer.self_attn.record = self.self_rec
        if getattr(layer, "cross_attn", None) is not None:
            layer.cross_attn.record = self.cross_rec

    def close(self) -> None:
        self.layer.self_attn.record = None
        if getattr(self.layer, "cross_attn", None) is not None:
            self.layer.cross_attn.record = None


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    decoder = getattr(model, "decoder", None)
    return list(decoder.layers) if decoder is not None else []


def _frame_lengths(model: nn.Module, memory_lens: Tensor) -> Tensor:
    """(B,) frames the decoder sees per utterance (the prefix projector may stack frames)."""
    if model.decoder.cfg.arrangement == "prefix":
        return memory_lens // model.decoder.cfg.projector_stack
    return memory_lens


def heat_map(a: Tensor, min_size: int = 160) -> np.ndarray:
    """(rows, cols) attention probabilities -> an (H, W, 3) float image in [0, 1] (viridis,
    scaled by the map's maximum), each cell repeated so the shorter side has >= min_size px."""
    from matplotlib import colormaps

    a = a.float().cpu()
    a = a / a.max().clamp_min(1e-12)
    rgb = colormaps["viridis"](a.numpy())[..., :3]
    k = max(1, -(-min_size // max(1, min(a.shape))))
    return rgb.repeat(k, axis=0).repeat(k, axis=1)
