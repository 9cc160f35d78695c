"""Datasets of (utterance id, source, target ids) items and their collation into a `Batch`.

`SpeechDataset` reads a feature dump (s2s.data.features) for the data dir's utterances and
tokenises one of its text files; `TextPairDataset` pairs two texts per id (MT, summarisation).
Targets are token ids without BOS/EOS (the model adds them). Both check every target when
built, so bad data fails before training starts, and expose `lengths` (source frames or tokens
per item) for `BucketBatchSampler`.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from s2s.data.datadir import DataDir, load_datadir
from s2s.data.features import FeatureReader, utterance_cmvn
from s2s.data.tokenizer import PAD_ID, Tokenizer, normalize_text

# (utterance id, source (T, F) float features or (T,) long token ids, target (L,) long ids),
# plus the source transcript's ids (Ls,) when the dataset reads one (auxiliary source CTC)
Item = tuple[str, Tensor, Tensor] | tuple[str, Tensor, Tensor, Tensor]
_BOUNDARY = "\u2581"  # SentencePiece's word-boundary piece


class RaggedIds:
    """Token id sequences of varying lengths in one flat int32 array with offsets: 4 bytes a
    token and 8 a sequence, where a Python list of lists takes about 60 bytes a sequence plus
    8 a token (300,000 targets: ~20 MB instead of ~50 MB, and no object per sequence for the
    garbage collector). ids[i] -> (L,) long tensor."""

    def __init__(self, seqs: Iterable[Sequence[int]]) -> None:
        flat, ends = array("i"), array("q", [0])
        for seq in seqs:
            flat.extend(seq)
            ends.append(len(flat))
        self._flat = np.frombuffer(flat, dtype=np.int32) if flat else np.zeros(0, np.int32)
        self._ends = np.frombuffer(ends, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ends) - 1

    def __getitem__(self, i: int) -> Tensor:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} of {len(self)}")
        i %= len(self)
        return torch.from_numpy(self._flat[self._ends[i] : self._ends[i + 1]].astype(np.int64))

    def length(self, i: int) -> int:
        return int(self._ends[i + 1] - self._ends[i])


@dataclass
class Batch:
    """A padded mini-batch. src: (B, T, F) float features or (B, T) long token ids, padded with
    0; src_lens: (B,) long; tgt: (B, L) long ids without BOS/EOS, padded with pad_id (0);
    tgt_lens: (B,) long. src_text: (B, Ls) long ids of the source transcript, padded with
    pad_id, and src_text_lens (B,): only when the dataset reads one (the source CTC of
    speech translation, model.src_ctc_weight), else None. views: V > 1 when the batch holds V
    augmented views of B / V utterances, view v in rows [v * B / V, (v + 1) * B / V), the
    utterances in the same order in each (consistency training, model.consistency_weight)."""

    utt_ids: list[str]
    src: Tensor
    src_lens: Tensor
    tgt: Tensor
    tgt_lens: Tensor
    src_text: Tensor | None = None
    src_text_lens: Tensor | None = None
    views: int = 1

    def __len__(self) -> int:
        return len(self.utt_ids)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        def opt(t: Tensor | None) -> Tensor | None:
            return None if t is None else fn(t)

        return Batch(
            self.utt_ids,
            fn(self.src),
            fn(self.src_lens),
            fn(self.tgt),
            fn(self.tgt_lens),
            opt(self.src_text),
            opt(self.src_text_lens),
            self.views,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        return self._map(Tensor.pin_memory)


def _encode_target(
    tokenizer: Tokenizer, text: str, normalize: str, utt: str, where: str
) -> list[int]:
    """Normalised, tokenised target; ValueError naming utt and `where` when nothing is left."""
    ids = tokenizer.encode(normalize_text(text, normalize))
    if not ids:
        raise ValueError(f"{where}: utterance {utt!r} has an empty target after '{normalize}'")
    # a bare word-boundary piece carries no text: "ЖЖ ЩЩ" -> [▁, unk, ▁, unk] is all unknown
    if all(i == tokenizer.unk_id or tokenizer.id_to_piece(i) == _BOUNDARY for i in ids):
        raise ValueError(
            f"{where}: utterance {utt!r} target {text!r} is all unknown tokens for the "
            f"tokenizer {tokenizer.source}"
        )
    return ids


class SpeechDataset(Dataset):
    """Every utterance of a data dir, in its (sorted) order: (utt, feats (T, F), target (L,)).

    feats come from the dump in `feature_dir`, normalised by `cmvn` (a GlobalCMVN or any
    (T, F) -> (T, F) callable) or else per utterance (utterance_cmvn), then augmented by
    `specaug` when given (training). Targets are `text_field` of the data dir after
    normalize_text(mode=`normalize`), tokenised once here. With `src_text_field` (speech
    translation's source transcript, for the source CTC) each item also carries that text's
    ids, tokenised the same way with the same tokenizer. views > 1 (training with consistency,
    model.consistency_weight): each item is a tuple of `views` items of the same utterance,
    each augmented by its own draw of `specaug` (collate_views batches them). Raises ValueError
    when an utterance has no features in the dump or a text is empty or all unknown tokens.
    """

    def __init__(
        self,
        feature_dir: str | Path,
        datadir: DataDir | str | Path,
        tokenizer: Tokenizer,
        text_field: str = "text",
        cmvn: Callable[[Tensor], Tensor] | None = None,
        specaug: Callable[[Tensor], Tensor] | None = None,
        normalize: str = "none",
        src_text_field: str = "",
        views: int = 1,
    ) -> None:
        if views < 1 or (views > 1 and specaug is None):
            raise ValueError(f"views={views}: more than one view needs specaug to draw them")
        self.views = views
        # the data dir is read here and not kept: a dataset holds only what items need
        dd = datadir if isinstance(datadir, DataDir) else load_datadir(datadir)
        self.reader = FeatureReader(feature_dir)
        self.cmvn = cmvn
        self.specaug = specaug
        for name in (text_field, *([src_text_field] if src_text_field else [])):
            if name not in dd.texts:
                have = ", ".join(sorted(dd.texts)) or "none"
                raise ValueError(f"{dd.path / name}: no such text file (have: {have})")
        self.utt_ids: list[str] = list(dd.utt_ids)
        if not self.utt_ids:
            raise ValueError(f"{dd.path}: data dir has no utterances")
        missing = [u for u in self.utt_ids if u not in self.reader]
        if missing:
            raise ValueError(
                f"utterance {missing[0]!r} of {dd.path} has no features in the dump "
                f"{self.reader.dir} ({len(missing)} of {len(self.utt_ids)} missing; a speed-"
                f"perturbed dump needs the data dir with sp<factor>- ids)"
            )

        def encode(field: str) -> RaggedIds:
            where = str(dd.path / field)
            return RaggedIds(
                _encode_target(tokenizer, dd.text(u, field), normalize, u, where)
                for u in self.utt_ids
            )

        self.targets = encode(text_field)
        self.src_texts = encode(src_text_field) if src_text_field else None
        self.lengths: list[int] = [self.reader.num_frames(u) for u in self.utt_ids]

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, index: int) -> Item | tuple[Item, ...]:
        utt = self.utt_ids[index]
        feats = self.reader[utt]  # (T, F)
        feats = self.cmvn(feats) if self.cmvn is not None else utterance_cmvn(feats)
        tgt = self.targets[index]
        src = () if self.src_texts is None else (self.src_texts[index],)
        if self.specaug is None:
            return (utt, feats, tgt, *src)
        items = tuple((utt, self.specaug(feats), tgt, *src) for _ in range(self.views))
        return items[0] if self.views == 1 else items


class TextPairDataset(Dataset):
    """Text-to-text items (utt, source ids (S,), target ids (L,)) for the ids of `src_texts`,
    sorted. Sources are truncated to `max_src_len` tokens when given; targets are normalised with
    normalize_text(mode=`normalize`). Raises ValueError when the two texts' ids differ (naming a
    missing id) or a source or target encodes to nothing (or only unknown tokens, for targets).
    """

    def __init__(
        self,
        src_texts: Mapping[str, str],
        tgt_texts: Mapping[str, str],
        tokenizer: Tokenizer,
        max_src_len: int | None = None,
        normalize: str = "none",
    ) -> None:
        if max_src_len is not None and max_src_len < 1:
            raise ValueError(f"max_src_len must be >= 1 or None, got {max_src_len}")
        src_keys, tgt_keys = set(src_texts), set(tgt_texts)
        if src_keys != tgt_keys:
            only_src, only_tgt = sorted(src_keys - tgt_keys), sorted(tgt_keys - src_keys)
            if only_src:
                raise ValueError(
                    f"id {only_src[0]!r} has a source text but no target text "
                    f"({len(only_src)} such ids)"
                )
            raise ValueError(
                f"id {only_tgt[0]!r} has a target text but no source text "
                f"({len(only_tgt)} such ids)"
            )
        self.utt_ids: list[str] = sorted(src_keys)
        if not self.utt_ids:
            raise ValueError("TextPairDataset: no texts")
        self.sources: list[list[int]] = []
        for u in self.utt_ids:
            ids = tokenizer.encode(src_texts[u])
            if not ids:
                raise ValueError(f"id {u!r}: empty source text")
            self.sources.append(ids[:max_src_len])
        self.targets: list[list[int]] = [
            _encode_target(tokenizer, tgt_texts[u], normalize, u, "target text")
            for u in self.utt_ids
        ]
        self.lengths: list[int] = [len(s) for s in self.sources]

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, index: int) -> Item:
        return (
            self.utt_ids[index],
            torch.tensor(self.sources[index], dtype=torch.long),
            torch.tensor(self.targets[index], dtype=torch.long),
        )


def _pad_ids(seqs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """(L_i,) id sequences -> (B, max L) long padded with PAD_ID, lengths (B,)."""
    lens = torch.tensor([t.shape[0] for t in seqs], dtype=torch.long)
    return pad_sequence(list(seqs), batch_first=True, padding_value=PAD_ID).long(), lens


def _pad_time(x: Tensor, multiple: int) -> Tensor:
    """x (B, T, ...) with T padded by zeros up to a multiple of `multiple` (0: as it is)."""
    extra = -x.shape[1] % multiple if multiple else 0
    if not extra:
        return x
    return torch.cat((x, x.new_zeros(x.shape[0], extra, *x.shape[2:])), 1)


def collate_views(
    groups: Sequence[tuple[Item, ...]], pad_src_to: int = 0, pad_tgt_to: int = 0
) -> Batch:
    """Batches B utterances' V views each (SpeechDataset(views=V) items) as V * B rows, view
    by view (Batch.views); padding as collate."""
    n_views = {len(g) for g in groups}
    if len(n_views) != 1:
        raise ValueError(f"collate_views: utterances with {sorted(n_views)} views in one batch")
    (views,) = n_views
    batch = collate([g[v] for v in range(views) for g in groups], pad_src_to, pad_tgt_to)
    batch.views = views
    return batch


def collate(items: Sequence[Item], pad_src_to: int = 0, pad_tgt_to: int = 0) -> Batch:
    """Pads a list of (utt, source, target[, source transcript]) items into a Batch (sources
    and ids padded with 0 = pad_id). Sources must all be (T, F) features of one F, or all (T,)
    token ids; the items all have a source transcript or none does. pad_src_to / pad_tgt_to:
    the padded source / target length is a multiple of it (data.bucket_frames /
    data.bucket_tokens: batch shapes repeat); lengths and every mask are unchanged by it."""
    if not items:
        raise ValueError("collate: empty batch")
    utts = [item[0] for item in items]
    srcs = [item[1] for item in items]
    tgts = [item[2] for item in items]
    if len({len(item) for item in items}) != 1:
        raise ValueError(f"collate: items with and without a source transcript in {utts[:4]}...")
    kinds = {(s.dim(), s.dtype.is_floating_point) + tuple(s.shape[1:]) for s in srcs}
    if len(kinds) != 1:
        raise ValueError(f"collate: sources of mixed shape/dtype in batch {utts[:4]}...")
    for u, t in zip(utts, tgts):
        if t.dim() != 1:
            raise ValueError(f"collate: target of {u!r} is {tuple(t.shape)}, expected (L,)")
    tgt, tgt_lens = _pad_ids(tgts)
    tgt = _pad_time(tgt, pad_tgt_to)
    src_text = src_text_lens = None
    if len(items[0]) == 4:
        src_text, src_text_lens = _pad_ids([item[3] for item in items])
    return Batch(
        utt_ids=utts,
        src=_pad_time(pad_sequence(srcs, batch_first=True, padding_value=0), pad_src_to),
        src_lens=torch.tensor([s.shape[0] for s in srcs], dtype=torch.long),
        tgt=tgt,
        tgt_lens=tgt_lens,
        src_text=src_text,
        src_text_lens=src_text_lens,
    )
