"""Embed your own videos and texts with a CLIP4Clip checkpoint or export (Parquet out, on Ray); search them.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
      python jobs/embed.py --init s3://my-bucket/finetune-runs/msrvtt-seqTransf-finetune/latest \
        --videos /data/my-videos --texts queries.txt --out s3://my-bucket/embeddings/my-videos
    python jobs/embed.py --out s3://my-bucket/embeddings/my-videos --query "a dog catches a frisbee" --top-k 5

Rerunning the same command resumes; failed videos are listed with their reason.
"""

from __future__ import annotations

# Run as `python jobs/<job>.py`: make that the project's virtualenv (jobs/_venv_guard.py).
if not __package__:
    import _venv_guard  # noqa: F401

import sys
from collections.abc import Sequence

from pipelines.cli import parse_config
from pipelines.console import setup_job_logging
from pipelines.embedding.job import EmbedConfig, failed_items, run_embedding, search
from pipelines.ray_cluster import RayUnreachable, connect_to_ray
from pipelines.storage import StorageError

ALIASES = {"--model": "--backbone"}


def main(argv: Sequence[str] | None = None, *, use_ray: bool = True) -> int:
    config = parse_config(EmbedConfig, argv, aliases=ALIASES)
    setup_job_logging("embed")
    try:
        if config.query:
            for rank, (video_id, score) in enumerate(search(config), start=1):
                print(f"{rank:>4}  {score:+.4f}  {video_id}")
            return 0
        if use_ray:
            connect_to_ray()  # inside `ray job submit`: the cluster it was submitted to
        summary = run_embedding(config, use_ray=use_ray)
    except (StorageError, ValueError, RayUnreachable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"embedded {summary.ok} items ({summary.failed} failed) in {summary.seconds:.1f} s -> {config.out}")
    for row in failed_items(config):
        print(f"failed  {row['id']}: {row['reason']} {row['detail']}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
