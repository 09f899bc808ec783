"""The checkpoint folder's file names are a stored format: checkpoints written before must stay readable."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from pipelines.checkpoint import layout
from pipelines.checkpoint.read import read_checkpoint
from pipelines.checkpoint.store import CheckpointCorrupt, CheckpointStore


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


def test_checkpoint_written_by_the_previous_code_reads(tmp_path: Path) -> None:
    """A folder as the trainer wrote it before pipelines.checkpoint existed (literal names, the model
    config in both config.json and model_config.json) reads through read_checkpoint."""
    torch.manual_seed(0)
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head="meanP", max_frames=4)
    model = CLIP4Clip.from_config(config)
    folder = tmp_path / "written"
    folder.mkdir()
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(
        state, str(folder / "model.safetensors"), metadata={"clip4clip_config": json.dumps(config.to_dict())}
    )
    (folder / "model_config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    (folder / "train_state.pt").write_bytes(b"not read here")
    run_record = {"run_name": "old", "model": config.to_dict(), "init": {"init": "openai"}}
    (folder / "config.json").write_text(json.dumps(run_record))
    (folder / "metrics.json").write_text(json.dumps({"step": 7, "loss_history": [[7, 1.5]]}))
    ref = CheckpointStore(str(tmp_path / "ckpt"), "old").save(7, folder)

    with read_checkpoint(str(tmp_path / "ckpt" / "old")) as checkpoint:
        assert checkpoint.ref.step == 7 and checkpoint.ref.url == ref.url
        assert checkpoint.model_config() == config
        assert checkpoint.run_config()["init"] == {"init": "openai"}
        assert checkpoint.metrics()["loss_history"] == [[7, 1.5]]
        assert checkpoint.train_state_path.read_bytes() == b"not read here"
        weights = checkpoint.weights()
        loaded = checkpoint.model()
    assert all(torch.equal(weights[name], value) for name, value in state.items())
    assert all(torch.equal(loaded.state_dict()[name], value) for name, value in state.items())
    assert checkpoint.identity == {
        "checkpoint": ref.url,
        "step": 7,
        "committed_utc": ref.committed_utc,
        "weights_sha256": ref.sha256["model.safetensors"],
    }


def test_one_file_of_a_committed_checkpoint_is_read_through_the_store(tmp_path: Path) -> None:
    folder = tmp_path / "written"
    folder.mkdir()
    (folder / layout.METRICS_FILE).write_text(json.dumps({"step": 3}))
    store = CheckpointStore(str(tmp_path / "ckpt"), "run")
    ref = store.save(3, folder)
    assert json.loads(store.read_file(ref, layout.METRICS_FILE)) == {"step": 3}
    with pytest.raises(ValueError, match=layout.LOSS_CURVE_FILE):
        store.read_file(ref, layout.LOSS_CURVE_FILE)
    (tmp_path / "ckpt" / "run" / ref.name / layout.METRICS_FILE).write_text(json.dumps({"step": 4}))
    with pytest.raises(CheckpointCorrupt):
        store.read_file(ref, layout.METRICS_FILE)


def test_the_checkpoint_package_imports_no_other_workflow() -> None:
    """Following a checkpoint URL to its bytes never leaves pipelines.checkpoint for training or fine-tuning
    (and so never comes back into it): it imports only model/ and pipelines' shared modules."""
    package = Path(layout.__file__).parent
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipelines."):
                imported.add(node.module)
    workflows = {name for name in imported if not name.startswith("pipelines.checkpoint")}
    assert workflows <= {"pipelines.config_values", "pipelines.failpoints", "pipelines.storage"}, workflows
