"""Length-bucketed batches capped by padded size, shuffled per epoch, split across DDP ranks.

Batches are built once (plan_batches, shortest first): items sorted by length (ties by index)
are cut greedily into batches whose padded size, len(batch) * longest item, stays <=
max_frames (and len(batch) <= max_batch_size when > 0). An item longer than max_frames on its
own forms a batch of one. Each epoch visits every batch once in an order drawn from seed +
epoch (or in length order with shuffle=False), the same on every rank. With num_replicas R
the epoch list is padded, by repeating its first batches, to a multiple of R, and rank r takes
every R-th batch from r: all ranks step the same number of times and, apart from the
padding, see disjoint batches.

Mid-epoch resume: set_epoch(epoch, start=k) skips the first k batches of this rank's epoch, so
iteration yields exactly what the interrupted epoch had not yet yielded. The sampler cannot
count consumed batches itself (a DataLoader prefetches), so the trainer passes `start`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def plan_batches(
    lengths: Sequence[int], max_frames: int, max_batch: int = 0, longest_first: bool = False
) -> list[list[int]]:
    """Indices of `lengths` cut greedily into batches of similar lengths, the one planner of
    training (this sampler) and decoding (s2s.decode, longest first).

    Items are sorted by length, shortest first or with `longest_first` longest first (ties by
    index), and a batch is closed when one more item would take its padded size,
    len(batch) * its longest item, past `max_frames`, or its size past `max_batch` (0: no
    cap). An item longer than max_frames on its own forms a batch of one."""
    sign = -1 if longest_first else 1
    order = sorted(range(len(lengths)), key=lambda i: (sign * lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        longest_with = max(longest, lengths[i])  # the padded size is (n + 1) * longest_with
        full = max_batch > 0 and len(cur) >= max_batch
        if cur and (full or (len(cur) + 1) * longest_with > max_frames):
            batches.append(cur)
            cur, longest_with = [], lengths[i]
        cur.append(i)
        longest = longest_with
    if cur:
        batches.append(cur)
    return batches


class BucketBatchSampler(Sampler[list[int]]):
    """Batch sampler for DataLoader(batch_sampler=...): yields lists of dataset indices.

    lengths: source length (frames or tokens) of each item; max_frames: cap on
    len(batch) * max length; max_batch_size: cap on items per batch (0 = none).
    `len()` is the number of batches of a full epoch for this rank.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_frames: int,
        max_batch_size: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if max_batch_size < 0:
            raise ValueError(f"max_batch_size must be >= 0 (0 = no cap), got {max_batch_size}")
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        if len(lengths) == 0:
            raise ValueError("BucketBatchSampler: no items")
        bad = next((i for i, n in enumerate(lengths) if int(n) != n or n < 0), None)
        if bad is not None:
            raise ValueError(f"length of item {bad} is {lengths[bad]!r}, expected an int >= 0")
        self.lengths = [int(n) for n in lengths]
        self.max_frames = max_frames
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.batches = plan_batches(self.lengths, max_frames, max_batch_size)
        self.epoch = 0
        self.start = 0

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.num_replicas)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order; skip its first `start` batches of this rank (resume)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in [0, {len(self)}] (batches per epoch), got {start}")
        self.epoch = epoch
        self.start = start

    def epoch_order(self, epoch: int) -> list[int]:
        """Batch numbers of `epoch` for all ranks, padded to a multiple of num_replicas."""
        n = len(self.batches)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        total = len(self) * self.num_replicas
        return (order * math.ceil(total / n))[:total]

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's full list of batches for `epoch` (start not applied)."""
        order = self.epoch_order(epoch)[self.rank :: self.num_replicas]
        return [list(self.batches[b]) for b in order]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches(self.epoch)[self.start :]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restores epoch, start and seed (the seed fixes every epoch's order)."""
        missing = [k for k in ("epoch", "start", "seed") if k not in state]
        if missing:
            raise ValueError(f"sampler state lacks {missing} (got keys {sorted(state)})")
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]), int(state["start"]))
