"""How far the same post-pretraining (seed, config, world size 1) drifts across torch thread counts.

    PYTHONPATH=. .venv/bin/python benchmarks/repeatability.py [--threads 1 2] [--steps 8]

Generates a small HowTo100M-style collection, shards it in this process, then post-pretrains the debug model
for --steps steps once per thread count (and the first thread count twice, which must agree bit for bit).
Prints the checkpoint weights' sha256 per run and the largest absolute difference of losses and weights
against the first run. Different thread counts split reductions (matmul, sums) differently, so bit equality
is not expected there; this measures how far apart they land.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from infra.sample_collection import generate_sample_collection
from pipelines.checkpoint.layout import WEIGHTS_FILE
from pipelines.checkpoint.read import read_checkpoint
from pipelines.cli import parse_config
from pipelines.sharding.in_process import shard_in_process
from pipelines.training.post_pretrain import post_pretrain_worker
from pipelines.training.runtime import single_process_runtime
from tests.test_post_pretrain import debug_config
from tests.test_sharding_job import sharding_config


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    """How far the same post-pretraining drifts across torch thread counts."""

    threads: tuple[int, ...] = (1, 2)  # torch thread counts, one run each (the first twice)
    steps: int = 8  # optimizer steps per run


def make_shards(root: Path) -> str:
    collection = generate_sample_collection(root / "collection")
    out = str(root / "shards")
    shard_in_process(sharding_config(collection, out, videos_per_shard=2))  # the tests' shards
    return out


def run_once(shards: str, root: Path, name: str, threads: int, steps: int) -> dict:
    torch.set_num_threads(threads)
    config = debug_config(shards, str(root / name), "repeat", max_steps=steps, log_every=1, every_steps=steps)
    result = post_pretrain_worker(config, single_process_runtime())
    with read_checkpoint(str(root / name / "repeat" / "latest")) as checkpoint:
        assert checkpoint.ref.step == steps, checkpoint.ref
        return {
            "threads": threads,
            "losses": [loss for _, loss in result.history],
            "weights": checkpoint.weights(),
            "sha256": checkpoint.ref.sha256[WEIGHTS_FILE],
        }


def spread(first: dict, other: dict) -> dict:
    losses = max(abs(a - b) for a, b in zip(first["losses"], other["losses"], strict=True))
    weights = max(float((first["weights"][k] - other["weights"][k]).abs().max()) for k in first["weights"])
    return {
        "max_loss_diff": losses,
        "max_weight_diff": weights,
        "same_bytes": first["sha256"] == other["sha256"],
    }


def main() -> None:
    args = parse_config(BenchmarkConfig)
    with tempfile.TemporaryDirectory(prefix="repeatability-") as folder:
        root = Path(folder)
        shards = make_shards(root)
        plan = [args.threads[0], *args.threads]  # the first thread count twice: must be bit-identical
        runs = [run_once(shards, root, f"run{i}", t, args.steps) for i, t in enumerate(plan)]
    report = [{"threads": run["threads"], "sha256": run["sha256"], **spread(runs[0], run)} for run in runs]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
