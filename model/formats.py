"""Checkpoint formats of the model: our safetensors + JSON config, the CLIP4Clip repository's key layout, and
open_clip's state dict. No pickles are read: torch.load only with weights_only=True.

CLIP4Clip layout (ArrowLuo/CLIP4Clip, modules/modeling.py): `clip.*` is OpenAI CLIP's state dict, which is
open_clip's CLIP state dict key for key; the 3D patch embedding is `clip.visual.conv2.weight` (next to the
2D `clip.visual.conv1.weight`); seqTransf has `frame_position_embeddings.weight` and `transformerClip.*`;
seqLSTM has `lstm_visual.*` (and an unused `frame_position_embeddings.weight`, which we write as CLIP4Clip's
own init would make it); tightTransf has `cross.*` and `similarity_dense.*`. Load loose heads there with
`--loose_type` (as its recipes do). For tightTransf, only a model built with tight_variant="clip4clip" has
exactly the keys of CLIP4Clip's CrossModel; the "paper" variant adds
`cross.embeddings.token_type_embeddings.weight` (which that code ignores) and lacks `cross.pooler.ln_pool.*`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model.backbone import create_clip, open_clip_model_name
from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.openclip_import import open_clip

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
MODEL_CONFIG_METADATA_KEY = "clip4clip_config"
_CONFIG_METADATA_KEY = MODEL_CONFIG_METADATA_KEY

# (our key prefix, CLIP4Clip key prefix); specific prefixes first, so "clip." matches last both ways.
CLIP4CLIP_PREFIXES = (
    ("patch3d.conv.", "clip.visual.conv2."),
    ("head.frame_position_embeddings.", "frame_position_embeddings."),
    ("head.transformer.", "transformerClip."),
    ("head.lstm.", "lstm_visual."),
    ("head.cross.", "cross."),
    ("head.similarity_dense.", "similarity_dense."),
    ("clip.", "clip."),
)
# Non-weight entries of OpenAI's JIT state dict that CLIP4Clip copies under clip.*.
_CLIP_METADATA_KEYS = ("clip.input_resolution", "clip.context_length", "clip.vocab_size")


# --- our format: safetensors weights + JSON model config ---------------------------------------------------


def save_model(model: CLIP4Clip, directory: str | Path) -> Path:
    """Writes <directory>/model.safetensors (config also in its metadata) and <directory>/model_config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_json = json.dumps(model.config.to_dict(), sort_keys=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={_CONFIG_METADATA_KEY: config_json})
    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
    return directory


def load_model(path: str | Path) -> CLIP4Clip:
    """Loads save_model's output: a directory, or a model.safetensors file (config read from its metadata)."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} at {path}")
    config = (
        _read_config(path) if path.is_dir() and (path / CONFIG_FILE).is_file() else _metadata_config(weights)
    )
    model = build_without_download(config)
    model.load_state_dict(load_file(str(weights)))
    return model


def build_without_download(config: CLIP4ClipConfig) -> CLIP4Clip:
    """The model's architecture with random weights (the caller loads weights); keeps `config` as given."""
    model = CLIP4Clip.from_config(dataclasses.replace(config, pretrained=""))
    model.config = config
    return model


def _read_config(directory: Path) -> CLIP4ClipConfig:
    return CLIP4ClipConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))


def _metadata_config(weights: Path) -> CLIP4ClipConfig:
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if _CONFIG_METADATA_KEY not in metadata:
        raise ValueError(f"{weights} carries no model config; pass the directory with {CONFIG_FILE}")
    return CLIP4ClipConfig.from_dict(json.loads(metadata[_CONFIG_METADATA_KEY]))


# --- CLIP4Clip repository layout -----------------------------------------------------------------------------


def to_clip4clip_key(key: str) -> str | None:
    for ours, theirs in CLIP4CLIP_PREFIXES:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return None


def from_clip4clip_key(key: str) -> str | None:
    for ours, theirs in CLIP4CLIP_PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return None


def to_clip4clip_state_dict(model: CLIP4Clip) -> dict[str, torch.Tensor]:
    """The model's weights under CLIP4Clip's keys (what its `--init_model` loads)."""
    state = {}
    for key, tensor in model.state_dict().items():
        renamed = to_clip4clip_key(key)
        assert renamed is not None, f"no CLIP4Clip name for {key}"
        state[renamed] = tensor.detach().clone().cpu()
    if model.config.head == "seqLSTM":  # CLIP4Clip builds (and never uses) it for seqLSTM; its init value
        state["frame_position_embeddings.weight"] = model.clip.positional_embedding.detach().clone().cpu()
    return state


