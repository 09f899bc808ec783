"""--init: committed checkpoints load (with another head, initialised from CLIP); bad ones are refused with a
message naming what is wrong."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.formats import WEIGHTS_FILE, save_model
from pipelines.checkpoint.init_model import InitConfig, load_init_model
from pipelines.checkpoint.store import COMMIT_MARKER, CheckpointStore


def commit(model: CLIP4Clip, root: Path, run: str, step: int = 10, edit=None) -> str:
    with tempfile.TemporaryDirectory() as folder:
        save_model(model, folder)
        if edit is not None:
            edit(Path(folder) / WEIGHTS_FILE)
        CheckpointStore(str(root), run).save(step, folder)
    return str(root / run)


def debug_model(head: str = "meanP", seed: int = 0) -> CLIP4Clip:
    torch.manual_seed(seed)
    return CLIP4Clip.from_config(CLIP4ClipConfig(backbone="debug", pretrained="", head=head, max_frames=4))


def test_same_head_loads_every_weight(tmp_path):
    model = debug_model("seqTransf")
    loaded = load_init_model(InitConfig(init=commit(model, tmp_path, "run") + "/latest", max_frames=4))
    assert loaded.identity["step"] == 10 and loaded.identity["checkpoint"].endswith("step-00000010")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_other_head_is_initialised_from_the_checkpoints_clip(tmp_path):
    model = debug_model("meanP")
    with torch.no_grad():
        model.clip.positional_embedding.add_(1.0)  # as if post-pretraining had moved CLIP's weights
    loaded = load_init_model(
        InitConfig(init=commit(model, tmp_path, "run"), head="seqTransf", max_frames=4)
    ).model
    assert loaded.config.head == "seqTransf"
    assert torch.equal(loaded.clip.positional_embedding, model.clip.positional_embedding)
    # the paper's init: frame positions from the text encoder's position embedding (of these weights)
    rows = loaded.head.frame_position_embeddings.weight.shape[0]
    assert torch.equal(loaded.head.frame_position_embeddings.weight, model.clip.positional_embedding[:rows])


def test_uncommitted_folder_is_refused(tmp_path):
    run = commit(debug_model(), tmp_path, "run")
    (Path(run) / "step-00000010" / COMMIT_MARKER).unlink()
    with pytest.raises(ValueError, match="no commit marker"):
        load_init_model(InitConfig(init=run + "/step-00000010"))


def test_other_model_size_is_refused(tmp_path):
    run = commit(debug_model(), tmp_path, "run")
    with pytest.raises(ValueError, match="'debug' model, not the requested 'ViT-B-32'"):
        load_init_model(InitConfig(init=run, backbone="ViT-B-32"))


def test_missing_and_resized_weights_are_refused(tmp_path):
    def drop_key(path: Path) -> None:
        state = load_file(str(path))
        del state["clip.ln_final.weight"]
        save_file(state, str(path))

    def resize(path: Path) -> None:
        state = load_file(str(path))
        state["clip.text_projection"] = torch.zeros(64, 128)
        save_file(state, str(path))

    with pytest.raises(ValueError, match=r"missing \['clip.ln_final.weight'\]"):
        load_init_model(InitConfig(init=commit(debug_model(), tmp_path, "drop", edit=drop_key)))
    with pytest.raises(ValueError, match="another model size"):
        load_init_model(InitConfig(init=commit(debug_model(), tmp_path, "resize", edit=resize)))
