"""s2s.threads.torch_threads: the count inside the block, the caller's again after it, even
when the block raises."""

from __future__ import annotations

import pytest
import torch

from s2s.threads import torch_threads


def test_count_inside_and_restored_after() -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
        with torch_threads(before):
            assert torch.get_num_threads() == before
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), torch_threads(other):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
