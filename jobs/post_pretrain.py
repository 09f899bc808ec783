"""Post-pretrain CLIP4Clip with MIL-NCE on Ray Train, streaming shards made by jobs/shard_howto100m.py.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
      python jobs/post_pretrain.py --shards s3://my-bucket/howto100m-380k-1fps \
        --checkpoints s3://my-bucket/runs --run-name clip4clip-meanP-milnce \
        --num-workers 8 --use-gpu --model ViT-B-32 --head meanP --max-frames 12 --candidates 5

Submitting the same command again resumes from the run's last committed checkpoint, on any number of
workers. Exit status: 0 done, 75 preempted (SIGTERM; a checkpoint was committed: submit it again), 1 training
failed, 2 bad input.
"""

from __future__ import annotations

# Run as `python jobs/<job>.py`: make that the project's virtualenv (jobs/_venv_guard.py).
if not __package__:
    import _venv_guard  # noqa: F401

import sys
from collections.abc import Sequence

import ray
import ray.train

from pipelines.cli import parse_config
from pipelines.console import setup_job_logging
from pipelines.ray_cluster import RayUnreachable, connect_to_ray
from pipelines.storage import StorageError
from pipelines.training.post_pretrain import PostPretrainConfig, check_before_start, run_post_pretraining
from pipelines.training.preemption import EXIT_PREEMPTED

ALIASES = {"--model": "--backbone"}  # the spelling of the backbone choice


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(PostPretrainConfig, argv, aliases=ALIASES)
    setup_job_logging("post-pretrain")
    try:
        check_before_start(config)  # a wrong --shards or store: one line, before Ray or any worker starts
        connect_to_ray()  # inside `ray job submit`: the cluster it was submitted to
        result = run_post_pretraining(config)
    except (StorageError, ValueError, RayUnreachable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ray.train.TrainingFailedError as error:
        print(f"training failed after {config.workers.max_failures} restarts: {error}", file=sys.stderr)
        return 1
    if result.preempted:
        print(
            f"preempted, resumable: step {result.step} committed at {result.checkpoint}; submit again to continue"
        )
        return EXIT_PREEMPTED
    losses = result.metrics.get("loss_history", [])
    print(
        f"done: step {result.step}, loss {losses[0][1]:.4f} -> {losses[-1][1]:.4f}"
        if losses
        else f"done: step {result.step}"
    )
    print(f"checkpoint  {result.checkpoint}\nloss curve  {result.checkpoint}/loss_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