def from_clip4clip_state_dict(config: CLIP4ClipConfig, state_dict: dict[str, torch.Tensor]) -> CLIP4Clip:
    """A model from CLIP4Clip-layout weights, completed the way CLIP4Clip's from_pretrained completes them.

    `clip.*` must be complete. A missing 3D embedding is made from conv1 (central frame) and missing head
    weights from CLIP (paper init); weights of heads other than config.head are ignored (logged).
    """
    renamed = {from_clip4clip_key(k): v for k, v in state_dict.items() if k not in _CLIP_METADATA_KEYS}
    unknown = sorted(k for k in state_dict if from_clip4clip_key(k) is None)
    ours = {k: v for k, v in renamed.items() if k is not None}
    model = CLIP4Clip(config, _clip_from_state_dict(config, _strip_prefix(ours, "clip.")))
    extras = {k: v for k, v in ours.items() if not k.startswith("clip.")}
    missing, unused = model.load_state_dict(extras, strict=False)
    missing = [k for k in missing if not k.startswith("clip.")]
    unused = [k for k in unused if not (config.head == "seqLSTM" and k.startswith("head.frame_position"))]
    _log_incomplete_import(missing, unused + unknown)
    return model


def _log_incomplete_import(missing: list[str], ignored: list[str]) -> None:
    if missing:
        logger.warning("CLIP4Clip checkpoint lacks %s; initialised from CLIP as CLIP4Clip would", missing)
    if ignored:
        logger.warning("ignored CLIP4Clip checkpoint entries not used by this head: %s", ignored)


def save_clip4clip_checkpoint(model: CLIP4Clip, path: str | Path) -> Path:
    """CLIP4Clip's checkpoint file (`pytorch_model.bin`: a plain dict of tensors, torch.save)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_clip4clip_state_dict(model), path)
    return path


def load_clip4clip_checkpoint(config: CLIP4ClipConfig, path: str | Path) -> CLIP4Clip:
    state_dict = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} is not a CLIP4Clip state dict (a dict of tensors)")
    return from_clip4clip_state_dict(config, state_dict)


# --- open_clip state dict ------------------------------------------------------------------------------------


def to_open_clip_state_dict(model: CLIP4Clip) -> dict[str, torch.Tensor]:
    """The CLIP backbone's state dict, loadable by open_clip.create_model(<backbone>, pretrained=<file>).

    A 3D patch embedding has no place in an image model; we export the 2D kernel it applies to a still image
    (a clip of identical frames): its sum over the time taps, exact at every frame with both neighbours.
    """
    state = {key: tensor.detach().clone().cpu() for key, tensor in model.clip.state_dict().items()}
    if model.patch3d is not None:
        logger.warning("open_clip export of a 3D model: conv1 = 3D patch kernel summed over time")
        state["visual.conv1.weight"] = model.patch3d.conv.weight.detach().sum(dim=2).cpu()
    return state


def from_open_clip_state_dict(config: CLIP4ClipConfig, state_dict: dict[str, torch.Tensor]) -> CLIP4Clip:
    """A model on these CLIP weights, heads and 3D embedding initialised from them (as for pretrained=<file>)."""
    return CLIP4Clip(config, _clip_from_state_dict(config, state_dict))


OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"  # the names open_clip's `local-dir:` loader looks for
OPEN_CLIP_WEIGHTS_FILE = "open_clip_model.safetensors"


def save_open_clip_folder(model: CLIP4Clip, folder: str | Path) -> Path:
    """A folder that `open_clip.create_model_and_transforms('local-dir:<folder>')` loads with no project code:
    open_clip_config.json (the backbone's open_clip model config, with its activation, and OpenAI's
    preprocessing) + open_clip_model.safetensors (the CLIP state dict, also usable as `pretrained=<file>`)."""
    folder = Path(folder)
    if folder.suffix:
        raise ValueError(
            f"an open_clip export is a folder (open_clip's local-dir: layout), not a file: got {str(folder)!r}; "
            f"pass a folder name such as {str(folder.with_suffix(''))!r}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    state = to_open_clip_state_dict(model)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / OPEN_CLIP_WEIGHTS_FILE))
    model_cfg = dict(open_clip.get_model_config(open_clip_model_name(model.config.backbone)))
    model_cfg["quick_gelu"] = model.config.quick_gelu
    preprocess_cfg = {
        "size": model_cfg["vision_cfg"]["image_size"],
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
    }
    (folder / OPEN_CLIP_CONFIG_FILE).write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2)
    )
    return folder


def _clip_from_state_dict(config: CLIP4ClipConfig, state_dict: dict[str, torch.Tensor]):
    clip = create_clip(config.backbone, "", config.quick_gelu)
    missing, unexpected = clip.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"CLIP weights do not fit backbone {config.backbone!r}: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return clip


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
