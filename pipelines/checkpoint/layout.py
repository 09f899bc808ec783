"""Every file name of a checkpoint run folder, in one place; written by the training loop and the checkpoint
store, read by resume, fine-tuning init, evaluation, export and embedding.

    <root>/<run>/latest.json                       {"step": N, "path": "step-0000000N", ...}
    <root>/<run>/step-0000000N/SAVING.json          written first: when and by whom the save started
                               model.safetensors    weights (model.formats.save_model)
                               model_config.json    the model config (model.formats.save_model)
                               train_state.pt       step, optimizer, scheduler, RNG, data position
                               config.json          the run's record (job config; its "model" is a copy)
                               metrics.json         loss history, data position, where it resumed
                               loss_curve.png       final checkpoint only
                               COMMITTED.json       written last: every file's size and sha256

The model config is in both model_config.json and config.json's "model" (checkpoints written before this
module hold both); every reader reads model_config.json.
"""

from __future__ import annotations

import re

from model.files import CONFIG_FILE as MODEL_CONFIG_FILE
from model.files import WEIGHTS_FILE

__all__ = [
    "COMMIT_MARKER",
    "IN_PROGRESS",
    "LATEST",
    "LATEST_ALIASES",
    "LOSS_CURVE_FILE",
    "METRICS_FILE",
    "MODEL_CONFIG_FILE",
    "RUN_CONFIG_FILE",
    "STEP_FOLDER",
    "TRAIN_STATE_FILE",
    "WEIGHTS_FILE",
    "step_folder_name",
    "step_of",
]

TRAIN_STATE_FILE = "train_state.pt"
RUN_CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOSS_CURVE_FILE = "loss_curve.png"
COMMIT_MARKER = "COMMITTED.json"  # written last; lists every file with size + sha256
IN_PROGRESS = "SAVING.json"  # written first: when (and by whom) a save of this folder started
LATEST = "latest.json"  # {"step": N, "path": "step-0000000N", ...}; advanced with compare-and-swap
LATEST_ALIASES = ("latest", LATEST)  # what a checkpoint URL may end with to mean the run's newest
STEP_FOLDER = re.compile(r"^step-(\d{8,})$")


def step_folder_name(step: int) -> str:
    return f"step-{step:08d}"


def step_of(folder_name: str) -> int:
    """The step a step folder's name encodes ("step-00001000" -> 1000)."""
    match = STEP_FOLDER.match(folder_name)
    assert match is not None, folder_name
    return int(match.group(1))
