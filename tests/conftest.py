"""Shared pytest set-up: a mismatched torch/torchaudio stops the run with one line; GPU tests
skip cleanly on machines without CUDA."""

from __future__ import annotations

import pytest
import torch

try:
    import s2s  # noqa: F401  (importing s2s checks that torch and torchaudio belong together)
except ImportError as e:
    _S2S_IMPORT_ERROR: ImportError | None = e
else:
    _S2S_IMPORT_ERROR = None


def pytest_sessionstart(session: pytest.Session) -> None:
    # Stop before collection: otherwise every test module fails on its own import of s2s.
    if _S2S_IMPORT_ERROR is not None:
        pytest.exit(f"{type(_S2S_IMPORT_ERROR).__name__}: {_S2S_IMPORT_ERROR}", returncode=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
