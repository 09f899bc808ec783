"""2D/3D patch embedding: the 3D convolution's definition, central-frame init, and 3D == 2D at init."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.patch import TemporalPatchEmbed, central_frame_kernel, patch_embed_2d

PATCH, WIDTH = 4, 5


def test_central_frame_kernel_is_zero_w2d_zero_along_time():
    weight_2d = torch.randn(WIDTH, 3, PATCH, PATCH)
    kernel = central_frame_kernel(weight_2d)
    assert kernel.shape == (WIDTH, 3, 3, PATCH, PATCH)
    assert torch.equal(kernel[:, :, 1], weight_2d)
    assert torch.all(kernel[:, :, 0] == 0) and torch.all(kernel[:, :, 2] == 0)
    with pytest.raises(ValueError, match="odd"):
        central_frame_kernel(weight_2d, frames=2)


def test_temporal_patch_embed_layout_matches_clip4clip():
    embed = TemporalPatchEmbed(WIDTH, PATCH)
    conv = embed.conv
    assert conv.kernel_size == (3, PATCH, PATCH)
    assert conv.stride == (1, PATCH, PATCH)
    assert conv.padding == (1, 0, 0)
    assert conv.bias is None


def test_temporal_patch_embed_is_the_3d_convolution_by_definition():
    """out[t] = sum_dt W[:, :, dt] * frame[t + dt - 1], frames outside the clip being zero."""
    torch.manual_seed(0)
    embed = TemporalPatchEmbed(WIDTH, PATCH)
    video = torch.randn(2, 4, 3, 8, 8)
    weight = embed.conv.weight
    padded = F.pad(video, (0, 0, 0, 0, 0, 0, 1, 1))  # one zero frame each side in time
    expected = sum(
        F.conv2d(padded[:, dt : dt + 4].flatten(0, 1), weight[:, :, dt], stride=PATCH) for dt in range(3)
    )
    torch.testing.assert_close(embed(video), expected)


def test_central_init_equals_2d_embedding_frame_by_frame():
    conv2d = torch.nn.Conv2d(3, WIDTH, PATCH, stride=PATCH, bias=False)
    embed = TemporalPatchEmbed.from_conv2d(conv2d)
    video = torch.randn(2, 5, 3, 8, 8)
    torch.testing.assert_close(embed(video), patch_embed_2d(conv2d, video))
    with pytest.raises(ValueError, match="no bias"):
        TemporalPatchEmbed.from_conv2d(torch.nn.Conv2d(3, WIDTH, PATCH, stride=PATCH, bias=True))


@pytest.mark.parametrize("head", ["meanP", "seqLSTM", "seqTransf", "tightTransf"])
def test_3d_model_gives_2d_features_on_identical_frames(head):
    torch.manual_seed(0)
    model_2d = CLIP4Clip.from_config(CLIP4ClipConfig(backbone="debug", pretrained="", head=head))
    config_3d = CLIP4ClipConfig(backbone="debug", pretrained="", head=head, patch="3d")
    model_3d = CLIP4Clip(config_3d, copy.deepcopy(model_2d.clip))
    model_3d.head.load_state_dict(model_2d.head.state_dict())  # same random parts (LSTM, linears)
    frame = torch.randn(2, 1, 3, 64, 64)
    video = frame.expand(-1, 6, -1, -1, -1)  # each clip: one frame repeated
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    tokens = model_2d.tokenizer()(["a frame", "another one"])
    for out_2d, out_3d in zip(
        model_2d(video, mask, tokens).values(), model_3d(video, mask, tokens).values(), strict=True
    ):
        torch.testing.assert_close(out_3d, out_2d)


def test_3d_model_sees_neighbour_frames_once_side_taps_are_trained():
    torch.manual_seed(0)
    model = CLIP4Clip.from_config(CLIP4ClipConfig(backbone="debug", pretrained="", patch="3d"))
    with torch.no_grad():
        model.patch3d.conv.weight[:, :, 0].normal_(std=0.05)
    video, mask = torch.randn(1, 4, 3, 64, 64), torch.ones(1, 4, dtype=torch.bool)
    before = model.encode_frames(video, mask)
    video[0, 1] += 1.0  # frame 1 feeds frames 1 and 2 through the (t-1) tap
    after = model.encode_frames(video, mask)
    changed = (after - before).abs().amax(dim=-1)[0]
    assert changed[0] == 0 and changed[1] > 0 and changed[2] > 0 and changed[3] == 0
