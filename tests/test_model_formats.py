"""Checkpoint formats: safetensors + JSON, CLIP4Clip's key layout, open_clip's state dict."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.formats import (
    CONFIG_FILE,
    OPEN_CLIP_WEIGHTS_FILE,
    WEIGHTS_FILE,
    from_clip4clip_state_dict,
    from_open_clip_state_dict,
    load_clip4clip_checkpoint,
    load_model,
    save_clip4clip_checkpoint,
    save_model,
    save_open_clip_folder,
    to_clip4clip_state_dict,
    to_open_clip_state_dict,
)
from model.openclip_import import open_clip

HEADS = ["meanP", "seqLSTM", "seqTransf", "tightTransf"]
PATCHES = ["2d", "3d"]


def trained_looking_model(head="meanP", patch="2d", seed=0, **overrides) -> CLIP4Clip:
    """A debug model whose every weight is moved off its init, so only a faithful load reproduces it."""
    torch.manual_seed(seed)
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head=head, patch=patch, **overrides)
    model = CLIP4Clip.from_config(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    return model


def outputs(model: CLIP4Clip) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    video = torch.randn(2, 5, 3, 64, 64, generator=generator)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    tokens = model.tokenizer()(["cut the onion", "whisk two eggs", "sand the board"])
    with torch.no_grad():
        return model(video, mask, tokens)


def assert_same_outputs(a: CLIP4Clip, b: CLIP4Clip) -> None:
    out_a, out_b = outputs(a), outputs(b)
    assert out_a.keys() == out_b.keys()
    for key in out_a:
        torch.testing.assert_close(out_b[key], out_a[key], rtol=0, atol=0, msg=key)


# --- our format -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("head", HEADS)
def test_save_load_gives_identical_outputs(head, patch, tmp_path):
    model = trained_looking_model(head, patch)
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    assert_same_outputs(model, loaded)


def test_saved_files_describe_themselves(tmp_path):
    model = trained_looking_model("seqTransf", "3d", max_frames=8)
    save_model(model, tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == model.config.to_dict()
    from_weights_only = load_model(tmp_path / WEIGHTS_FILE).eval()  # config read from safetensors metadata
    assert from_weights_only.config == model.config
    assert_same_outputs(model, from_weights_only)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing")


def test_load_keeps_the_original_pretrained_setting(tmp_path):
    """Loading never downloads: weights come from the file, the config still says where CLIP came from."""
    model = trained_looking_model()
    model.config = CLIP4ClipConfig(backbone="debug", pretrained="/somewhere/clip.bin")
    save_model(model, tmp_path)
    assert load_model(tmp_path).config.pretrained == "/somewhere/clip.bin"


# --- CLIP4Clip repository layout ------------------------------------------------------------------------------
# Key names below are written from ArrowLuo/CLIP4Clip (modules/modeling.py, module_clip.py, module_cross.py).

CLIP_BLOCK = [
    "attn.in_proj_weight",
    "attn.in_proj_bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "ln_1.weight",
    "ln_1.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
]
OPENAI_CLIP_TOP = [
    "positional_embedding",
    "text_projection",
    "logit_scale",
    "token_embedding.weight",
    "ln_final.weight",
    "ln_final.bias",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.proj",
    "visual.conv1.weight",
    "visual.ln_pre.weight",
    "visual.ln_pre.bias",
    "visual.ln_post.weight",
    "visual.ln_post.bias",
]


def clip4clip_keys(head: str, patch: str, tight_variant: str = "clip4clip", layers: int = 2) -> set[str]:
    """The state dict keys CLIP4Clip's model has for the debug backbone (2 vision, 2 text layers)."""
    keys = {f"clip.{k}" for k in OPENAI_CLIP_TOP}
    for tower in ("clip.visual.transformer", "clip.transformer"):
        keys |= {f"{tower}.resblocks.{i}.{k}" for i in range(2) for k in CLIP_BLOCK}
    if patch == "3d":
        keys.add("clip.visual.conv2.weight")
    if head in ("seqLSTM", "seqTransf"):
        keys.add("frame_position_embeddings.weight")
    if head == "seqLSTM":
        keys |= {f"lstm_visual.{k}_l0" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    if head == "seqTransf":
        keys |= {f"transformerClip.resblocks.{i}.{k}" for i in range(layers) for k in CLIP_BLOCK}
    if head == "tightTransf":
        keys |= {
            "cross.embeddings.position_embeddings.weight",
            "cross.pooler.dense.weight",
            "cross.pooler.dense.bias",
        }
        keys |= {"similarity_dense.weight", "similarity_dense.bias"}
        keys |= {f"cross.transformer.resblocks.{i}.{k}" for i in range(layers) for k in CLIP_BLOCK}
        if tight_variant == "clip4clip":
            keys |= {"cross.pooler.ln_pool.weight", "cross.pooler.ln_pool.bias"}
        else:
            keys.add("cross.embeddings.token_type_embeddings.weight")
    return keys


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("head", HEADS)
def test_clip4clip_export_has_exactly_the_repository_keys(head, patch):
    model = trained_looking_model(
        head, patch, tight_variant="clip4clip", head_num_layers=3, cross_num_hidden_layers=3
    )
    assert set(to_clip4clip_state_dict(model)) == clip4clip_keys(head, patch, layers=3)


def test_clip4clip_paper_variant_keys():
    model = trained_looking_model("tightTransf")
    assert set(to_clip4clip_state_dict(model)) == clip4clip_keys(
        "tightTransf", "2d", tight_variant="paper", layers=4
    )


def test_clip4clip_export_values():
    model = trained_looking_model("seqLSTM", "3d")
    state = to_clip4clip_state_dict(model)
    assert torch.equal(state["clip.visual.conv2.weight"], model.patch3d.conv.weight)
    assert torch.equal(state["lstm_visual.weight_ih_l0"], model.head.lstm.weight_ih_l0)
    # CLIP4Clip creates frame_position_embeddings for seqLSTM, initialised from CLIP's text positions
    assert torch.equal(state["frame_position_embeddings.weight"], model.clip.positional_embedding)
    assert state["frame_position_embeddings.weight"].shape == (
        77,
        64,
    )  # CLIP4Clip: Embedding(context_length, D)


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize(
    "head,variant",
    [
        ("meanP", "paper"),
        ("seqLSTM", "paper"),
        ("seqTransf", "paper"),
        ("tightTransf", "paper"),
        ("tightTransf", "clip4clip"),
    ],
)
def test_clip4clip_round_trip_identical_outputs(head, variant, patch, tmp_path):
    model = trained_looking_model(head, patch, tight_variant=variant)
    path = save_clip4clip_checkpoint(model, tmp_path / "pytorch_model.bin")
    assert torch.load(path, weights_only=True).keys() == to_clip4clip_state_dict(model).keys()  # no pickles
    assert_same_outputs(model, load_clip4clip_checkpoint(model.config, path).eval())


def test_clip4clip_import_completes_missing_parts_as_clip4clip_does(caplog):
    """A CLIP-only checkpoint into a 3D seqTransf model: conv2 from conv1 (central frame), head from CLIP."""
    source = trained_looking_model("meanP", "2d")
    state = to_clip4clip_state_dict(source)
    state["clip.input_resolution"] = torch.tensor(64)  # OpenAI JIT metadata CLIP4Clip carries along
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head="seqTransf", patch="3d")
    with caplog.at_level(logging.WARNING, logger="model.formats"):
        model = from_clip4clip_state_dict(config, state)
    assert "patch3d.conv.weight" in caplog.text and "head.transformer" in caplog.text
    conv2 = model.patch3d.conv.weight
    assert torch.equal(conv2[:, :, 1], source.clip.visual.conv1.weight) and torch.all(
        conv2[:, :, [0, 2]] == 0
    )
    assert torch.equal(model.head.frame_position_embeddings.weight, source.clip.positional_embedding)
    block, clip_block = model.head.transformer.resblocks[1], source.clip.transformer.resblocks[1]
    assert torch.equal(block.mlp.c_fc.weight, clip_block.mlp.c_fc.weight)


