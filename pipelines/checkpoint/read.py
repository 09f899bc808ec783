"""Reading a committed checkpoint: the one reader behind resume, fine-tuning init and evaluation.

`read_checkpoint` downloads (and verifies) a committed checkpoint into a temporary folder and yields its
contents, typed; the folder is gone when the `with` block ends. The identity recorded next to a model in
reports (which checkpoint, which step, which weights) is built here, once.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.formats import load_model
from pipelines.checkpoint.layout import (
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    RUN_CONFIG_FILE,
    TRAIN_STATE_FILE,
    WEIGHTS_FILE,
)
from pipelines.checkpoint.store import (
    CheckpointRef,
    CheckpointStore,
    download_checkpoint,
    resolve_checkpoint,
)


@dataclass(frozen=True, kw_only=True)
class CheckpointContents:
    """A committed checkpoint's files in a local folder (only while read_checkpoint's block runs)."""

    ref: CheckpointRef
    folder: Path

    @property
    def identity(self) -> dict[str, Any]:
        """What tells this checkpoint apart from any other: URL, step, commit time, digest of the weights."""
        return {
            "checkpoint": self.ref.url,
            "step": self.ref.step,
            "committed_utc": self.ref.committed_utc,
            "weights_sha256": self.ref.sha256.get(WEIGHTS_FILE, ""),
        }

    def model_config_dict(self) -> dict[str, Any]:
        return json.loads(self._file(MODEL_CONFIG_FILE).read_text())

    def model_config(self) -> CLIP4ClipConfig:
        return CLIP4ClipConfig.from_dict(self.model_config_dict())

    def weights(self, device: str = "cpu") -> dict[str, torch.Tensor]:
        return load_file(str(self._file(WEIGHTS_FILE)), device=device)

    def model(self) -> CLIP4Clip:
        """The model exactly as saved (its config and weights)."""
        self._file(WEIGHTS_FILE), self._file(MODEL_CONFIG_FILE)  # the two load_model reads
        return load_model(self.folder)

    @property
    def train_state_path(self) -> Path:
        return self._file(TRAIN_STATE_FILE)

    def run_config(self) -> dict[str, Any]:
        """What the run that wrote the checkpoint recorded about itself (job config, init, ...)."""
        return json.loads(self._file(RUN_CONFIG_FILE).read_text())

    def metrics(self) -> dict[str, Any]:
        return json.loads(self._file(METRICS_FILE).read_text())

    def _file(self, name: str) -> Path:
        path = self.folder / name
        if not path.is_file():
            raise ValueError(
                f"checkpoint {self.ref.url} has no {name}: it is not a model checkpoint of this trainer"
            )
        return path


@contextlib.contextmanager
def read_checkpoint(
    checkpoint: str | CheckpointRef, *, store: CheckpointStore | None = None
) -> Iterator[CheckpointContents]:
    """A checkpoint URL (resolved as resolve_checkpoint does) or a ref (of `store`, when given), downloaded and
    verified against its commit marker."""
    ref = resolve_checkpoint(checkpoint) if isinstance(checkpoint, str) else checkpoint
    with tempfile.TemporaryDirectory(prefix="checkpoint-") as folder:
        local = store.download(ref, folder) if store is not None else download_checkpoint(ref, folder)
        yield CheckpointContents(ref=ref, folder=local)
