"""What TensorBoard shows besides the losses: the figures a researcher watches to see whether
the decoder learns (ESPnet's report_bleu / report_wer and attention plots, plus MTLA's own).

At every validation (rank 0 only, eval mode, no gradient, no random number drawn):

- ``valid/<metric>``: the dev set decoded greedily by the attention decoder and scored with
  the recipe's metrics (s2s.metrics: bleu, chrf, wer, cer, ...), so a run shows its BLEU/WER
  per epoch and not only the teacher-forced accuracy;
- ``attention/self`` and ``attention/frames``: two figures of one fixed dev utterance's
  attention (the first of the first dev batch), heads averaged, one panel per decoder layer
  with its colour bar, the output token each row predicts on the y axis: its self-attention
  over the cache slots of its decoder inputs (for MTLA a key column is the partial slot after
  that token: only completed chunks and the query's own slot are seen), and its attention to
  the frames the decoder sees (cross-attention, or the frames part of the prefix
  arrangement's one softmax, or of the prompt's);
- ``merge/layer<i>/{mean,below_0.05,above_0.95,frames_mean,targets_mean}`` and a histogram
  ``merge/layer<i>``: MTLA's hyper-network merge weights w over the first dev batch's valid
  key positions (a weight near 0 drops its token from the slot, near 1 adds it whole);
- ``frontend/conv<i>_silent``: the share of each conv layer's channels of a conv2d speech
  frontend that are <= 0 everywhere on the first dev batch (Conv2dSubsampling.silent_channels:
  dead ReLUs); when every channel of the last layer is, a warning says the encoder hears
  nothing.

The monitor reaches into no module: what it draws is what `Seq2SeqModel.inspect(batch)`
returns (s2s.models.inspection), one teacher-forced forward whose attention modules report
into a probe (s2s.attention.probe). Figures are matplotlib's, rendered to images for
TensorBoard.

At every logged training step: ``grad_norm/layer<i>/<part>``, the gradient norm of each
projection of every decoder layer's self-attention (for MTLA: q_proj, dkv_proj, uk_proj,
uv_proj, out_proj, and the hyper-network's hyper_pe / hyper_latent), before clipping.

`train.monitor.enabled: false` turns all of it off.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from s2s.data.tokenizer import BOS_ID, EOS_ID
from s2s.experiment.train_config import MonitorConfig
from s2s.models.inspection import Inspection

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

SEARCH_BATCH = 256  # dev utterances searched together by the monitor's greedy decode


class TrainingMonitor:
    """Called by the Trainer: `grad_scalars(model)` after a logged step's backward,
    `on_validate(model, step, tb)` after each validation. `model` is a Seq2SeqModel."""

    def __init__(self, cfg: MonitorConfig, tokenizer, valid_loader: Iterable | None) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.valid_loader = valid_loader
        self.validations = 0  # on_validate calls in this process: the images' cadence

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
        self.validations += 1
        images = self.cfg.images and self.validations % self.cfg.images_every == 0
        was_training = model.training
        model.eval()
        rng = torch.get_rng_state()
        try:
            scores = self._score_dev(model) if self.cfg.metrics else {}
            probe = images or self.cfg.merge_stats
            # the first dev batch, read once for the probe and the frontend's channels
            first = None
            if probe or self.cfg.frontend_stats:
                first = next(iter(self.valid_loader), None)
            if first is not None:
                first = first.to(next(model.parameters()).device)
                if probe:
                    self._probe(model, first, step, tb, images)
                if self.cfg.frontend_stats:
                    self._frontend(model, first, step, tb)
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
        from s2s.decode.scorer_set import search_scorers
        from s2s.decode.scorers import DecoderScorer
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

    def _probe(self, model: nn.Module, batch, step: int, tb, images: bool) -> None:
        """Inspect the first dev batch (Seq2SeqModel.inspect: one teacher-forced forward) and
        draw it (`images`)."""
        seen = model.inspect(batch)
        if images and seen.self_attention is not None:
            for tag, fig in self.figures(seen, batch.utt_ids[0], step).items():
                tb.image(tag, render(fig), step)
        if self.cfg.merge_stats and seen.merge_weights is not None:
            self._merge(seen, step, tb)

    def figures(self, seen: Inspection, utt_id: str = "", step: int = 0) -> dict[str, Figure]:
        """Utterance 0's attention, heads averaged, one panel per layer: "attention/self", its
        decoder inputs over their own cache slots, and "attention/frames", over the frames
        (cross-attention, or the frames part of prefix's or prompt's one softmax). Rows: the
        output token each input predicts."""
        n = int(seen.token_lens[0])
        outputs = [self._piece(i) for i in seen.outputs[0, :n].tolist()]
        inputs = [self._piece(i) for i in seen.tokens[0, :n].tolist()]
        where = f"{utt_id}, step {step}" if utt_id else f"step {step}"
        layers = range(seen.n_layers)
        slots = "cache slot (after input token)" if seen.stride > 1 else "input token"
        return {
            "attention/self": attention_figure(
                [seen.self_map(i, 0).mean(0) for i in layers],
                outputs,
                inputs,
                xlabel=slots,
                title=f"decoder self-attention ({seen.arrangement}; {where})",
            ),
            "attention/frames": attention_figure(
                [seen.frames_map(i, 0).mean(0) for i in layers],
                outputs,
                None,
                xlabel="frame the decoder sees",
                title=f"attention to the frames ({seen.arrangement}; {where})",
            ),
        }

    def _piece(self, i: int) -> str:
        return self.tokenizer.id_to_piece(i) if self.tokenizer is not None else str(i)

    def _frontend(self, model: nn.Module, batch, step: int, tb) -> None:
        """The conv2d frontend's silent channels on the first dev batch (module docstring)."""
        frontend = getattr(getattr(model, "encoder", None), "frontend", None)
        if not hasattr(frontend, "silent_channels"):
            return
        silent = frontend.silent_channels(batch.src, batch.src_lens)
        tb.scalars({f"frontend/conv{i}_silent": v for i, v in enumerate(silent)}, step)
        if silent[-1] == 1.0:
            log.warning(
                "step %d: every channel of the speech frontend's last convolution is <= 0 on "
                "the dev batch: the encoder hears nothing and training has stalled (dead "
                "ReLUs: rerun with another train.seed, or model.encoder.subsampling_norm=true; "
                "docs/training.md)",
                step,
            )

    def _merge(self, seen: Inspection, step: int, tb) -> None:
        valid, is_frame = seen.key_masks()
        for i, w in enumerate(seen.merge_weights or []):
            values = {
                "mean": w[valid].mean(),
                "below_0.05": (w[valid] < 0.05).float().mean(),
                "above_0.95": (w[valid] > 0.95).float().mean(),
            }
            if seen.arrangement in ("prefix", "prompt"):
                values["frames_mean"] = w[is_frame].mean()
                values["targets_mean"] = w[valid & ~is_frame].mean()
            tb.scalars({f"merge/layer{i}/{k}": float(v) for k, v in values.items()}, step)
            tb.histogram(f"merge/layer{i}", w[valid], step)


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    decoder = getattr(model, "decoder", None)
    return list(decoder.layers) if decoder is not None else []


