"""The checkpoint folder's file names are a stored format: checkpoints written before must stay readable."""

from __future__ import annotations

from pipelines.checkpoint import layout


def test_file_names_are_those_checkpoints_were_written_with() -> None:
    # Literal names, as every checkpoint so far has them on disk; changing one orphans existing runs.
    assert layout.WEIGHTS_FILE == "model.safetensors"
    assert layout.MODEL_CONFIG_FILE == "model_config.json"
    assert layout.TRAIN_STATE_FILE == "train_state.pt"
    assert layout.RUN_CONFIG_FILE == "config.json"
    assert layout.METRICS_FILE == "metrics.json"
    assert layout.LOSS_CURVE_FILE == "loss_curve.png"
    assert layout.COMMIT_MARKER == "COMMITTED.json"
    assert layout.IN_PROGRESS == "SAVING.json"
    assert layout.LATEST == "latest.json"
    assert layout.step_folder_name(1000) == "step-00001000"
    assert layout.step_of("step-00001000") == 1000
    assert layout.STEP_FOLDER.match("step-123456789") and not layout.STEP_FOLDER.match("step-1")
