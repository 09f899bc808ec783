"""The Ray Train (V2) scaffolding shared by post-pretraining and retrieval fine-tuning.

A job hands in a worker function `(config, runtime, report, wrap) -> Any` and how many workers to run;
this module starts the TorchTrainer (DDP: NCCL on GPUs, gloo on CPUs), gives each worker its Runtime,
Ray Train's `report` and `prepare_model` as `wrap`, and restarts a failed worker group up to
`max_failures` times (each restart resumes from the run's last committed checkpoint, which the worker
function itself reads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.config_values import PositiveFloat, PositiveInt
from pipelines.console import quiet_library_chatter
from pipelines.failpoints import failpoint_runtime_env
from pipelines.training.runtime import Runtime, ray_train_runtime

# (job config, runtime, report(metrics), wrap(model) -> model) -> anything; runs once per training worker.
WorkerFunction = Callable[[Any, Runtime, Callable[[dict], None], Callable[[Any], Any]], Any]


@dataclass(frozen=True, kw_only=True)
class WorkersConfig:
    # training workers (one per GPU with --use-gpu); the most, when min_workers is set
    num_workers: PositiveInt = 2
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat = 1  # fractions share a CPU between workers (tests, small debug runs)
    # worker-group restarts Ray Train makes after a failure, each from the last checkpoint
    max_failures: int = 3
    # Elastic: 1 <= min_workers < num_workers lets Ray Train (V2's ScalingConfig(num_workers=(min, max)))
    # restart the group on as many workers as the cluster has (down to min_workers) when a node goes, and
    # grow it back when capacity returns; each restart resumes from the last committed checkpoint and
    # reshards the rest of the epoch over the new world size. 0: always num_workers.
    min_workers: int = 0
    resize_check_s: PositiveFloat = 60.0  # elastic: how often a healthy group checks whether it could grow

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if not 0 <= self.min_workers <= self.num_workers:
            raise ValueError(
                f"min_workers must be in [0, num_workers={self.num_workers}], got {self.min_workers}"
            )

    @property
    def elastic(self) -> bool:
        return 0 < self.min_workers < self.num_workers

    def possible_world_sizes(self) -> range:
        return range(self.min_workers if self.elastic else self.num_workers, self.num_workers + 1)


def _ray_train_loop(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_library_chatter()
    worker: WorkerFunction = loop_config["worker"]
    worker(
        loop_config["config"],
        ray_train_runtime(),
        ray.train.report,
        lambda model: ray.train.torch.prepare_model(model, move_to_device=False),
    )


def run_ray_training(
    worker: WorkerFunction,
    config: Any,
    *,
    workers: WorkersConfig,
    run_name: str,
    storage_path: str | None = None,
) -> None:
    """Runs `worker(config, ...)` on `workers.num_workers` Ray Train workers of the current Ray cluster
    (ray.init() first, or inside `ray job submit`); raises ray.train.TrainingFailedError once
    `max_failures` restarts are spent. `worker` must be a module-level function (it is pickled)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    # V2's ScalingConfig takes (min, max) for an elastic group; mypy sees V1's, which takes an int
    num_workers: Any = (workers.min_workers, workers.num_workers) if workers.elastic else workers.num_workers
    trainer = TorchTrainer(
        _ray_train_loop,
        train_loop_config={"worker": worker, "config": config},
        torch_config=TorchConfig(backend="nccl" if workers.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(  # type: ignore[call-arg]  # V2's, as RunConfig below
            num_workers=num_workers,
            elastic_resize_monitor_interval_s=workers.resize_check_s,
            use_gpu=workers.use_gpu,
            resources_per_worker={
                "CPU": workers.cpus_per_worker,
                **({"GPU": 1} if workers.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(  # type: ignore[call-arg]  # mypy sees Ray Train v1's RunConfig
            name=run_name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=workers.max_failures),
            worker_runtime_env=failpoint_runtime_env(),
        ),
    )
    trainer.fit()
