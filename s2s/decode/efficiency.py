"""Speed and memory bookkeeping for a decode run (what score.json and RESULTS.md report)."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, field

import torch


def peak_memory_mib(device: torch.device) -> float:
    """GPU: max allocated since the last reset. CPU: peak resident set size of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB here


@dataclass
class DecodeStats:
    """Accumulates utterances, output tokens and wall time over a decode."""

    device: str = "cpu"
    cache_bytes_per_token: float = 0.0
    utterances: int = 0
    tokens: int = 0
    wall_time_s: float = 0.0
    peak_memory_mib: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def start(self) -> None:
        dev = torch.device(self.device)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        self._start = time.perf_counter()

    def stop(self) -> None:
        dev = torch.device(self.device)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.wall_time_s = time.perf_counter() - self._start
        self.peak_memory_mib = peak_memory_mib(dev)

    def summary(self) -> dict[str, float | int | str]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        wall = max(self.wall_time_s, 1e-9)
        out["utterances_per_s"] = self.utterances / wall
        out["tokens_per_s"] = self.tokens / wall
        return out
