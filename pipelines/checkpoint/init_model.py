"""`--init`: the model a fine-tuning, evaluation or export starts from.

"openai" is plain CLIP (the "no post-pretraining" baseline). Anything else is a committed checkpoint of the
trainer: "<root>/<run>/step-N", "<root>/<run>/latest" or "<root>/<run>", local or s3:// (uncommitted
folders are refused by resolve_checkpoint). Its weights must be complete for the model config it records;
the fine-tuning head may differ from the post-pretraining one, and a new head is then initialised from the
checkpoint's CLIP weights as the paper does (positions from the text encoder, layers from CLIP's).
A local CLIP weights file (OpenAI's own `ViT-B-32.pt` TorchScript archive, a plain state dict, safetensors;
read by model.clip_weights) is plain CLIP too, for offline clusters.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from model.clip4clip import CLIP4Clip
from model.clip_weights import WEIGHT_FILE_SUFFIXES
from model.config import Backbone, CLIP4ClipConfig, Head
from model.formats import build_without_download, from_open_clip_state_dict
from pipelines.checkpoint.read import read_checkpoint
from pipelines.config_values import PositiveInt

log = logging.getLogger(__name__)

OPENAI = "openai"
_HEAD_FIELDS = ("head", "head_num_layers", "cross_num_hidden_layers", "tight_variant")


@dataclass(frozen=True, kw_only=True)
class InitConfig:
    init: str
    """The model to start from: a committed checkpoint (<root>/<run>, <root>/<run>/latest or
    <root>/<run>/step-NNNNNNNN; local or s3://), "openai" for plain CLIP, or OpenAI's own weights file
    (/path/ViT-B-32.pt)."""
    backbone: Backbone | Literal[""] = ""
    """Expected model size ("ViT-B-32", "debug", ...); "" = the checkpoint's (ViT-B-32 for openai)."""
    head: Head | Literal[""] = ""
    """Similarity head of the model built (meanP, seqLSTM, seqTransf, tightTransf); "" = the checkpoint's
    (meanP for openai). Another head than the checkpoint's is initialised from its CLIP weights."""
    max_frames: PositiveInt = 12
    max_words: PositiveInt = 32


@dataclass(frozen=True, kw_only=True)
class InitModel:
    model: CLIP4Clip
    identity: dict  # what the model came from: checkpoint URL, step, commit time, digest, head change


def load_init_model(config: InitConfig) -> InitModel:
    if config.init == OPENAI and config.backbone == "debug":
        raise ValueError(
            "--init openai loads OpenAI's CLIP weights, which the 'debug' backbone has none of: pass "
            "--init <a checkpoint of a debug run> (e.g. the quick start's), or --model ViT-B-32 for plain CLIP"
        )
    if config.init == OPENAI or is_clip_weights_file(config.init):
        model_config = CLIP4ClipConfig(
            backbone=config.backbone or "ViT-B-32",
            pretrained=config.init,
            head=config.head or "meanP",
            max_frames=config.max_frames,
            max_words=config.max_words,
        )
        return InitModel(
            model=CLIP4Clip.from_config(model_config), identity={"init": config.init, "checkpoint": None}
        )
    with read_checkpoint(config.init) as checkpoint:
        state = checkpoint.weights()
        saved_config = checkpoint.model_config()
        model = model_from_checkpoint_weights(saved_config, state, config, where=checkpoint.ref.url)
    identity = {
        "init": config.init,
        **checkpoint.identity,
        "checkpoint_head": saved_config.head,
        "head": model.config.head,
    }
    return InitModel(model=model, identity=identity)


def is_clip_weights_file(init: str) -> bool:
    """A local file of CLIP weights (`ViT-B-32.pt`), not a checkpoint folder of this trainer."""
    return "://" not in init and init.endswith(WEIGHT_FILE_SUFFIXES) and Path(init).is_file()


def model_from_checkpoint_weights(
    saved: CLIP4ClipConfig, state: dict[str, torch.Tensor], config: InitConfig, *, where: str
) -> CLIP4Clip:
    """Checks `state` against the model `saved` describes, then builds the requested model from it."""
    if config.backbone and config.backbone != saved.backbone:
        raise ValueError(
            f"{where} holds a {saved.backbone!r} model, not the requested {config.backbone!r}: pass --backbone "
            f"{saved.backbone} (or leave it empty) or another checkpoint"
        )
    check_complete_weights(saved, state, where=where)
    target = dataclasses.replace(
        saved,
        head=config.head or saved.head,
        max_frames=config.max_frames,
        max_words=config.max_words,
    )
    clip_state = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
    model = from_open_clip_state_dict(
        target, clip_state
    )  # heads + 3D patch initialised from these CLIP weights
    same_head = all(getattr(saved, f) == getattr(target, f) for f in _HEAD_FIELDS)
    kept = {
        k: v for k, v in state.items() if k.startswith("patch3d.") or (same_head and k.startswith("head."))
    }
    missing, unexpected = model.load_state_dict(kept, strict=False)
    assert not unexpected, unexpected
    if not same_head:
        log.info(
            "head %s -> %s: the new head is initialised from CLIP, as the paper does", saved.head, target.head
        )
    return model


def check_complete_weights(saved: CLIP4ClipConfig, state: dict[str, torch.Tensor], *, where: str) -> None:
    """ValueError naming missing/unexpected keys or mismatched shapes (another model size)."""
    expected = {k: tuple(v.shape) for k, v in build_without_download(saved).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if shapes:
        first = shapes[0]
        raise ValueError(
            f"{where}: {len(shapes)} weights have other shapes than a {saved.backbone!r} model's (another model "
            f"size?), e.g. {first}: {tuple(state[first].shape)} vs {expected[first]}"
        )
    if missing or unexpected:
        raise ValueError(
            f"{where}: weights do not match its model config ({saved.backbone}, head {saved.head}): "
            f"missing {_few(missing)}, unexpected {_few(unexpected)}"
        )


def _few(keys: list[str]) -> str:
    return f"{keys[:5]}{f' and {len(keys) - 5} more' if len(keys) > 5 else ''} ({len(keys)})"
