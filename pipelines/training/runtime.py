"""Rank, world size and device, read once when a training worker starts (never from os.environ later)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True, kw_only=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device
    # Runs a function on the process's main thread, where signal handlers are set (a Ray Train worker runs
    # the training function on another thread; see ray_train_runtime).
    on_main_thread: Callable[[Callable[[], Any]], Any] = field(
        default=lambda function: _call_on_this_thread(function), repr=False, compare=False
    )

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
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    # The worker actor runs its methods on the main thread and the training function on another; its
    # `execute(fn)` method (Ray Train V2's RayTrainWorker) runs fn there.
    worker_actor = ray.get_runtime_context().current_actor
    return Runtime(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
        on_main_thread=lambda function: ray.get(worker_actor.execute.remote(function)),
    )


def single_process_runtime() -> Runtime:
    return Runtime(rank=0, world_size=1, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _call_on_this_thread(function: Callable[[], Any]) -> Any:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "this needs the main thread (e.g. to set a signal handler): build the Runtime with an "
            "on_main_thread that reaches it"
        )
    return function()
