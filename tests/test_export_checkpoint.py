"""jobs/export_checkpoint.py on a committed checkpoint: the open_clip export loads through open_clip's own
factory with the same features; the CLIP4Clip export has exactly the repository's keys for the head; the
safetensors export carries its config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from jobs.export_checkpoint import main
from model.formats import load_model
from model.openclip_import import open_clip
from pipelines.checkpoint.exports import safetensors_export_file
from pipelines.checkpoint.layout import WEIGHTS_FILE
from tests.test_finetuning_init import commit
from tests.test_model_formats import clip4clip_keys, trained_looking_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    models = {
        head: trained_looking_model(
            head, tight_variant="clip4clip", head_num_layers=2, cross_num_hidden_layers=2
        )
        for head in ("meanP", "seqLSTM", "seqTransf", "tightTransf")
    }
    return {head: (model, commit(model, root, f"run-{head}")) for head, model in models.items()}


def test_open_clip_export_loads_through_open_clips_factory_with_the_same_features(checkpoints, tmp_path):
    model, run = checkpoints["seqTransf"]
    out = tmp_path / "open_clip"
    assert main(["--init", f"{run}/latest", "--format", "open_clip", "--out", str(out)]) == 0
    peer, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    peer.eval()
    video = torch.randn(2, 3, 3, 64, 64)  # (B, T, 3, H, W)
    tokens = model.tokenizer()(["fold the paper", "a red screen turns blue"])
    with torch.no_grad():
        ours_frames = model.eval().encode_frames(video, torch.ones(2, 3))
        peer_frames = peer.encode_image(video.flatten(0, 1)).reshape(2, 3, -1)
        torch.testing.assert_close(peer_frames, ours_frames, atol=1e-5, rtol=0)
        padded = torch.nn.functional.pad(tokens, (0, 77 - tokens.shape[1]))
        torch.testing.assert_close(
            peer.encode_text(padded, normalize=True), model.encode_text(tokens), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("head", ["meanP", "seqLSTM", "seqTransf", "tightTransf"])
def test_clip4clip_export_has_exactly_the_repository_keys(checkpoints, head, tmp_path):
    model, run = checkpoints[head]
    out = tmp_path / "ckpt" / "pytorch_model.bin"
    assert main(["--init", run, "--format", "clip4clip", "--out", str(out), "--head", head]) == 0
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert set(state) == clip4clip_keys(head, "2d", layers=2)
    assert torch.equal(state["clip.visual.proj"], model.clip.visual.proj)


def test_safetensors_export_carries_its_config(checkpoints, tmp_path):
    model, run = checkpoints["seqLSTM"]
    out = tmp_path / "model.safetensors"
    assert main(["--init", run, "--format", "safetensors", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["head"] == "seqLSTM"
    assert set(load_file(str(out))) == set(model.state_dict())
    reloaded = load_model(out)  # the config from the file's own metadata
    assert reloaded.config.head == "seqLSTM"


def test_refused_checkpoint_exits_2(tmp_path, capsys):
    assert (
        main(
            ["--init", str(tmp_path / "nothing-here"), "--format", "open_clip", "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert "no committed checkpoint" in capsys.readouterr().err


def test_a_safetensors_export_is_told_apart_from_a_checkpoint(checkpoints, tmp_path):
    """What the embedding job loads as an export (file or folder) rather than through --init's checkpoint path."""
    _, run = checkpoints["meanP"]
    as_file, as_folder = tmp_path / "model.safetensors", tmp_path / "folder"
    for out in (as_file, as_folder):
        assert main(["--init", run, "--format", "safetensors", "--out", str(out)]) == 0
    assert safetensors_export_file(str(as_file)) == as_file
    assert safetensors_export_file(str(as_folder)) == as_folder / WEIGHTS_FILE
    step_folder = next(
        Path(run).glob("step-*")
    )  # a committed checkpoint has the same two files, and a marker
    assert safetensors_export_file(str(step_folder)) is None
    assert (
        safetensors_export_file(run) is None and safetensors_export_file("s3://bucket/x.safetensors") is None
    )
