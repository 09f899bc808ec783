"""Shard a HowTo100M collection into WebDataset tars of 1 fps JPEG frames + time-aligned ASR captions.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
      python jobs/shard_howto100m.py --videos /data/howto100m/videos \
        --metadata /data/howto100m/HowTo100M_v1.csv --captions /data/howto100m/caption.json \
        --subset howto100m-380k --out s3://my-bucket/howto100m-380k-1fps

The sources may be on object storage too (`--videos s3://corpus/howto100m/videos`, `--metadata
s3://corpus/howto100m/HowTo100M_v1.csv`, `--captions s3://corpus/howto100m/caption.json`): tasks spool one
video at a time to local disk and read only their caption records.

Rerunning the same command resumes: complete shards are kept, the rest are redone whole.
"""

from __future__ import annotations

# Run as `python jobs/<job>.py`: make that the project's virtualenv (jobs/_venv_guard.py).
if not __package__:
    import _venv_guard  # noqa: F401

import sys
from collections.abc import Sequence

from pipelines.cli import parse_config
from pipelines.console import setup_job_logging
from pipelines.sharding.job import ShardingConfig, ShardingIncompleteError, run_sharding_job
from pipelines.sharding.plan import PlanMismatchError
from pipelines.storage import StorageError


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(ShardingConfig, argv)
    setup_job_logging("shard")
    try:
        run_sharding_job(config)
    except (PlanMismatchError, StorageError, FileNotFoundError, NotADirectoryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ShardingIncompleteError as error:
        print(f"incomplete: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
