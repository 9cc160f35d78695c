"""Speed and memory bookkeeping for a decode run (what score.json and RESULTS.md report)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class DecodeStats:
    """Accumulates utterances, output tokens and wall time over a decode.

    peak_cache_mib: the most MiB the decoder's self-attention caches allocated at once during
    any one search (CPU and GPU alike: what differs between attention variants).
    peak_memory_mib: torch's peak allocated GPU memory over the decode; None off CUDA (a
    process's resident set would say nothing about the variants)."""

    device: str = "cpu"
    cache_bytes_per_token: float = 0.0
    utterances: int = 0
    tokens: int = 0
    wall_time_s: float = 0.0
    peak_cache_mib: float = 0.0
    peak_memory_mib: float | None = None
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
        if dev.type == "cuda":
            self.peak_memory_mib = torch.cuda.max_memory_allocated(dev) / 2**20

    def summary(self) -> dict[str, float | int | str]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        wall = max(self.wall_time_s, 1e-9)
        out["utterances_per_s"] = self.utterances / wall
        out["tokens_per_s"] = self.tokens / wall
        return out
