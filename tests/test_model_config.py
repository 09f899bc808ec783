"""CLIP4ClipConfig: defaults of the paper's setup, validation with actionable messages, JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from model.config import CLIP4ClipConfig


def test_defaults_are_clip4clip_vit_b32_openai():
    config = CLIP4ClipConfig()
    assert (config.backbone, config.pretrained, config.head, config.patch) == (
        "ViT-B-32",
        "openai",
        "meanP",
        "2d",
    )
    assert (config.max_frames, config.max_words) == (12, 32)
    assert (config.head_num_layers, config.cross_num_hidden_layers) == (4, 4)


def test_json_round_trip():
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head="tightTransf", patch="3d", max_frames=8)
    assert CLIP4ClipConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_is_frozen_and_keyword_only():
    config = CLIP4ClipConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.head = "seqLSTM"  # type: ignore[misc]
    with pytest.raises(TypeError):
        CLIP4ClipConfig("ViT-B-32")  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"head": "seqGRU"}, "head='seqGRU' is not one of"),
        ({"patch": "4d"}, "patch="),
        ({"backbone": "ViT-L-14"}, "backbone="),
        ({"max_frames": 0}, "max_frames=0"),
        ({"max_frames": 77}, r"max_frames=77 must be an integer in \[1, 76\]"),
        ({"max_words": 78}, "max_words=78"),
        ({"head_num_layers": 0}, "head_num_layers"),
        ({"tight_variant": "bert"}, "tight_variant"),
        ({"backbone": "debug"}, "pretrained=''"),
    ],
)
def test_bad_values_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        CLIP4ClipConfig(**overrides)


def test_unknown_fields_in_files_are_rejected():
    values = CLIP4ClipConfig().to_dict() | {"sim_header": "meanP"}
    with pytest.raises(ValueError, match="sim_header"):
        CLIP4ClipConfig.from_dict(values)
