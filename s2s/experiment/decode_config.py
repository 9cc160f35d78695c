"""The decode: section of an experiment config (BeamSearchConfig): a leaf dataclass below the
experiment schema; s2s.decode.beam_search, which reads it, re-exports it."""

from __future__ import annotations

from dataclasses import dataclass

COMPILE_MODES = ("default", "reduce-overhead")  # torch.compile's modes decode.compile takes
#: who computes a compiled CPU step's float32 Linears (decode.compile_gemm): "auto" times both
COMPILE_GEMMS = ("auto", "mkl", "onednn")
#: how decode.encoder_views' N encodings are combined (decode.views_merge)
VIEWS_MERGES = ("encodings", "scores")


@dataclass
class BeamSearchConfig:
    """beam_size: K (1 = greedy). nbest: hypotheses returned per utterance (<= K).
    Maximum output length per utterance: int(max_len_a * S + max_len_b), S = encoder frames
    after subsampling (fairseq's a/b); min_len: EOS is not allowed before this many tokens.
    length_penalty: exponent of the length normalisation (0 = raw log-prob sums).
    lm: a language-model experiment dir (s2s-train --lm) fused with weight lm_weight.
    kernels: decode steps on CUDA run the Triton kernels (False: the PyTorch path, to compare;
    s2s-decode --no-kernels).
    compile: the decoder's and the LM's step compiled (torch.compile, fullgraph; lean engine;
    s2s.decode.compiled), one graph per shape bucket, compile_buckets sizes per power of two
    (0: exact shapes, a graph per distinct shape). compile_mode: "default", or
    "reduce-overhead": on CUDA each compiled graph is also captured as a CUDA graph and
    replayed (one launch a step; the caches' tensors are marked static, so the step writes into
    them in place); on the CPU it is the same as "default". compile_gemm: on the CPU, whose
    packed GEMM computes the compiled graphs' float32 Linears: "mkl" (inductor's own choice
    where torch has MKL), "onednn", or "auto", the faster of the two at the model's shapes,
    timed once per process (MKL runs its AVX2 code on AMD CPUs: oneDNN is up to 2x faster
    on AVX-512 ones; s2s.decode.compiled); under oneDNN, the Linear shapes it computes faster
    16 columns wider are computed so (timed too).
    encoder_views: N > 1 encodes each speech input N times, started N evenly spaced frames
    into the frontend's subsampling step (0, 3 for 2 views of a 6x frontend; the views keep
    an input the frontend could not take shorter): the output depends less on where the
    subsampling grid happens to start (BENCHMARKS.md §41, §43); Speech2Text, either backend.
    views_merge: "encodings" searches the mean of the N encoder outputs (N times the
    encoder's cost); "scores" searches with every scorer once per view, each reading its
    view's encoding at 1/N of its weight (an ensemble over the grid's phases: N times the
    encoder's and the search's cost and caches).
    onset_pad_ms: None (speech decoded as it comes) or P: each speech input's features cut or
    padded to start P ms (rounded to frames) before its speech onset, the first frame within
    onset_below_db dB of the loudest level it holds for 30 ms (s2s.data.features.speech_onset,
    align_onset), so the same speech
    behind any whole number of frames of near-silence is decoded from the same frames and
    gives the same output (BENCHMARKS.md §42). Text sources have no onset: it does nothing
    there."""

    beam_size: int = 4
    nbest: int = 1
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 0
    length_penalty: float = 1.0
    ctc_weight: float = 0.0
    pre_beam_ratio: float = 1.5
    lm: str = ""
    lm_weight: float = 0.0
    kernels: bool = True
    compile: bool = False
    compile_buckets: int = 8
    compile_mode: str = "default"
    compile_gemm: str = "auto"
    encoder_views: int = 1
    views_merge: str = "encodings"
    onset_pad_ms: float | None = None
    onset_below_db: float = 12.0

    def __post_init__(self) -> None:
        if self.onset_pad_ms is not None and self.onset_pad_ms < 0:
            raise ValueError(f"onset_pad_ms must be >= 0, got {self.onset_pad_ms}")
        if self.onset_below_db <= 0:
            raise ValueError(f"onset_below_db must be > 0, got {self.onset_below_db}")
        if self.encoder_views < 1:
            raise ValueError(f"encoder_views must be >= 1, got {self.encoder_views}")
        if self.views_merge not in VIEWS_MERGES:
            raise ValueError(f"views_merge must be one of {VIEWS_MERGES}, got {self.views_merge!r}")
        if self.lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if self.beam_size < 1 or not 1 <= self.nbest <= self.beam_size:
            raise ValueError(f"need beam_size >= 1 and 1 <= nbest <= beam_size, got {self}")
        if self.max_len_a < 0 or self.max_len_b < 0 or self.min_len < 0:
            raise ValueError("max_len_a, max_len_b and min_len must be >= 0")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}"
            )
        if self.compile_gemm not in COMPILE_GEMMS:
            raise ValueError(
                f"compile_gemm must be one of {COMPILE_GEMMS}, got {self.compile_gemm!r}"
            )
        if self.compile_buckets < 0:
            raise ValueError(f"compile_buckets must be >= 0, got {self.compile_buckets}")
