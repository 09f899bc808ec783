"""CLIP weights from a local file, in the forms offline clusters keep them (CLIP4Clip reads `ViT-B-32.pt` too):

- OpenAI's own release (`ViT-B-32.pt`, ...): a TorchScript archive whose state dict is CLIP's, in fp16, plus
  three integer entries (`input_resolution`, `context_length`, `vocab_size`) that are not weights;
- a plain dict of those tensors (torch.save of the archive's state dict, or of open_clip's), the same three
  integers possibly included, optionally under "state_dict" and/or with a DDP "module." prefix;
- a safetensors file of the same keys.

open_clip's loader drops the three integers only for TorchScript archives, and refuses TorchScript archives
under torch.load(weights_only=True); this module reads all the forms and loads them strictly. Plain files
are read with torch.load(weights_only=True) (no pickle runs); a TorchScript archive is opened with
torch.jit.load, which reads its tensors and compiled TorchScript (never Python pickles), and only its state
dict is used. Half-precision weights are widened to the model's float32, which is exact.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class ClipWeightsError(ValueError):
    """A local CLIP weights file that cannot be read, or whose tensors do not fit the model."""


def looks_like_weights_file(pretrained: str) -> bool:
    """A local path rather than an open_clip tag ("openai", "laion2b_s34b_b79k")."""
    return "/" in pretrained or pretrained.endswith(WEIGHT_FILE_SUFFIXES) or Path(pretrained).is_file()


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """CLIP's tensors from any of the forms above, keyed as OpenAI's (= open_clip's CLIP) state dict."""
    path = Path(path)
    if not path.is_file():
        raise ClipWeightsError(f"CLIP weights file {path} does not exist (or is not a file)")
    raw = _read_file(path)
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw:
        raise ClipWeightsError(f"{path} holds a {type(raw).__name__}, not CLIP's state dict (name -> tensor)")
    state = {_strip_module(key): value for key, value in raw.items() if key not in OPENAI_METADATA_KEYS}
    not_tensors = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise ClipWeightsError(
            f"{path}: entries {not_tensors[:5]} are not tensors; is this a CLIP checkpoint?"
        )
    return state


def load_clip_weights(clip: nn.Module, path: str | Path) -> None:
    """Loads the file into `clip` (an open_clip CLIP) strictly; ClipWeightsError names what does not fit."""
    state = read_clip_state_dict(path)
    expected = clip.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        raise ClipWeightsError(_mismatch_message(path, missing, unexpected, shapes, state, expected))
    clip.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def _read_file(path: Path):
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if _is_torchscript_archive(path):
        try:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except RuntimeError as error:
            raise ClipWeightsError(
                f"{path} looks like a TorchScript archive but does not load: {error}"
            ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (truncated zip), EOFError...: all unreadable
        raise ClipWeightsError(
            f"{path} is neither a TorchScript archive nor a tensor-only torch.save / safetensors file: {error}"
        ) from error


def _is_torchscript_archive(path: Path) -> bool:
    """torch.jit.save archives hold a `<name>/code/` folder of TorchScript; torch.save zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _strip_module(key: str) -> str:
    return key.removeprefix("module.")


def _mismatch_message(path, missing, unexpected, shapes, state, expected) -> str:
    parts = [f"{path} does not fit this CLIP model (the weights file was read; it is a different model)"]
    if shapes:
        key = shapes[0]
        parts.append(
            f"{len(shapes)} tensors have other shapes, e.g. {key}: {tuple(state[key].shape)} in the file vs "
            f"{tuple(expected[key].shape)} (another model size? pass the matching --backbone)"
        )
    if missing:
        parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)})")
    if unexpected:
        parts.append(
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    return "; ".join(parts)
