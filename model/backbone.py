"""The open_clip backbones CLIP4Clip builds on: named sizes, creation (with pretrained weights) and tokenizers."""

from __future__ import annotations

from pathlib import Path

from model.clip_weights import load_clip_weights, looks_like_weights_file
from model.openclip_import import open_clip

# Our backbone names -> open_clip model names. "debug" is registered from open_clip_configs/ (a tiny ViT:
# 64 px frames, patch 16, width 64, 2+2 layers, embed 64; the real 49408-token vocabulary so the real
# tokenizer works).
OPEN_CLIP_MODEL_NAMES = {"ViT-B-32": "ViT-B-32", "ViT-B-16": "ViT-B-16", "debug": "clip4clip-debug"}
_OPEN_CLIP_CONFIG_DIR = Path(__file__).parent / "open_clip_configs"


class PretrainedWeightsUnavailable(RuntimeError):
    """open_clip could not fetch or read the requested pretrained weights."""


def register_debug_backbone() -> None:
    """Make `clip4clip-debug` known to open_clip (create_model, get_tokenizer); idempotent."""
    if OPEN_CLIP_MODEL_NAMES["debug"] not in open_clip.list_models():
        open_clip.add_model_config(_OPEN_CLIP_CONFIG_DIR)


register_debug_backbone()


def open_clip_model_name(backbone: str) -> str:
    if backbone not in OPEN_CLIP_MODEL_NAMES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(OPEN_CLIP_MODEL_NAMES)}")
    return OPEN_CLIP_MODEL_NAMES[backbone]


def create_clip(backbone: str, pretrained: str, quick_gelu: bool) -> open_clip.CLIP:
    """An open_clip CLIP; pretrained is an open_clip tag ("openai"), a local weights file (OpenAI's
    TorchScript `ViT-B-32.pt`, a plain state dict, safetensors: model.clip_weights), or "" for random init."""
    name = open_clip_model_name(backbone)
    from_file = bool(pretrained) and looks_like_weights_file(pretrained)
    try:
        tag = None if from_file else (pretrained or None)
        clip = open_clip.create_model(name, pretrained=tag, force_quick_gelu=quick_gelu)
    except RuntimeError as error:
        if not pretrained:
            raise
        raise PretrainedWeightsUnavailable(_weights_help(name, pretrained, error)) from error
    if from_file:
        load_clip_weights(clip, pretrained)  # ClipWeightsError (a ValueError) says what does not fit
    if not isinstance(clip, open_clip.CLIP) or not isinstance(
        clip.visual, open_clip.transformer.VisionTransformer
    ):
        raise TypeError(f"open_clip model {name!r} is not a ViT CLIP; CLIP4Clip needs one")
    return clip


def _weights_help(name: str, pretrained: str, error: Exception) -> str:
    return (
        f"could not fetch or read pretrained weights {pretrained!r} for open_clip model {name!r} ({error}). "
        f"Without network access, copy the checkpoint to this machine (e.g. open_clip_pytorch_model.bin of "
        f"the Hugging Face repo open_clip uses for this tag) and pass its local path as pretrained='/path/to/"
        f"file', or pass pretrained='' for random initialisation."
    )


def create_tokenizer(backbone: str, max_words: int):
    """open_clip's tokenizer for the backbone; captions are truncated to max_words tokens (EOT kept last)."""
    return open_clip.get_tokenizer(open_clip_model_name(backbone), context_length=max_words)
