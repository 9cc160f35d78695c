"""The stride-aware causal mask against a brute-force reading of its definition
(docs/attention.md)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from s2s.attention import stride_aware_causal_mask
from s2s.attention.masks import self_attention_mask


@given(T=st.integers(1, 48), s=st.integers(1, 6))
def test_matches_definition(T: int, s: int) -> None:
    mask = stride_aware_causal_mask(T, s)
    assert mask.shape == (T, T) and mask.dtype == torch.bool
    for i in range(T):
        for j in range(T):
            # key j is the partial slot after token j; it is visible to query i if it is i's own
            # slot, or the final state of a chunk that ended before i.
            chunk_complete = (j + 1) % s == 0
            assert bool(mask[i, j]) == (j == i or (j < i and chunk_complete)), (i, j)


@given(T=st.integers(1, 32))
def test_stride_one_is_causal(T: int) -> None:
    assert torch.equal(stride_aware_causal_mask(T, 1), torch.ones(T, T, dtype=torch.bool).tril())


@given(T=st.integers(1, 32), s=st.integers(1, 5))
def test_each_query_sees_one_slot_per_chunk(T: int, s: int) -> None:
    """Query i sees exactly ceil((i + 1) / s) keys: one per chunk so far (the cache size)."""
    mask = stride_aware_causal_mask(T, s)
    for i in range(T):
        assert int(mask[i].sum()) == -(-(i + 1) // s)


def test_padding_mask_keeps_rows_non_empty() -> None:
    lengths = torch.tensor([3, 0])
    m = self_attention_mask(4, 2, lengths, torch.device("cpu"))[:, 0]
    assert m.shape == (2, 4, 4)
    # row 0, real query 2: its own slot and the completed chunk ending at 1
    assert m[0, 2].nonzero().flatten().tolist() == [1, 2]
    # row 0, padded query 3: real completed chunk 1 plus its own diagonal (never empty)
    assert m[0, 3].nonzero().flatten().tolist() == [1, 3]
    # an all-padding row keeps only the diagonal
    assert torch.equal(m[1], torch.eye(4, dtype=torch.bool))
