"""Patch embedding of video frames: CLIP's own 2D one, or CLIP4Clip's 3D one (Luo et al. 2021, sec. 3.2).

The 3D embedding is a Conv3d with kernel (3, p, p), stride (1, p, p), padding (1, 0, 0) -- one patch grid per
frame, each looking at its neighbour frames too -- initialised from CLIP's Conv2d as [0, W2D, 0] along time
("central frame" init). At initialisation the side taps are zero, so the 3D model computes exactly what the
2D model computes, frame by frame -- in particular on a clip of identical frames; training then learns to use
the neighbours.
"""

from __future__ import annotations

import torch
from torch import nn

TEMPORAL_KERNEL = 3  # frames seen by one 3D patch: the frame itself and one on each side


def central_frame_kernel(weight_2d: torch.Tensor, frames: int = TEMPORAL_KERNEL) -> torch.Tensor:
    """(O, C, p, p) -> (O, C, frames, p, p): the 2D kernel at the middle time tap, zeros elsewhere."""
    if frames % 2 != 1:
        raise ValueError(f"temporal kernel must be odd to have a central frame, got {frames}")
    kernel = weight_2d.new_zeros(weight_2d.shape[0], weight_2d.shape[1], frames, *weight_2d.shape[2:])
    kernel[:, :, frames // 2] = weight_2d
    return kernel


class TemporalPatchEmbed(nn.Module):
    """3D patch embedding: (B, T, 3, H, W) -> (B*T, width, H/p, W/p), the layout CLIP's conv1 produces."""

    def __init__(self, width: int, patch_size: int, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            width,
            kernel_size=(TEMPORAL_KERNEL, patch_size, patch_size),
            stride=(1, patch_size, patch_size),
            padding=(TEMPORAL_KERNEL // 2, 0, 0),
            bias=False,  # as CLIP's conv1 (and CLIP4Clip's conv2)
        )

    @classmethod
    def from_conv2d(cls, conv2d: nn.Conv2d) -> TemporalPatchEmbed:
        """Central-frame init from CLIP's Conv2d patch embedding (which has no bias)."""
        if conv2d.bias is not None or conv2d.kernel_size != conv2d.stride:
            raise ValueError("expected CLIP's patch Conv2d: no bias, stride equal to kernel size")
        embed = cls(conv2d.out_channels, conv2d.kernel_size[0], in_channels=conv2d.in_channels)
        with torch.no_grad():
            embed.conv.weight.copy_(central_frame_kernel(conv2d.weight))
        return embed.to(conv2d.weight.device, conv2d.weight.dtype)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch, frames = video.shape[:2]
        patches = self.conv(video.transpose(1, 2))  # (B, width, T, gh, gw): time is Conv3d's depth
        patches = patches.transpose(1, 2)  # (B, T, width, gh, gw)
        return patches.reshape(batch * frames, *patches.shape[2:])


def patch_embed_2d(conv2d: nn.Conv2d, video: torch.Tensor) -> torch.Tensor:
    """CLIP's own embedding, frame by frame: (B, T, 3, H, W) -> (B*T, width, H/p, W/p)."""
    return conv2d(video.flatten(0, 1))
