"""The datasets and batch loaders an experiment trains on (s2s-train), built from its config:
a model's (speech features or source texts, with targets) and a language model's (texts)."""

from __future__ import annotations

import functools

from torch.utils.data import DataLoader

from s2s.experiment.config import ExperimentConfig, LMExperimentConfig
from s2s.experiment.load import load_cmvn


def build_dataset(cfg: ExperimentConfig, split: str, tokenizer, train: bool):
    """The training ("train") or validation ("valid") dataset of an experiment."""
    from s2s.data.datadir import load_datadir
    from s2s.data.dataset import SpeechDataset, TextPairDataset
    from s2s.data.specaug import SpecAugment

    d = cfg.data
    datadir = load_datadir(getattr(d, f"{split}_dir"))
    if d.source == "text":
        return TextPairDataset(
            datadir.texts[d.source_field],
            datadir.texts[d.target_field],
            tokenizer,
            max_src_len=d.max_src_len or None,
            normalize=d.normalize,
        )
    specaug = SpecAugment(d.specaug) if train else None
    return SpeechDataset(
        getattr(d, f"{split}_dump"),
        datadir,
        tokenizer,
        text_field=d.target_field,
        cmvn=load_cmvn(d.cmvn),
        specaug=specaug,
        normalize=d.normalize,
        # read only when trained on: a weight of 0 turns the source CTC off, field or not
        src_text_field=d.src_ctc_field if cfg.model.src_ctc_weight > 0 else "",
        views=2 if train and cfg.model.consistency_weight > 0 else 1,
    )


def build_loader(
    cfg: ExperimentConfig,
    dataset,
    *,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    amp: str = "none",
) -> DataLoader:
    """The batches of `dataset` (bucketed by length, sharded over `world_size` ranks). amp:
    the run's train.amp resolved for its device ("none", "bf16", "fp16":
    s2s.train.speed.resolve_amp), which data.bucket_when=bf16 reads: the batches are padded to
    data.bucket_frames / bucket_tokens only when it is "bf16"."""
    from s2s.data.dataset import collate, collate_views
    from s2s.data.sampler import BucketBatchSampler

    d = cfg.data
    sampler = BucketBatchSampler(
        dataset.lengths,
        d.max_frames,
        max_batch_size=d.max_batch_size,
        shuffle=shuffle,
        seed=cfg.train.seed,
        num_replicas=world_size,
        rank=rank,
    )
    join = collate_views if getattr(dataset, "views", 1) > 1 else collate
    buckets = d.bucket_when == "always" or amp == "bf16"
    pad = functools.partial(
        join,
        pad_src_to=d.bucket_frames if buckets else 0,
        pad_tgt_to=d.bucket_tokens if buckets else 0,
    )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=pad, num_workers=d.num_workers)


def build_lm_dataset(cfg: LMExperimentConfig, split: str, tokenizer, train: bool = False):
    """Items whose target is the text (the source, the same text unnormalised, is only read
    for its length, which buckets the batches). `train` is unused: build_dataset's signature."""
    from s2s.data.datadir import load_datadir
    from s2s.data.dataset import TextPairDataset

    texts = load_datadir(getattr(cfg.data, f"{split}_dir")).texts[cfg.data.text_field]
    return TextPairDataset(texts, texts, tokenizer, normalize=cfg.data.normalize)


def build_lm_loader(cfg: LMExperimentConfig, dataset, *, shuffle: bool, **kw) -> DataLoader:
    from s2s.data.dataset import collate
    from s2s.data.sampler import BucketBatchSampler

    sampler = BucketBatchSampler(
        dataset.lengths,
        cfg.data.max_tokens,
        max_batch_size=cfg.data.max_batch_size,
        shuffle=shuffle,
        seed=cfg.train.seed,
        num_replicas=kw.get("world_size", 1),
        rank=kw.get("rank", 0),
    )
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers
    )
