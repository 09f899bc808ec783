"""An audit of what a run trained on: per micro-batch, the optimizer step it belongs to and its clip ids.

One JSONL file per rank and process start (`rank-00001-<pid>.jsonl`) in a local folder, so a run killed
and resumed (on any number of workers) leaves every attempt's record side by side. A line is written when
the micro-batch's forward/backward is done; lines of steps after the last committed checkpoint belong to
work the resumed run redoes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

_ID_KEYS = ("video_id", "clip_start_s", "clip_index")  # whichever the batch has


class BatchLog:
    def __init__(self, folder: str, *, rank: int) -> None:
        self.path = Path(folder) / f"rank-{rank:05d}-{os.getpid()}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, *, step: int, epoch: int, batch: dict) -> None:
        record: dict[str, Any] = {"step": step, "epoch": epoch}
        for key in _ID_KEYS:
            if key in batch:
                value = batch[key]
                record[key] = value.tolist() if isinstance(value, torch.Tensor) else list(value)
        with self.path.open("a") as sink:
            sink.write(json.dumps(record) + "\n")


def read_batch_logs(folder: str | os.PathLike[str]) -> list[dict]:
    """Every line of every rank's log in `folder`, each with "log": its file's name (rank and process)."""
    return [
        {**json.loads(line), "log": path.name}
        for path in sorted(Path(folder).glob("rank-*.jsonl"))
        for line in path.open()
    ]
