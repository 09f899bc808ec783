"""Export a committed checkpoint for other tools.

python jobs/export_checkpoint.py --init <checkpoint> --format open_clip --out export-open_clip
    # open_clip.create_model_and_transforms('local-dir:export-open_clip')
python jobs/export_checkpoint.py --init <checkpoint> --format clip4clip --out ckpt/pytorch_model.bin
    # CLIP4Clip repository: --init_model ckpt/pytorch_model.bin (loose heads: --loose_type)
python jobs/export_checkpoint.py --init <checkpoint> --format safetensors --out model.safetensors
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python jobs/<job>.py`: in the project's virtualenv (jobs/_venv_guard.py)
    import _venv_guard  # noqa: F401

import logging
import sys
from collections.abc import Sequence

from pipelines.cli import parse_config
from pipelines.finetuning.exports import ExportConfig, export_checkpoint
from pipelines.storage import StorageError


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(ExportConfig, argv)
    try:
        path = export_checkpoint(config)
    except (StorageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {config.format} export: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