def test_clip4clip_import_ignores_other_heads_and_rejects_incomplete_clip(caplog):
    tight = to_clip4clip_state_dict(trained_looking_model("tightTransf"))  # a loose_type=False checkpoint
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head="meanP")
    with caplog.at_level(logging.WARNING, logger="model.formats"):
        from_clip4clip_state_dict(config, tight)
    assert "cross.transformer" in caplog.text
    del tight["clip.ln_final.weight"]
    with pytest.raises(ValueError, match="ln_final.weight"):
        from_clip4clip_state_dict(config, tight)


# --- open_clip state dict -------------------------------------------------------------------------------------


def test_open_clip_export_loads_as_local_dir_with_identical_encoders(tmp_path):
    model = trained_looking_model("seqTransf")
    folder = save_open_clip_folder(model, tmp_path / "open_clip")
    peer, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    peer.eval()
    video = torch.randn(1, 3, 3, 64, 64)
    tokens = model.tokenizer()(["fold the paper"])
    with torch.no_grad():
        torch.testing.assert_close(
            peer.encode_image(video[0]), model.encode_frames(video, torch.ones(1, 3))[0]
        )
        text = torch.nn.functional.pad(tokens, (0, 77 - tokens.shape[1]))
        torch.testing.assert_close(peer.encode_text(text, normalize=True), model.encode_text(tokens))
    resize = preprocess.transforms[0]
    assert resize.size == 64  # the debug backbone's frame size, from the folder's own preprocess config


