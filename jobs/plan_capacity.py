"""Capacity plan for sharding + post-pretraining a HowTo100M subset, from the benchmarks' measurements.

    python jobs/plan_capacity.py --videos 380000 --mean-duration-s 400 --epochs 1 \
      --sharding-hours 24 --training-hours 72 --cores-per-cpu-node 32 --gpus-per-gpu-node 8

Reads benchmarks/results/shard_throughput.json and train_throughput.json; prints cores x hours,
GPU-hours, shard storage and the cluster shape that meets each target wall time.
"""

from __future__ import annotations

# Run as `python jobs/<job>.py`: make that the project's virtualenv (jobs/_venv_guard.py).
if not __package__:
    import _venv_guard  # noqa: F401

import sys
from collections.abc import Sequence

from pipelines.capacity import CapacityConfig, plan_capacity, render
from pipelines.cli import parse_config


def main(argv: Sequence[str] | None = None) -> int:
    try:
        print(render(plan_capacity(parse_config(CapacityConfig, argv))))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
