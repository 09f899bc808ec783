"""CLIP weights files as offline clusters keep them (OpenAI's TorchScript `ViT-B-32.pt`, a plain dict with
OpenAI's three integer entries, safetensors): every CLIP tensor, and every head tensor initialised from CLIP,
equals its source bit for bit. The files are made here in OpenAI's format from a random-init debug CLIP:
a TorchScript archive whose state dict has OpenAI's keys, fp16 weights and the three integer entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model.backbone import create_clip
from model.clip4clip import CLIP4Clip
from model.clip_weights import ClipWeightsError, read_clip_state_dict
from model.config import CLIP4ClipConfig
from pipelines.checkpoint.init_model import InitConfig, load_init_model

OPENAI_INTEGERS = {"input_resolution": 64, "context_length": 77, "vocab_size": 49408}


class _WeightsOnly(nn.Module):
    """A scriptable module whose state dict is exactly `state` (nested submodules follow the dotted keys)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        for key, tensor in state.items():
            *path, leaf = key.split(".")
            module: nn.Module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_buffer(leaf, tensor.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    """CLIP's weights as OpenAI ships them: fp16 (exactly representable, so fp32 copies compare bit for bit)."""
    torch.manual_seed(0)
    clip = create_clip("debug", "", quick_gelu=True)
    return {
        k: v.detach().half() if v.is_floating_point() else v.detach() for k, v in clip.state_dict().items()
    }


def torchscript_archive(state: dict[str, torch.Tensor], path: Path) -> Path:
    entries = {**state, **{k: torch.tensor(v) for k, v in OPENAI_INTEGERS.items()}}
    torch.jit.save(torch.jit.script(_WeightsOnly(entries)), str(path))
    return path


def plain_dict(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save({**state, **OPENAI_INTEGERS}, path)  # python ints, as the plain-dict file carries
    return path


def safetensors_file(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


WRITERS = {"ViT-B-32.pt": torchscript_archive, "plain.pt": plain_dict, "clip.safetensors": safetensors_file}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_form_reads_as_clips_state_dict(source, tmp_path, name):
    state = read_clip_state_dict(WRITERS[name](source, tmp_path / name))
    assert set(state) == set(source)
    for key, tensor in source.items():
        assert torch.equal(state[key], tensor), key


@pytest.mark.parametrize("name", sorted(WRITERS))
@pytest.mark.parametrize("head, patch", [("seqTransf", "3d"), ("tightTransf", "2d")])
def test_model_on_the_file_equals_its_source_bit_for_bit(source, tmp_path, name, head, patch):
    path = WRITERS[name](source, tmp_path / name)
    config = CLIP4ClipConfig(backbone="debug", pretrained=str(path), head=head, patch=patch, max_frames=4)
    model = CLIP4Clip.from_config(config)
    for key, tensor in model.clip.state_dict().items():
        assert torch.equal(tensor, source[key].float()), key
    expected_head = {}  # head tensors the paper initialises from CLIP, and their CLIP source
    if head == "seqTransf":
        expected_head["frame_position_embeddings.weight"] = source["positional_embedding"]
        layers = "transformer.resblocks"
    else:
        expected_head["cross.embeddings.position_embeddings.weight"] = source["positional_embedding"]
        layers = "cross.transformer.resblocks"
    head_state = model.head.state_dict()
    for key in [k for k in head_state if k.startswith(layers + ".")]:
        clip_key = "transformer.resblocks." + key.removeprefix(layers + ".")
        if clip_key in source:  # the head's first layers come from CLIP's (debug: 2 of 4), the rest are new
            expected_head[key] = source[clip_key]
    assert len(expected_head) > 10
    for key, tensor in expected_head.items():
        assert torch.equal(head_state[key], tensor.float()), key
    if patch == "3d":  # central-frame init: [0, W2D, 0] over time
        kernel = model.patch3d.conv.weight
        assert torch.equal(kernel[:, :, 1], source["visual.conv1.weight"].float())
        assert not kernel[:, :, 0].any() and not kernel[:, :, 2].any()


def test_init_flag_takes_openais_file(source, tmp_path):
    path = torchscript_archive(source, tmp_path / "ViT-B-32.pt")
    init = load_init_model(InitConfig(init=str(path), backbone="debug", head="seqTransf", max_frames=4))
    assert init.identity == {"init": str(path), "checkpoint": None}
    assert init.model.config.pretrained == str(path)
    assert torch.equal(init.model.clip.text_projection, source["text_projection"].float())


def test_errors_say_what_is_wrong(source, tmp_path):
    with pytest.raises(ClipWeightsError, match="does not exist"):
        create_clip("debug", str(tmp_path / "ViT-B-32.pt"), quick_gelu=True)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ClipWeightsError, match="neither a TorchScript archive nor"):
        create_clip("debug", str(tmp_path / "junk.pt"), quick_gelu=True)
    partial = {k: v for k, v in source.items() if k != "text_projection"}
    with pytest.raises(ClipWeightsError, match=r"missing \['text_projection'\]"):
        create_clip("debug", str(plain_dict(partial, tmp_path / "partial.pt")), quick_gelu=True)
    wider = {**source, "positional_embedding": torch.zeros(77, 128)}
    with pytest.raises(ClipWeightsError, match=r"other shapes.*positional_embedding.*--backbone"):
        create_clip("debug", str(plain_dict(wider, tmp_path / "wider.pt")), quick_gelu=True)
