"""SentencePiece tokenizer with fixed special ids, its training, and transcript normalisation.

Special tokens (every model trained here has exactly these ids; `Tokenizer.from_file` refuses
a model that does not); defined here only, the models (s2s.models.seq2seq, s2s.models.encoder),
decoding and the benchmarks import them:

    id 0  <pad>  padding, and the CTC blank
    id 1  <unk>  characters or pieces the model does not know
    id 2  <s>    BOS, added by the model, never by `encode`
    id 3  </s>   EOS, added by the model, never by `encode`

`encode` returns ids without BOS/EOS; `decode` ignores pad/BOS/EOS ids. SentencePiece applies
its default `nmt_nfkc` normalisation (NFKC, whitespace runs collapsed), so `decode(encode(t))`
equals `t` for text that is already NFKC with single spaces and has no unknown characters.

Transcript normalisation (`normalize_text`, the ESPnet `tc` / `lc.rm` conventions):

    none    the text unchanged
    tc      true case: case and punctuation kept; NFKC, whitespace runs -> one space, stripped
    lc.rm   lower case, punctuation removed: NFKC, lower-cased, every punctuation (Unicode P*)
            and symbol (S*) character deleted, except an apostrophe (' or U+2019, written ')
            between two letters or digits ("don't" stays, "'quoted'" -> "quoted"); then
            whitespace runs -> one space, stripped. Deletion, not replacement by a space,
            follows ESPnet's remove_punctuation.pl: "well-known" -> "wellknown".

The same mode must be applied to training targets, the tokenizer's training text and the
references scored at decoding time.
"""

from __future__ import annotations

import itertools
import os
import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm
import torch

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MODEL_TYPES = ("unigram", "bpe", "char")
NORMALIZE_MODES = ("none", "tc", "lc.rm")

_WS = re.compile(r"\s+")
_APOSTROPHES = ("'", "\u2019")


class Tokenizer:
    """A SentencePiece model with pad=0, unk=1, bos=2, eos=3. Picklable (DataLoader workers)."""

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, processor: spm.SentencePieceProcessor, source: str = "<memory>") -> None:
        ids = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(
                f"{source}: SentencePiece model has pad/unk/bos/eos ids {ids}, s2s needs "
                f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)} (train it with train_sentencepiece)"
            )
        self._sp = processor
        self.source = source

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        """Loads a `.model` file written by train_sentencepiece."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no SentencePiece model")
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{path}: not a SentencePiece model ({e})") from None
        return cls(sp, str(path))

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special tokens included (the model's output size)."""
        return self._sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        """Text -> piece ids, without BOS/EOS. Unknown characters map to unk_id."""
        return self._sp.encode(text)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Piece ids (list or 1-D tensor) -> text. Pad/BOS/EOS ids are skipped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        ids = [int(i) for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)]
        n = self.vocab_size
        for i in ids:
            if not 0 <= i < n:
                raise ValueError(f"token id {i} out of range for a {n}-piece vocabulary")
        return self._sp.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(i)

    def pieces(self, text: str) -> list[str]:
        """Text -> its pieces as strings (for inspection)."""
        return self._sp.encode(text, out_type=str)

    def __getstate__(self) -> dict:
        return {"proto": self._sp.serialized_model_proto(), "source": self.source}

    def __setstate__(self, state: dict) -> None:
        sp = spm.SentencePieceProcessor()
        sp.LoadFromSerializedProto(state["proto"])
        self._sp = sp
        self.source = state["source"]

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, vocab_size={self.vocab_size})"


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str | os.PathLike,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    max_sentence_length: int = 1 << 16,
    num_threads: int | None = None,
) -> Tokenizer:
    """Trains a SentencePiece model on `texts` (streamed, one sentence each) into
    `<model_prefix>.model` / `.vocab` and returns it loaded.

    The ids of the special tokens are fixed (module docstring). `vocab_size` is a soft limit
    (hard_vocab_limit=False), so a small corpus yields fewer pieces instead of failing; for
    "char" the vocabulary is the corpus's characters. Empty lines are skipped; sentences longer
    than `max_sentence_length` bytes are skipped by SentencePiece, with a warning counting them.
    Raises ValueError on empty input or when vocab_size cannot hold the corpus's characters.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    if vocab_size <= 4:
        raise ValueError(f"vocab_size must exceed the 4 special tokens, got {vocab_size}")
    if not 0.0 < character_coverage <= 1.0:
        raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage}")
    if num_threads is None:
        num_threads = min(8, os.cpu_count() or 1)

    counts = {"sentences": 0, "too_long": 0}

    def sentences() -> Iterator[str]:
        for text in texts:
            # SentencePiece reads one sentence per item; an embedded newline would split it
            line = " ".join(text.split())
            if not line:
                continue
            counts["sentences"] += 1
            if len(line.encode("utf-8")) > max_sentence_length:
                counts["too_long"] += 1
            yield line

    stream = sentences()
    first = next(stream, None)
    if first is None:
        raise ValueError(f"no non-empty training text for the tokenizer {model_prefix}.model")

    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=itertools.chain([first], stream),
            model_prefix=str(prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            hard_vocab_limit=False,
            max_sentence_length=max_sentence_length,
            num_threads=num_threads,
            minloglevel=2,  # SentencePiece logs every EM step otherwise
        )
    except RuntimeError as e:
        raise ValueError(
            f"SentencePiece training of {prefix}.model ({model_type}, vocab_size={vocab_size}, "
            f"{counts['sentences']} sentences) failed: {e}"
        ) from None
    if counts["too_long"]:
        warnings.warn(
            f"{prefix}.model: SentencePiece skipped {counts['too_long']} of "
            f"{counts['sentences']} sentences longer than {max_sentence_length} bytes",
            stacklevel=2,
        )
    return Tokenizer.from_file(f"{prefix}.model")


def _remove_punctuation(text: str) -> str:
    """Deletes Unicode punctuation and symbols, keeping apostrophes inside words as '."""
    out = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch in _APOSTROPHES:
            if 0 < i < n - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
                out.append("'")
            continue
        if unicodedata.category(ch)[0] in "PS":
            continue
        out.append(ch)
    return "".join(out)


def normalize_text(text: str, mode: str = "none") -> str:
    """Normalises one transcript: mode "none" | "tc" | "lc.rm" (rules in the module docstring)."""
    if mode == "none":
        return text
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize mode must be one of {NORMALIZE_MODES}, got {mode!r}")
    text = unicodedata.normalize("NFKC", text)
    if mode == "lc.rm":
        text = _remove_punctuation(text.lower())
    return _WS.sub(" ", text).strip()
