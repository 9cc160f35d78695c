"""Shared pytest set-up: a mismatched torch/torchaudio stops the run with one line; GPU tests
skip cleanly on machines without CUDA; under pytest-xdist (`make test` runs `-n auto`) the
workers share the machine's cores instead of each taking all of them."""

from __future__ import annotations

import os

import pytest
import torch

#: `-n auto`'s worker count is the usable cores, at most this many: the suite's longest tests
#: (compiling, exporting) take minutes each, so more workers mostly add memory.
MAX_WORKERS = 4

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


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.hookimpl(optionalhook=True)  # xdist's hook: plain pytest runs without the plugin too
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(_cores(), MAX_WORKERS))


def pytest_configure(config: pytest.Config) -> None:
    # An xdist worker: its share of the cores, for torch here and (through OMP_NUM_THREADS) for
    # the subprocesses its tests start; two workers with all the cores each oversubscribe them.
    # A thread count set by whoever ran pytest stays as it is.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, _cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


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
