"""Post-pretraining throughput of the debug model on CPU: 1 vs 2 Ray Train workers (gloo DDP).

    .venv/bin/python benchmarks/post_pretrain_cpu.py [--steps 40] [--batch-size 8]

Makes a sample collection, shards it (the real shard task, no Ray), then runs the real Ray Train job
with 1 and with 2 workers on a local Ray cluster and prints samples/s (global), the ratio against
the 1-worker baseline measured in the same run, and the peak RSS of rank 0's worker process.
Run by hand; the figures depend on the machine (2 cores here: the workers share them).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray

from benchmarks.train_throughput import make_sample_shards
from model.config import CLIP4ClipConfig
from pipelines.checkpoint.store import CheckpointConfig
from pipelines.cli import parse_config
from pipelines.training.loop import LoopConfig
from pipelines.training.optim import OptimConfig
from pipelines.training.post_pretrain import (
    ClipDataConfig,
    PostPretrainConfig,
    WorkersConfig,
    run_post_pretraining,
)


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    steps: int = 40
    batch_size: int = 8  # clips per worker per step
    videos: int = 16
    max_frames: int = 12


def run(shards: str, root: Path, workers: int, bench: BenchmarkConfig) -> dict:
    config = PostPretrainConfig(
        shards=shards, checkpoints=str(root / "ckpt"), run_name=f"bench-{workers}w",
        model=CLIP4ClipConfig(backbone="debug", pretrained="", max_frames=bench.max_frames),
        data=ClipDataConfig(batch_size=bench.batch_size, candidates=5, clips_per_video=8, loader_workers=0),
        optim=OptimConfig(lr=1e-3, coef_lr=1.0),
        loop=LoopConfig(max_steps=bench.steps, log_every=bench.steps // 2),  # the last log window skips warm-up
        checkpoint=CheckpointConfig(every_steps=10 * bench.steps),
        workers=WorkersConfig(num_workers=workers),
    )  # fmt: skip
    return run_post_pretraining(config, storage_path=str(root / "ray")).metrics["last_log"]


def main() -> None:
    bench = parse_config(BenchmarkConfig)
    root = Path(tempfile.mkdtemp(prefix="bench-post-pretrain-"))
    try:
        shards = make_sample_shards(root, bench.videos)
        ray.init(address="local", num_cpus=2, include_dashboard=False)  # a new cluster, not a running one
        results = {workers: run(shards, root, workers, bench) for workers in (1, 2)}
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    baseline = results[1]["samples_per_second"]
    print(
        f"\ndebug model, {bench.max_frames} frames x K=5 captions, batch {bench.batch_size} per worker, CPU"
    )
    print(f"{'workers':>8} {'samples/s':>10} {'vs 1 worker':>12} {'s/step':>8} {'peak RSS MiB':>13}")
    for workers, metrics in results.items():
        print(
            f"{workers:>8} {metrics['samples_per_second']:>10.1f} {metrics['samples_per_second'] / baseline:>11.2f}x "
            f"{metrics['step_time_s']:>8.3f} {metrics['peak_rss_mib']:>13.0f}"
        )


if __name__ == "__main__":
    main()
