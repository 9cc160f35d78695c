"""Data-parallel training from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

Without those variables everything degrades to a single process: world_size 1, rank 0, no
process group, and the helpers below are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """The process's place in the job, from torchrun's environment variables."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """ "auto" -> cuda:<local_rank> when CUDA is available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available")
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def init_distributed(device: torch.device, info: DistInfo | None = None) -> DistInfo:
    """Join the process group (nccl on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
    info = info or env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw = {"device_id": device} if device.type == "cuda" else {}
        # The workers torchrun restarts (--max_restarts) meet in the same store as the ones
        # that failed: keys under the attempt's own prefix, so that none reads an address the
        # last attempt left (a refused connection, now and then, without it)
        store, rank, world = next(dist.rendezvous("env://", info.rank, info.world_size))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"s2s/attempt{attempt}/", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, **kw)
    return info


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around `model` (already on `device`) when distributed."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...] ([obj] without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup(meet_first: bool = False) -> None:
    """Tear the process group down. meet_first: every rank reaches a barrier first (a normal
    end), so none closes its connections while a peer's last collective still reads from them
    (gloo then aborted a rank at exit, rarely: "terminate called without an active
    exception"); not after an error, where a rank that died would keep the others waiting
    until the timeout."""
    if dist.is_available() and dist.is_initialized():
        if meet_first:
            dist.barrier()
        dist.destroy_process_group()