MAX_TICKS = 40  # tick labels per axis; longer axes label every k-th


def attention_figure(
    maps: list[Tensor],
    rows: list[str],
    cols: list[str] | None,
    *,
    xlabel: str,
    title: str,
) -> Figure:
    """One panel per layer of (rows, cols) attention probabilities (`maps`, each (R, C)): rows
    labelled by `rows` (R output tokens) on the y axis, columns by `cols` (C pieces) or by
    their index (None) on the x axis, each panel with its colour bar (0 to its largest value).
    A matplotlib Figure (no pyplot, no global state); `render` turns it into an image."""
    from matplotlib.figure import Figure

    n = len(maps)
    ncols = math.ceil(math.sqrt(n))  # 4 layers: 2 x 2; 6: 3 x 2; 12: 4 x 3
    nrows = -(-n // ncols)
    R, C = maps[0].shape
    width = min(6.0, 2.0 + 0.12 * C)
    height = min(6.0, 1.2 + 0.14 * R)
    fig = Figure(figsize=(width * ncols, height * nrows + 0.5), dpi=100, layout="constrained")
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, (ax, a) in enumerate(zip(axes, maps)):
        a = a.float().cpu().numpy()
        im = ax.imshow(a, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0)
        ax.set_title(f"layer {i}", fontsize=8)
        ax.set_ylabel("output token", fontsize=7)
        ax.set_xlabel(xlabel, fontsize=7)
        _label(ax.set_yticks, rows, a.shape[0])
        if cols is not None:
            _label(ax.set_xticks, cols, a.shape[1], rotation=90)
        ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=6)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def _label(set_ticks, labels: list[str], n: int, **kw) -> None:
    """Ticks at every k-th of n positions, labelled by `labels`, at most MAX_TICKS of them."""
    k = -(-n // MAX_TICKS)
    at = list(range(0, n, k))
    set_ticks(at, [labels[j] for j in at], **kw)


def render(fig: Figure) -> np.ndarray:
    """A Figure -> an (H, W, 3) float32 image in [0, 1], what TBLogger.image writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / 255.0