def test_open_clip_export_refuses_a_file_name(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        save_open_clip_folder(trained_looking_model("meanP"), tmp_path / "model.pt")


@pytest.mark.parametrize("head", ["meanP", "seqTransf"])
def test_open_clip_round_trip_identical_outputs(head):
    """meanP has no head weights, and a fresh seqTransf head no deeper than CLIP's text tower is all CLIP
    init: both round-trip exactly."""
    torch.manual_seed(0)
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head=head, head_num_layers=2)
    model = CLIP4Clip.from_config(config).eval()
    assert_same_outputs(model, from_open_clip_state_dict(model.config, to_open_clip_state_dict(model)).eval())


def test_open_clip_round_trip_via_pretrained_file(tmp_path):
    model = trained_looking_model("meanP")
    folder = save_open_clip_folder(model, tmp_path / "clip")
    config = CLIP4ClipConfig(backbone="debug", pretrained=str(folder / OPEN_CLIP_WEIGHTS_FILE), head="meanP")
    assert_same_outputs(model, CLIP4Clip.from_config(config).eval())


def test_open_clip_export_of_3d_model_is_its_still_image_filter():
    """Exported conv1 = 3D kernel summed over time: on a still clip, interior frames see exactly that."""
    model = trained_looking_model("meanP", "3d")
    with torch.no_grad():
        model.patch3d.conv.weight.normal_(std=0.02)  # side taps in use, as after training
    peer = from_open_clip_state_dict(
        CLIP4ClipConfig(backbone="debug", pretrained=""), to_open_clip_state_dict(model)
    )
    frame = torch.randn(1, 1, 3, 64, 64)
    still = frame.expand(1, 5, -1, -1, -1)
    with torch.no_grad():
        ours = model.encode_frames(still, torch.ones(1, 5))[0, 1:4]
        image = peer.clip.encode_image(frame[0]).expand(3, -1)
    torch.testing.assert_close(ours, image, rtol=1e-4, atol=1e-5)
