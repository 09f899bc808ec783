"""Exports of a checkpoint for other tools: an open_clip state dict, the CLIP4Clip repository's
`pytorch_model.bin`, or our safetensors + JSON config (model.formats does the key mapping)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from safetensors import safe_open

from model.formats import (
    MODEL_CONFIG_METADATA_KEY,
    save_clip4clip_checkpoint,
    save_model,
    save_open_clip_folder,
)
from pipelines.checkpoint.init_model import InitConfig, load_init_model
from pipelines.checkpoint.layout import COMMIT_MARKER, MODEL_CONFIG_FILE, WEIGHTS_FILE

ExportFormat = Literal["open_clip", "clip4clip", "safetensors"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Export a committed checkpoint (or plain CLIP) to open_clip, CLIP4Clip or safetensors."""

    init: InitConfig
    format: ExportFormat = "open_clip"
    out: str = "export"
    """open_clip: a folder (open_clip_config.json + open_clip_model.safetensors; load it with
    open_clip.create_model_and_transforms('local-dir:<out>')). clip4clip: a file (or a folder, for
    <out>/pytorch_model.bin). safetensors: <out>.safetensors + <out>.json, or a folder without a suffix."""


def export_checkpoint(config: ExportConfig) -> Path:
    model = load_init_model(config.init).model
    out = Path(config.out)
    if config.format == "open_clip":
        return save_open_clip_folder(model, out)
    if config.format == "clip4clip":
        return save_clip4clip_checkpoint(model, out if out.suffix else out / "pytorch_model.bin")
    if config.format == "safetensors":
        return _save_safetensors(model, out)
    raise ValueError(f"format {config.format!r} is not one of {FORMATS}")


def _save_safetensors(model, out: Path) -> Path:
    """<out>.safetensors (config in its metadata) + <out>.json next to it; or a folder if `out` has no suffix."""
    if out.suffix != ".safetensors":
        return save_model(model, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as folder:
        save_model(model, folder)
        (Path(folder) / MODEL_CONFIG_FILE).replace(out.with_suffix(".json"))
        (Path(folder) / WEIGHTS_FILE).replace(out)
    return out


def safetensors_export_file(init: str) -> Path | None:
    """The weights file of a safetensors export (`--format safetensors`: a file, or a folder without a commit
    marker), else None (a checkpoint, plain CLIP weights, a URL)."""
    path = Path(init)
    if "://" in init:
        return None
    if path.is_file() and path.suffix == ".safetensors":
        return path if _has_model_config(path) else None  # else plain CLIP weights (model.clip_weights)
    if path.is_dir() and (path / WEIGHTS_FILE).is_file() and (path / MODEL_CONFIG_FILE).is_file():
        return None if (path / COMMIT_MARKER).exists() else path / WEIGHTS_FILE  # marker: a checkpoint
    return None


def _has_model_config(path: Path) -> bool:
    with safe_open(str(path), framework="pt") as handle:
        return MODEL_CONFIG_METADATA_KEY in (handle.metadata() or {})
