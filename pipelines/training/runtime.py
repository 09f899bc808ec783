"""Rank, world size and device, read once when a training worker starts (never from os.environ later)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True, kw_only=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a scalar over ranks (for logging; every rank must call it)."""
        if not self.is_distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size


def ray_train_runtime() -> Runtime:
    """Inside a Ray Train worker: its rank, the world size and the device Ray assigned."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    return Runtime(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
    )


def single_process_runtime() -> Runtime:
    return Runtime(rank=0, world_size=1, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
