"""The Python inference API: a trained experiment directory in, n-best hypotheses out.

    s2t = Speech2Text.from_dir("exp/tiny_mtla_s2_prefix")
    s2t = Speech2Text.from_pretrained("model.tar.gz")   # an s2s-pack file, or a directory
    s2t("audio.flac")[0].text            # any sample rate, mono or stereo
    s2t(["a.wav", "b.wav"])              # n-best lists in order, decoded in batches
    for seg in s2t.transcribe("talk.wav"):  # a long recording: voice activity segments,
        print(seg.start, seg.end, seg.text)  #   decoded in batches
    s2t.decode_texts(["a document ..."])  # summarisation (text-source) models

Features are computed exactly as in training (the experiment's FbankConfig, CMVN and
sample rate); decoding is the batched beam search of s2s.decode.beam_search.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from s2s.attention.masks import lengths_to_padding_mask
from s2s.data.audio import AudioError
from s2s.data.sampler import plan_batches
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from s2s.data.vad import VadConfig
from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.decode.ctc_prefix import CTCPrefixScorer
from s2s.decode.scorer_set import search_scorers, view_ensemble
from s2s.decode.scorers import DecoderScorer, LMScorer, Weighted
from s2s.experiment import ExperimentConfig, load_cmvn, load_experiment

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "onnxruntime")
#: a search's batch: at most BATCH_FRAMES padded input frames and MAX_BATCH inputs, length-
#: sorted (plan_batches). A step's fixed costs (its dozens of small operations a layer) are
#: paid once for every row of the batch, and finished utterances leave the search as it goes
#: (beam_search's shrink), so larger batches decode faster (BENCHMARKS.md §21).
BATCH_FRAMES = 32000
MAX_BATCH = 256
#: the most padded input frames the encoder takes at once (encode_sources)
ENCODE_FRAMES = 8000


@dataclass
class Result:
    text: str
    tokens: list[int]
    score: float
    log_prob: float


@dataclass
class Segment:
    """One voice-activity segment of a long recording: [start, end) in seconds of the input
    and its n-best list. Sample-exact at the model's rate: start * Speech2Text.sample_rate is
    the first sample of the (resampled) input that the segment decoded."""

    start: float
    end: float
    nbest: list[Result]

    @property
    def text(self) -> str:
        return self.nbest[0].text


class Speech2Text:
    def __init__(
        self,
        model,
        tokenizer,
        cfg: ExperimentConfig,
        device: str | torch.device = "cpu",
        decode: BeamSearchConfig | None = None,
        fbank=None,
        lm=None,
    ) -> None:
        if isinstance(model, torch.nn.Module):  # (an ONNX bundle's model is not)
            # The frontend's convolutions in the layout they trained in: channels-last
            # (oneDNN's own) takes a third off the encoder's time on the CPU (BENCHMARKS §21).
            layout = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
            model = model.to(memory_format=layout)
        self.model = model.to(device).eval()
        self.lm = lm.to(device).eval() if lm is not None else None  # fused with decode.lm_weight
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(device)
        self.decode_cfg = decode or cfg.decode
        self.cmvn = load_cmvn(cfg.data.cmvn)
        self.fbank = fbank
        self.peak_cache_bytes = 0  # the most any one search's self-attention caches allocated
        self._unpacked = None  # from_pretrained's temporary directory for a model pack
        views = self.decode_cfg.encoder_views
        if views > 1 and getattr(self.model, "subsampling_factor", 1) < 2:
            raise ValueError(
                f"decode.encoder_views={views} encodes the input started at points of the speech "
                "frontend's subsampling step: it needs a speech model that subsamples, not "
                + (
                    "an ONNX bundle that does not say how (exported before s2s-export wrote "
                    "it: export it again)"
                    if not isinstance(model, torch.nn.Module)
                    else "this model"
                )
                + " (decode.encoder_views=1 decodes it)"
            )

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
        ("decode.beam_size=2", ...), the later winning (experiment.decoding_config). With
        decode.lm set, that language model is loaded too. All of it is
        s2s.experiment.load_experiment: ExperimentError naming exp_dir when it fails."""
        exp = load_experiment(
            exp_dir,
            checkpoint=checkpoint,
            decode_config=decode_config,
            decode_overrides=decode_overrides,
        )
        return cls(exp.model, exp.tokenizer, exp.cfg, device=device, fbank=exp.fbank, lm=exp.lm)

    @classmethod
    def from_bundle(
        cls,
        folder: str | Path,
        *,
        device: str = "cpu",
        decode_config: str | Path | None = None,
        decode_overrides: Sequence[str] = (),
        threads: int = 0,
    ) -> Speech2Text:
        """An ONNX bundle written by s2s-export, decoded by onnxruntime on the CPU: the same
        features, beam search and cache layout as from_dir (s2s.export.runtime). Raises
        BundleError (a ValueError) naming the folder for a bundle that cannot be run."""
        from s2s.export.bundle import read_bundle

        folder = Path(folder)
        manifest = read_bundle(folder)  # before onnxruntime: a bad bundle is the clearer error
        try:
            from s2s.export.runtime import OnnxModel
        except ImportError as e:
            raise ValueError(
                f"{folder}: decoding an ONNX bundle needs onnxruntime (pip install 's2s[onnx]')"
            ) from e
        exp = load_experiment(
            folder, decode_config=decode_config, decode_overrides=decode_overrides, model=False
        )
        model = OnnxModel(folder, threads=threads, manifest=manifest)  # checked once, above
        return cls(model, exp.tokenizer, exp.cfg, device=device, fbank=exp.fbank, lm=exp.lm)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        checkpoint: str = "",
        decode_config: str | Path | None = None,
        decode_overrides: Sequence[str] = (),
        backend: str = "auto",
        threads: int = 0,
    ) -> Speech2Text:
        """An experiment directory (as from_dir), an ONNX bundle written by s2s-export (as
        from_bundle), or a model pack written by s2s-pack, which is checked
        (s2s.pack.unpack_model: PackError for a damaged one) and unpacked into a temporary
        directory that lives as long as the returned object; its weights are read
        weights-only. backend: "torch", "onnxruntime" (a bundle), or "auto" (a bundle runs on
        onnxruntime, anything else on torch). threads: onnxruntime's intra-op threads (0: its
        default)."""
        from s2s.export.bundle import is_bundle

        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} not in {BACKENDS}")
        path = Path(path)
        kwargs = dict(device=device, decode_config=decode_config, decode_overrides=decode_overrides)
        bundle = is_bundle(path)
        if backend == "onnxruntime" or (backend == "auto" and bundle):
            if checkpoint:
                raise ValueError(
                    f"{path}: an ONNX bundle holds one set of weights; drop --checkpoint"
                )
            trained = (path / "model_avg.pt").is_file() or (path / "checkpoints").is_dir()
            if not bundle and (path / "config.yaml").is_file() and trained:
                raise ValueError(
                    f"{path}: an experiment, not an ONNX bundle: export it first "
                    f"(s2s-export {path} OUT) or decode it with --backend torch"
                )
            return cls.from_bundle(path, threads=threads, **kwargs)
        if bundle:
            raise ValueError(f"{path}: an ONNX bundle runs on --backend onnxruntime only")
        if path.is_dir():
            return cls.from_dir(path, checkpoint=checkpoint, **kwargs)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such experiment directory or model pack")
        if checkpoint:
            raise ValueError(f"{path}: a model pack holds one set of weights; drop --checkpoint")
        import tempfile

        from s2s.pack import unpack_model

        tmp = tempfile.TemporaryDirectory(prefix="s2s-pack-")
        try:
            s2t = cls.from_dir(unpack_model(path, tmp.name), **kwargs)
        except BaseException:
            tmp.cleanup()
            raise
        s2t._unpacked = tmp  # removed when s2t is
        return s2t

    # --- inputs ---------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.fbank.sample_rate

    def features(self, wave: Tensor) -> Tensor:
        """(N,) mono waveform at self.sample_rate -> normalised (T, F) features."""
        from s2s.data.features import compute_features

        return self.normalize(compute_features(wave, self.fbank))

    def normalize(self, feats: Tensor) -> Tensor:
        """(T, F) features as computed (compute_features, or a dump's) -> (T', F) what the
        encoder reads: onset-aligned where decode.onset_pad_ms says (align_onset), then CMVN
        (the experiment's global statistics, else the utterance's own)."""
        from s2s.data.features import align_onset, utterance_cmvn

        pad_ms = self.decode_cfg.onset_pad_ms
        if pad_ms is not None:
            pad = round(pad_ms / self.fbank.frame_shift_ms)
            aligned = align_onset(feats, pad, self.decode_cfg.onset_below_db)
            # an onset in the last frames and a short pad would leave fewer frames than the
            # frontend takes: such an input is decoded as it is
            if aligned.shape[0] >= self.model.min_input_length:
                feats = aligned
        return self.cmvn(feats) if self.cmvn is not None else utterance_cmvn(feats)

    def load(self, path: str | Path) -> Tensor:
        from s2s.data.audio import load_audio

        return load_audio(path, target_sr=self.sample_rate)

    def model_features(self, wave: Tensor, name: str) -> Tensor:
        """(N,) waveform -> (T, F) features, or AudioError naming `name` when the audio gives
        fewer frames than the encoder's frontend needs."""
        fb = self.fbank
        need = self.model.min_input_length
        if wave.numel() >= fb.window_samples:
            feats = self.features(wave)
            if feats.shape[0] >= need:
                return feats
        need_ms = fb.frame_length_ms + (need - 1) * fb.frame_shift_ms  # T = (N - window)/shift + 1
        raise AudioError(
            f"{name}: too short: {1000 * wave.numel() / fb.sample_rate:.0f} ms of audio; the "
            f"model needs at least {need_ms:g} ms ({need} feature frames)"
        )

    # --- decoding -------------------------------------------------------------------------
    def scorers(self) -> dict[str, Weighted]:
        """The weighted scorers decode_cfg asks for (s2s.decode.scorers): the model's decoder,
        its CTC head's prefix scores, the language model."""
        return search_scorers(
            self.decode_cfg,
            DecoderScorer(self.model.decoder),
            ctc=CTCPrefixScorer(self.model.ctc_log_probs, blank=PAD_ID, eos=EOS_ID),
            lm=LMScorer(self.lm) if self.lm is not None else None,
        )

    @torch.inference_mode()
    def encode_sources(self, sources: list[Tensor]) -> tuple[Tensor, Tensor]:
        """sources: (T, F) feature matrices or (T,) token-id vectors -> memory (B, S, d) and
        lengths (B,), in the order given: the one encoding the search reads (encode_views;
        with decode.views_merge="scores" there are several: ValueError)."""
        encodings = self.encode_views(sources)
        if len(encodings) > 1:
            raise ValueError(
                f"decode.views_merge=scores searches {len(encodings)} encodings: use encode_views"
            )
        return encodings[0]

    @torch.inference_mode()
    def encode_views(self, sources: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """sources as encode_sources -> the encodings the search reads, each (memory (B, S, d),
        lengths (B,)) in the order given: one, or with decode.encoder_views=N > 1 and
        views_merge="scores" one per view of each speech source (_encode). Past
        ENCODE_FRAMES padded frames the encoder runs over length-sorted chunks of at most
        that many (its activations grow with the padded length, and a short source padded
        to a long one's length is computed for nothing), and the chunks' outputs are padded
        into one batch for the search."""
        chunks = plan_batches(
            [s.shape[0] for s in sources], ENCODE_FRAMES, len(sources), longest_first=True
        )
        if len(chunks) == 1:  # one padded batch, in the order given
            return self._encode(sources)
        parts = [self._encode([sources[i] for i in chunk]) for chunk in chunks]
        back = torch.tensor([i for chunk in chunks for i in chunk], device=self.device).argsort()
        pad = torch.nn.functional.pad
        out = []
        for view in zip(*parts):  # each view's encodings of the chunks
            S = max(m.shape[1] for m, _ in view)
            memory = torch.cat([pad(m, (0, 0, 0, S - m.shape[1])) for m, _ in view])
            out.append((memory[back], torch.cat([n for _, n in view])[back]))
        return out

    def _encode(self, sources: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """One padded batch through the encoder -> [(memory (B, S, d), lengths (B,))]; with
        decode.encoder_views=N > 1 (speech), its N views (_view_encodings): their mean
        (views_merge="encodings") or each of them ("scores")."""
        views = self.decode_cfg.encoder_views
        if views == 1 or not sources[0].is_floating_point():
            return [self._encode_batch(sources)]
        encoded = self._view_encodings(sources, views)
        if self.decode_cfg.views_merge == "scores":
            return encoded
        S = min(m.shape[1] for m, _ in encoded)
        lens = torch.stack([n for _, n in encoded]).amin(0)
        memory = torch.stack([m[:, :S] for m, _ in encoded]).mean(0)
        return [(memory.masked_fill(lengths_to_padding_mask(lens, S)[..., None], 0.0), lens)]

    def _view_encodings(self, sources: list[Tensor], views: int) -> list[tuple[Tensor, Tensor]]:
        """sources (T, F) -> per view j < views, the encoding (memory (B, S_j, d), lengths
        (B,)) of each source started k = j * factor // views frames in (factor: the
        frontend's subsampling; a source the frontend could not take that much shorter keeps
        its start). Over the points of the subsampling step, what is searched depends less
        on where the step starts, which decides more of the demo's flipped answers than the
        silence in front does (BENCHMARKS.md §41)."""
        factor, need = self.model.subsampling_factor, self.model.min_input_length
        encoded = []
        for k in sorted({j * factor // views for j in range(views)}):
            view = [s[k:] if s.shape[0] - k >= need else s for s in sources]
            encoded.append(self._encode_batch(view))
        return encoded

    def _encode_batch(self, sources: list[Tensor]) -> tuple[Tensor, Tensor]:
        """One padded batch through the encoder: memory (B, S, d), lengths (B,)."""
        pad_value = 0.0 if sources[0].is_floating_point() else PAD_ID
        lens = torch.tensor([s.shape[0] for s in sources], device=self.device)
        src = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True, padding_value=pad_value)
        return self.model.encode(src.to(self.device), lens)

    @torch.inference_mode()
    def decode_sources(self, sources: list[Tensor]) -> list[list[Result]]:
        """sources: (T, F) feature matrices or (T,) token-id vectors -> n-best per source,
        searched together (one beam search over all of them)."""
        encodings = self.encode_views(sources)
        scorers = self.scorers()
        if len(encodings) > 1:  # decode.views_merge="scores": an ensemble of the views
            scorers = view_ensemble(scorers, encodings)
        memory, memory_lens = encodings[0]  # the first view starts at 0: the longest
        search: dict = {}
        hyps = beam_search(
            scorers, memory, memory_lens, self.decode_cfg, bos_id=BOS_ID, eos_id=EOS_ID,
            blank_id=PAD_ID, stats=search,
        )  # fmt: skip
        self.peak_cache_bytes = max(self.peak_cache_bytes, search["peak_cache_bytes"])
        return [
            [Result(self.tokenizer.decode(h.tokens), h.tokens, h.score, h.log_prob) for h in nb]
            for nb in hyps
        ]

    def decode_batched(
        self, sources: list[Tensor], batch_frames: int = BATCH_FRAMES, max_batch: int = MAX_BATCH
    ) -> list[list[Result]]:
        """decode_sources over length-sorted batches (plan_batches); n-best lists in the order
        of `sources`."""
        out: list[list[Result] | None] = [None] * len(sources)
        for batch in plan_batches(
            [s.shape[0] for s in sources], batch_frames, max_batch, longest_first=True
        ):
            for i, nbest in zip(batch, self.decode_sources([sources[i] for i in batch])):
                out[i] = nbest
        return out  # type: ignore[return-value]

    def _waveform(self, speech: str | Path | Tensor, sample_rate: int | None) -> tuple[str, Tensor]:
        """A path, or a waveform (N,) / (C, N) at `sample_rate` -> (its name for messages,
        (N,) mono at self.sample_rate)."""
        if self.fbank is None:
            raise ValueError("this model reads text: use decode_texts()")
        if isinstance(speech, str | Path):
            return str(speech), self.load(speech)
        wave = speech.float()
        if wave.dim() == 2:  # (channels, samples): down-mix
            wave = wave.mean(0)
        if sample_rate is None:
            raise ValueError("a waveform needs its sample_rate")
        if sample_rate != self.sample_rate:
            import torchaudio.functional as AF

            wave = AF.resample(wave, sample_rate, self.sample_rate)
        return "the waveform", wave

    def __call__(
        self, speech: str | Path | Tensor | Sequence[str | Path | Tensor], sample_rate=None
    ) -> list[Result] | list[list[Result]]:
        """A path, or a waveform (N,) / (C, N) at `sample_rate` -> the n-best list; a list of
        them -> their n-best lists in the same order, decoded in length-sorted batches
        (iter_decode).

        Raises AudioError, naming the file, for audio that cannot be read, is too short for the
        model, or is too long to decode in the memory there is (iter_decode reports it per
        input and goes on with the others, as s2s-decode does)."""
        single = not isinstance(speech, list | tuple)
        inputs = [speech] if single else speech
        out: list = [None] * len(inputs)
        for i, nbest in self.iter_decode(inputs, sample_rate):
            if isinstance(nbest, AudioError):
                raise nbest
            out[i] = nbest
        return out[0] if single else out

    def iter_decode(
        self,
        inputs: Sequence[str | Path | Tensor],
        sample_rate: int | None = None,
        batch_frames: int = BATCH_FRAMES,
        max_batch: int = MAX_BATCH,
    ) -> Iterator[tuple[int, list[Result] | AudioError]]:
        """Audio files or waveforms (as for __call__) -> (index, its n-best list) per input,
        decoded as a data dir is (decode_datadir): in batches of similar lengths, longest
        first, at most `batch_frames` padded feature frames and `max_batch` inputs, so batch by
        batch and not in the order given. Lengths come from the files' headers; one batch's
        audio is read at a time. An input that cannot be read, or is too short or too long for
        the model, gives (index, AudioError naming it) and the others are decoded; a batch that
        runs out of memory is decoded one input at a time."""
        frames: dict[int, int] = {}
        for i, x in enumerate(inputs):
            try:
                frames[i] = self._planned_frames(x, sample_rate)
            except AudioError as e:
                yield i, e
        index = list(frames)
        for batch in plan_batches(
            [frames[i] for i in index], batch_frames, max_batch, longest_first=True
        ):
            ready: dict[int, tuple[str, Tensor, Tensor]] = {}
            for i in (index[j] for j in batch):
                try:
                    name, wave = self._waveform(inputs[i], sample_rate)
                    ready[i] = (name, wave, self.model_features(wave, name))
                except AudioError as e:
                    yield i, e
            yield from self._decode_ready(ready)

    def _planned_frames(self, x: str | Path | Tensor, sample_rate: int | None) -> int:
        """Feature frames an input will have, from a file's header (AudioError when it cannot
        be read) or a waveform's length, without reading the audio."""
        if self.fbank is None:
            raise ValueError("this model reads text: use decode_texts()")
        if isinstance(x, str | Path):
            from s2s.data.audio import audio_duration

            samples = round(audio_duration(x) * self.sample_rate)
        else:
            samples = round(x.shape[-1] * self.sample_rate / (sample_rate or self.sample_rate))
        return self.fbank.num_frames(samples)

    def _decode_ready(
        self, ready: dict[int, tuple[str, Tensor, Tensor]]
    ) -> Iterator[tuple[int, list[Result] | AudioError]]:
        """ready: index -> (name, waveform, features). Decodes them together; out of memory,
        each alone, one that still runs out giving its AudioError."""
        if not ready:
            return
        try:
            nbests = self.decode_sources([f for _, _, f in ready.values()])
        except RuntimeError as e:
            if not _out_of_memory(e):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # give the next input the memory back
            if len(ready) > 1:
                for i, item in ready.items():
                    yield from self._decode_ready({i: item})
                return
            [(i, (name, wave, feats))] = ready.items()
            yield (
                i,
                AudioError(
                    f"{name}: too long for this model on {self.device}: "
                    f"{wave.numel() / self.sample_rate:.1f} s of audio ({feats.shape[0]} feature "
                    "frames) ran out of memory"
                ),
            )
            return
        yield from zip(ready, nbests)

    def transcribe(
        self,
        speech: str | Path | Tensor,
        sample_rate: int | None = None,
        vad: VadConfig | None = None,
        batch_frames: int = BATCH_FRAMES,
    ) -> list[Segment]:
        """A long recording (a path, or a waveform as for __call__) -> its speech segments,
        each decoded alone: energy VAD on the fbank frames with a maximum segment length
        (s2s.data.vad), then the segments' own features (as if each were a file of its own)
        decoded in length-sorted batches. A segment shorter than the model's minimum input is
        logged and left out; an input with no speech gives []."""
        from s2s.data.features import compute_fbank, frame_energy_db
        from s2s.data.vad import frame_to_samples, speech_spans

        name, wave = self._waveform(speech, sample_rate)
        if wave.numel() < self.fbank.window_samples:
            raise AudioError(f"{name}: too short: {wave.numel()} samples")
        energy = frame_energy_db(compute_fbank(wave, self.fbank))
        spans = speech_spans(energy, self.fbank.frame_shift_ms / 1000, vad or VadConfig())
        sr = self.sample_rate
        kept, sources = [], []
        for span in spans:
            a, b = frame_to_samples(span, self.fbank, wave.numel())
            try:
                sources.append(
                    self.model_features(wave[a:b], f"{name} [{a / sr:.2f}, {b / sr:.2f}) s")
                )
            except AudioError as e:
                log.warning("%s: left out", e)
                continue
            kept.append((a, b))
        nbests = self.decode_batched(sources, batch_frames)
        return [Segment(a / sr, b / sr, nb) for (a, b), nb in zip(kept, nbests)]

    def decode_texts(self, texts: Sequence[str]) -> list[list[Result]]:
        if self.fbank is not None:
            raise ValueError("this model reads speech: call it with audio")
        limit = self.cfg.data.max_src_len or None
        ids = [
            torch.tensor(self.tokenizer.encode(t)[:limit] or [self.tokenizer.unk_id]) for t in texts
        ]
        return self.decode_sources(ids)


def _out_of_memory(e: RuntimeError) -> bool:
    # CUDA raises torch.OutOfMemoryError; the CPU allocator raises a plain RuntimeError.
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e)
