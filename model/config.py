"""The model's typed configuration (shared by the trainer, the hand-off jobs and checkpoint files)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

Backbone = Literal["ViT-B-32", "ViT-B-16", "debug"]
Head = Literal["meanP", "seqLSTM", "seqTransf", "tightTransf"]
Patch = Literal["2d", "3d"]
TightVariant = Literal["paper", "clip4clip"]

# the choices, from the Literals above (one list each: runtime checks and the CLI both read these)
BACKBONES: tuple[str, ...] = get_args(Backbone)
HEADS: tuple[str, ...] = get_args(Head)
PATCHES: tuple[str, ...] = get_args(Patch)
TIGHT_VARIANTS: tuple[str, ...] = get_args(TightVariant)
# CLIP's text positions (77) bound the frame/cross position embeddings, which are initialised from them.
CLIP_CONTEXT_LENGTH = 77


@dataclass(frozen=True, kw_only=True)
class CLIP4ClipConfig:
    """CLIP4Clip on an open_clip backbone.

    backbone: open_clip architecture; "debug" is a tiny random-init model for tests and the quick start.
    pretrained: "openai" (open_clip's download), "" (random init) or a local checkpoint file open_clip can load.
    head: similarity head of the paper (Luo et al. 2021, sec. 3.3).
    patch: "2d" (CLIP's Conv2d per frame) or "3d" (Conv3d over time, central-frame init).
    max_frames / max_words: frames per clip and text tokens per caption (the tokenizer's context length).
    head_num_layers: transformer layers of seqTransf; cross_num_hidden_layers: those of tightTransf.
    tight_variant: "paper" = type + position embeddings and Linear -> ReLU -> Linear (the paper's eq.);
        "clip4clip" = the CLIP4Clip repository's module (position embeddings only, LayerNorm -> Linear ->
        QuickGELU -> Linear), for checkpoints that must load into that code unchanged.
    quick_gelu: activation of the backbone and the heads' transformer layers; OpenAI CLIP weights need True.
    """

    backbone: Backbone = "ViT-B-32"
    pretrained: str = "openai"
    head: Head = "meanP"
    patch: Patch = "2d"
    max_frames: int = 12
    max_words: int = 32
    head_num_layers: int = 4
    cross_num_hidden_layers: int = 4
    tight_variant: TightVariant = "paper"
    quick_gelu: bool = True

    def __post_init__(self) -> None:
        _check_choice("backbone", self.backbone, BACKBONES)
        _check_choice("head", self.head, HEADS)
        _check_choice("patch", self.patch, PATCHES)
        _check_choice("tight_variant", self.tight_variant, TIGHT_VARIANTS)
        _check_range("max_frames", self.max_frames, 1, CLIP_CONTEXT_LENGTH - 1)
        _check_range("max_words", self.max_words, 2, CLIP_CONTEXT_LENGTH)
        _check_range("head_num_layers", self.head_num_layers, 1, None)
        _check_range("cross_num_hidden_layers", self.cross_num_hidden_layers, 1, None)
        if self.backbone == "debug" and self.pretrained == "openai":
            raise ValueError(
                "the 'debug' backbone has no pretrained weights: use pretrained='' (random init)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CLIP4ClipConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CLIP4ClipConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**values)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def _check_range(name: str, value: Any, low: int, high: int | None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value!r} must be an integer {bound}")
