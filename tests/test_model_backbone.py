"""open_clip backbones: named sizes, pretrained loading (real code path, no network here), tokenizers."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch

from model.backbone import (
    OPEN_CLIP_MODEL_NAMES,
    PretrainedWeightsUnavailable,
    create_clip,
    create_tokenizer,
    open_clip_model_name,
)
from model.openclip_import import open_clip


def test_debug_backbone_is_registered_with_open_clip():
    assert OPEN_CLIP_MODEL_NAMES["debug"] in open_clip.list_models()
    config = open_clip.get_model_config(OPEN_CLIP_MODEL_NAMES["debug"])
    assert config["vision_cfg"]["image_size"] == 64
    assert config["text_cfg"]["vocab_size"] == 49408  # the real tokenizer's vocabulary


def test_debug_backbone_is_tiny():
    clip = create_clip("debug", "", quick_gelu=True)
    assert sum(p.numel() for p in clip.parameters()) < 4_000_000  # mostly the 49408 x 64 token table
    assert type(clip.transformer.resblocks[0].mlp.gelu) is open_clip.transformer.QuickGELU


def test_openai_weights_go_through_open_clip_and_fail_clearly_offline(monkeypatch, tmp_path):
    """The real `pretrained='openai'` path: open_clip tries to fetch; offline, the error says what to do."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast instead of retrying
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        create_clip("ViT-B-32", "openai", quick_gelu=True)
    message = str(error.value)
    assert "'openai'" in message and "ViT-B-32" in message
    assert "local path" in message and "pretrained=''" in message
    assert isinstance(error.value.__cause__, RuntimeError)  # open_clip's own error, kept for the details


def test_missing_local_file_is_reported_as_missing_not_as_a_download(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as error:
        create_clip("debug", str(tmp_path / "nope.bin"), quick_gelu=True)
    assert "fetch" not in str(error.value)


def test_pretrained_local_file_is_loaded_by_open_clip(tmp_path):
    torch.manual_seed(0)
    source = create_clip("debug", "", quick_gelu=True)
    path = tmp_path / "clip.bin"
    torch.save(source.state_dict(), path)
    loaded = create_clip("debug", str(path), quick_gelu=True)
    for (name, value), (_, expected) in zip(
        loaded.state_dict().items(), source.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name


def test_tokenizer_context_length_is_max_words():
    tokens = create_tokenizer("debug", 16)(["a dog catches a frisbee"])
    assert tokens.shape == (1, 16)
    reference = open_clip.get_tokenizer("ViT-B-32")(["a dog catches a frisbee"])  # same BPE, length 77
    assert torch.equal(tokens[0], reference[0, :16])


def test_unknown_backbone():
    with pytest.raises(ValueError, match="ViT-B-32"):
        open_clip_model_name("ViT-H-14")
