"""Fine-tune CLIP4Clip for text-video retrieval from a post-pretrained checkpoint (Ray Train), then evaluate;
or evaluate zero-shot.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
      python jobs/finetune_retrieval.py --init s3://my-bucket/runs/clip4clip-meanP-milnce/latest \
        --dataset msrvtt --data-root /data/msrvtt --split 9k --head seqTransf --epochs 5 --num-workers 4 --use-gpu
    python jobs/finetune_retrieval.py --init <checkpoint> --dataset msrvtt --data-root /data/msrvtt --zero-shot

Metrics go to <checkpoints>/<run-name>/eval/ (JSON per mode + metrics.md) and are printed as a table.
"""

from __future__ import annotations

# Run as `python jobs/<job>.py`: make that the project's virtualenv (jobs/_venv_guard.py).
if not __package__:
    import _venv_guard  # noqa: F401

import sys
from collections.abc import Sequence

from pipelines.cli import parse_config
from pipelines.console import setup_job_logging
from pipelines.finetuning.finetune import FinetuneConfig, run_retrieval
from pipelines.ray_cluster import RayUnreachable, connect_to_ray
from pipelines.storage import StorageError

ALIASES = {"--model": "--backbone"}


def main(argv: Sequence[str] | None = None, *, use_ray: bool = True) -> int:
    config = parse_config(FinetuneConfig, argv, aliases=ALIASES)
    setup_job_logging("finetune")
    try:
        if use_ray and (config.workers.use_gpu or not config.zero_shot):  # GPU evaluation runs as a Ray task
            connect_to_ray()  # inside `ray job submit`: the cluster it was submitted to
        result = run_retrieval(config, use_ray=use_ray)
    except (StorageError, ValueError, RayUnreachable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n" + result.table)
    print(f"reports     {config.reports_url}/")
    if result.checkpoint:
        print(f"checkpoint  {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
