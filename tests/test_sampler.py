"""BucketBatchSampler: frame cap, coverage, per-epoch determinism, DDP split, mid-epoch resume;
plan_batches, the planner it shares with decoding (longest first there)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from s2s.data.sampler import BucketBatchSampler, plan_batches


def random_lengths(n: int = 200, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 800) for _ in range(n)]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def test_frame_cap_and_sorted_buckets() -> None:
    lengths = random_lengths()
    s = BucketBatchSampler(lengths, max_frames=2000, shuffle=False)
    batches = list(s)
    assert len(batches) == len(s) > 1
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 2000
    # length-sorted buckets: without shuffling, lengths ascend through the epoch
    seq = [lengths[i] for i in flat(batches)]
    assert seq == sorted(seq)
    # greedy: adding the next batch's first item would break the cap
    for b, nxt in zip(batches, batches[1:]):
        assert (len(b) + 1) * lengths[nxt[0]] > 2000


def test_long_item_is_its_own_batch_and_batch_size_cap() -> None:
    lengths = [10, 10, 5000, 10, 10, 10, 10]
    batches = list(BucketBatchSampler(lengths, max_frames=100, max_batch_size=3, shuffle=False))
    assert [2] in batches
    assert sorted(flat(batches)) == list(range(7))
    assert max(len(b) for b in batches) == 3


def test_every_index_once_per_epoch_and_epochs_differ() -> None:
    lengths = random_lengths()
    s = BucketBatchSampler(lengths, max_frames=1500, seed=3)
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert sorted(flat(batches)) == list(range(len(lengths)))
        orders.append(batches)
    assert orders[0] != orders[1] != orders[2]
    # the batches themselves are fixed, only their order changes
    assert sorted(map(tuple, orders[0])) == sorted(map(tuple, orders[1]))


def test_deterministic_per_seed_and_epoch() -> None:
    lengths = random_lengths()
    a = BucketBatchSampler(lengths, max_frames=1500, seed=7)
    b = BucketBatchSampler(lengths, max_frames=1500, seed=7)
    c = BucketBatchSampler(lengths, max_frames=1500, seed=8)
    for s in (a, b, c):
        s.set_epoch(4)
    torch.manual_seed(123)  # the global RNG must not matter
    first = list(a)
    torch.manual_seed(999)
    assert list(b) == first == list(a)
    assert list(c) != first


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_ranks_equal_length_and_disjoint(replicas: int) -> None:
    lengths = random_lengths(101)
    ranks = [
        BucketBatchSampler(lengths, max_frames=1200, seed=1, num_replicas=replicas, rank=r)
        for r in range(replicas)
    ]
    n_batches = len(ranks[0].batches)
    for s in ranks:
        s.set_epoch(2)
    per_rank = [list(s) for s in ranks]
    assert {len(p) for p in per_rank} == {len(ranks[0])}
    assert len(ranks[0]) == -(-n_batches // replicas)
    all_batches = [tuple(b) for p in per_rank for b in p]
    counts = Counter(all_batches)
    pad = len(all_batches) - n_batches
    assert pad < replicas
    # every batch of the epoch is seen; only `pad` of them twice (the padding)
    assert len(counts) == n_batches
    assert sum(c - 1 for c in counts.values()) == pad
    # the padding repeats the first batches of the epoch order
    order = ranks[0].epoch_order(2)
    assert order[n_batches:] == order[:pad]


def test_more_ranks_than_batches() -> None:
    ranks = [BucketBatchSampler([5, 6], max_frames=100, num_replicas=4, rank=r) for r in range(4)]
    got = [list(s) for s in ranks]
    assert all(len(g) == 1 for g in got)
    assert {tuple(g[0]) for g in got} == {(0, 1)}


def test_start_skips_the_head_of_the_epoch() -> None:
    lengths = random_lengths()
    for replicas, rank in [(1, 0), (3, 1)]:
        s = BucketBatchSampler(lengths, 1000, seed=5, num_replicas=replicas, rank=rank)
        s.set_epoch(6)
        full = list(s)
        for start in (0, 1, len(full) // 2, len(full)):
            s.set_epoch(6, start=start)
            assert list(s) == full[start:]
            assert len(s) == len(full)  # len is always the full epoch
    with pytest.raises(ValueError, match="start"):
        s.set_epoch(0, start=len(s) + 1)


def test_state_dict_round_trip() -> None:
    lengths = random_lengths()
    s = BucketBatchSampler(lengths, 1000, seed=11)
    s.set_epoch(3, start=4)
    state = s.state_dict()
    assert state == {"epoch": 3, "start": 4, "seed": 11}
    fresh = BucketBatchSampler(lengths, 1000, seed=0)
    fresh.load_state_dict(state)
    assert list(fresh) == list(s)
    with pytest.raises(ValueError, match="seed"):
        fresh.load_state_dict({"epoch": 1, "start": 0})


def test_no_shuffle_is_the_same_every_epoch() -> None:
    lengths = random_lengths()
    s = BucketBatchSampler(lengths, 1000, shuffle=False)
    first = list(s)
    s.set_epoch(5)
    assert list(s) == first


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        BucketBatchSampler([1, 2], 0)
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler([1, 2], 10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="no items"):
        BucketBatchSampler([], 10)
    with pytest.raises(ValueError, match="item 1"):
        BucketBatchSampler([1, -3], 10)


def test_works_as_dataloader_batch_sampler() -> None:
    lengths = [3, 1, 2, 5, 4]
    s = BucketBatchSampler(lengths, max_frames=6, shuffle=False)
    loader = DataLoader(list(range(5)), batch_sampler=s, collate_fn=list)
    assert len(loader) == len(s)
    assert list(loader) == [[1, 2], [0], [4], [3]]


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=80),
    max_frames=st.integers(1, 1000),
    max_batch_size=st.integers(0, 6),
    replicas=st.integers(1, 4),
    epoch=st.integers(0, 3),
)
def test_property_cap_and_coverage(
    lengths: list[int], max_frames: int, max_batch_size: int, replicas: int, epoch: int
) -> None:
    batches = plan_batches(lengths, max_frames, max_batch_size)
    for b in batches:
        assert b
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_frames
        assert max_batch_size == 0 or len(b) <= max_batch_size
    per_rank = []
    for r in range(replicas):
        s = BucketBatchSampler(
            lengths, max_frames, max_batch_size, seed=epoch, num_replicas=replicas, rank=r
        )
        s.set_epoch(epoch)
        per_rank.append(list(s))
        assert len(per_rank[-1]) == len(s)
    assert len({len(p) for p in per_rank}) == 1
    seen = [i for p in per_rank for b in p for i in b]
    assert set(seen) == set(range(len(lengths)))
    if replicas == 1:
        assert sorted(seen) == list(range(len(lengths)))


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=80),
    max_frames=st.integers(1, 1000),
    max_batch=st.integers(0, 6),
)
def test_longest_first_plan_caps_covers_and_descends(
    lengths: list[int], max_frames: int, max_batch: int
) -> None:
    batches = plan_batches(lengths, max_frames, max_batch, longest_first=True)
    assert sorted(flat(batches)) == list(range(len(lengths)))
    order = flat(batches)  # longest first, ties by index
    assert order == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b[0]] <= max_frames
        assert max_batch == 0 or len(b) <= max_batch
    # greedy: one more item (the next batch's first) would have broken a cap
    for b in batches[:-1]:
        over = (len(b) + 1) * lengths[b[0]] > max_frames
        assert over or len(b) == max_batch
