"""Export a committed checkpoint for other tools.

python jobs/export_checkpoint.py --init <checkpoint> --format open_clip --out export-open_clip
    # open_clip.create_model_and_transforms('local-dir:export-open_clip')
python jobs/export_checkpoint.py --init <checkpoint> --format clip4clip --out ckpt/pytorch_model.bin
    # CLIP4Clip repository: --init_model ckpt/pytorch_model.bin (loose heads: --loose_type)
python jobs/export_checkpoint.py --init <checkpoint> --format safetensors --out model.safetensors
"""

from __future__ import annotations

# Run as `python jobs/<job>.py`: make that the project's virtualenv (jobs/_venv_guard.py).
if not __package__:
    import _venv_guard  # noqa: F401

import sys
from collections.abc import Sequence

from pipelines.checkpoint.exports import ExportConfig, export_checkpoint
from pipelines.cli import parse_config
from pipelines.console import setup_job_logging
from pipelines.storage import StorageError


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(ExportConfig, argv)
    setup_job_logging("export")
    try:
        path = export_checkpoint(config)
    except (StorageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {config.format} export: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
