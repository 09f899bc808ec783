"""Decode a clip's JPEG frames into a normalised float tensor (T, 3, S, S), one crop for the whole clip.

Only the frames handed in are decoded (the stream passes the sampled ones). Each JPEG is decoded with
PIL's draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding when the crop still covers at least
S x S pixels at that scale, which is much cheaper than decoding at full size and resizing.

Crops follow CLIP: evaluation = resize the short side to S (bicubic) and take the centre S x S; training =
torchvision's RandomResizedCrop (area fraction `crop_scale`, aspect ratio `crop_ratio`, then resized to
S x S). Every frame of a clip gets the same crop, so motion across frames stays consistent. Normalisation
uses CLIP's mean and std (open_clip's OPENAI_DATASET_MEAN / _STD).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipelines.video import jpeg_size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # RGB, of pixel values in [0, 1]
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RANDOM_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries this many boxes before its fallback


@dataclass(frozen=True, kw_only=True)
class FrameConfig:
    image_size: int = 224  # S: output frames are S x S
    random_crop: bool = False  # True (training): RandomResizedCrop; False: short side to S + centre crop
    crop_scale: tuple[float, float] = (0.9, 1.0)  # area fraction of the frame (open_clip's training default)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio (width / height) range of the crop

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"FrameConfig.image_size must be >= 1, got {self.image_size}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"FrameConfig.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}"
            )
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"FrameConfig.crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")


@dataclass(frozen=True, kw_only=True)
class CropBox:
    """A crop as fractions of the frame's width and height, so it applies at any decode scale."""

    left: float
    top: float
    right: float
    bottom: float


def centre_crop_box(width: int, height: int) -> CropBox:
    """The centred square of side min(width, height): what 'short side to S, centre crop S' keeps."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return CropBox(
        left=left / width, top=top / height, right=(left + side) / width, bottom=(top + side) / height
    )


def random_resized_crop_box(
    width: int,
    height: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> CropBox:
    """torchvision's RandomResizedCrop.get_params with a numpy rng (same distribution, same fallback)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(_RANDOM_CROP_ATTEMPTS):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return _pixel_box(left, top, crop_w, crop_h, width, height)
    return _fallback_crop(width, height, ratio)


def _fallback_crop(width: int, height: int, ratio: tuple[float, float]) -> CropBox:
    """torchvision's fallback: the largest centred crop whose aspect ratio is clamped into `ratio`."""
    in_ratio = width / height
    crop_w, crop_h = width, height
    if in_ratio < ratio[0]:
        crop_h = round(width / ratio[0])
    elif in_ratio > ratio[1]:
        crop_w = round(height * ratio[1])
    return _pixel_box((width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h, width, height)


def _pixel_box(left: int, top: int, crop_w: int, crop_h: int, width: int, height: int) -> CropBox:
    return CropBox(
        left=left / width, top=top / height, right=(left + crop_w) / width, bottom=(top + crop_h) / height
    )


def choose_crop(width: int, height: int, config: FrameConfig, rng: np.random.Generator) -> CropBox:
    if config.random_crop:
        return random_resized_crop_box(
            width, height, scale=config.crop_scale, ratio=config.crop_ratio, rng=rng
        )
    return centre_crop_box(width, height)


def decode_frame(jpeg: bytes, box: CropBox, size: int) -> np.ndarray:
    """One JPEG -> (S, S, 3) uint8 RGB of the crop `box`, decoded at the smallest libjpeg scale that still
    gives the crop at least S pixels each way."""
    image: Image.Image = Image.open(io.BytesIO(jpeg))
    width, height = image.size
    crop_w, crop_h = (box.right - box.left) * width, (box.bottom - box.top) * height
    wanted = (math.ceil(width * size / max(crop_w, 1e-6)), math.ceil(height * size / max(crop_h, 1e-6)))
    drafted = image.draft("RGB", wanted)  # None for non-JPEG input: decoded at full size
    # Content extent after the draft: the original size divided by the libjpeg scale (not the rounded-up size).
    extent_w, extent_h = (drafted[1][2], drafted[1][3]) if drafted else (width, height)
    if image.mode != "RGB":
        image = image.convert("RGB")
    pixel_box = (box.left * extent_w, box.top * extent_h, box.right * extent_w, box.bottom * extent_h)
    if _is_unscaled(pixel_box, size):  # e.g. centre crop of 224-short-side shard frames to 224: no resampling
        left, top = round(pixel_box[0]), round(pixel_box[1])  # torchvision's CenterCrop rounds the offset too
        return np.asarray(image.crop((left, top, left + size, top + size)))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=pixel_box))


def _is_unscaled(pixel_box: tuple[float, float, float, float], size: int) -> bool:
    width, height = pixel_box[2] - pixel_box[0], pixel_box[3] - pixel_box[1]
    return abs(width - size) < 1e-6 and abs(height - size) < 1e-6


def decode_clip_uint8(jpegs: Sequence[bytes], config: FrameConfig, rng: np.random.Generator) -> np.ndarray:
    """The clip's frames -> (T, S, S, 3) uint8, one crop (chosen from the first frame's size) for all."""
    if not jpegs:
        raise ValueError("a clip needs at least one frame")
    box = clip_crop_box(jpegs[0], config, rng)
    return np.stack([decode_frame(jpeg, box, config.image_size) for jpeg in jpegs])


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> float32 (..., 3, S, S): (pixel / 255 - CLIP_MEAN) / CLIP_STD per channel.

    Runs where `frames` is: in a loader worker, or on the GPU after a uint8 copy (4x fewer bytes to move)."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=frames.device) * 255
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=frames.device) * 255
    # (x/255 - m)/s == (x - 255m)/(255s): one subtraction and one division over the whole clip or batch
    normalised = (frames.to(torch.float32) - mean) / std
    return normalised.movedim(-1, -3).contiguous()


def decode_clip(jpegs: Sequence[bytes], config: FrameConfig, rng: np.random.Generator) -> torch.Tensor:
    """The clip's JPEG frames -> float32 (T, 3, S, S), CLIP-normalised, one crop for all frames."""
    return normalise(torch.from_numpy(decode_clip_uint8(jpegs, config, rng)))


def normalise_video(pixels: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """A batch's uint8 pixels (B, T, S, S, 3) -> float32 (B, T, 3, S, S), CLIP-normalised, zeros at padded
    frames (video_mask (B, T) False): what the stream's float32 batches hold, computed wherever `pixels` is."""
    video = normalise(pixels)
    return video.masked_fill_(~video_mask[:, :, None, None, None], 0.0)


def clip_crop_box(first_jpeg: bytes, config: FrameConfig, rng: np.random.Generator) -> CropBox:
    """The crop of a whole clip, chosen from its first frame's header (nothing decoded), as decode_clip_uint8
    chooses it: the same rng gives the same box on either decode path."""
    width, height = jpeg_size(first_jpeg)  # header only: nothing decoded yet
    return choose_crop(width, height, config, rng)


def decode_clips_on_device(
    clips: Sequence[Sequence[bytes]],
    boxes: Sequence[CropBox],
    *,
    size: int,
    frames: int,
    device: torch.device,
) -> torch.Tensor:
    """JPEG clips -> uint8 (B, T, S, S, 3) on `device` (zeros at frames a short clip lacks), decoded by nvJPEG.

    One batched torchvision.io.decode_jpeg call for every frame of the batch, then per clip: crop (fractional
    box, as the CPU path) and an antialiased bicubic resize to S x S on the GPU. Close to, not bit-identical
    with, PIL's decode + resize. torchvision is imported here, only when this runs: the PyPI torchvision of
    CPU-only machines is a CUDA build that does not import there (see model/openclip_import.py).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    pixels = torch.zeros(len(clips), frames, size, size, 3, dtype=torch.uint8, device=device)
    flat = [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for clip in clips for jpeg in clip]
    decoded = decode_jpeg(flat, mode=ImageReadMode.RGB, device=device)  # list of (3, H, W) uint8
    start = 0
    for row, (clip, box) in enumerate(zip(clips, boxes, strict=True)):
        images = torch.stack(decoded[start : start + len(clip)])  # (T, 3, H, W): a clip's frames share a size
        start += len(clip)
        pixels[row, : len(clip)] = _crop_resize(images, box, size).permute(0, 2, 3, 1)
    return pixels


def _crop_resize(images: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, S, S) uint8: the box (rounded out to whole pixels), bicubic to S x S."""
    height, width = images.shape[-2:]
    # 1e-6 px of slack: a box that is whole pixels up to float error stays that box (then no resampling)
    top, bottom = math.floor(box.top * height + 1e-6), math.ceil(box.bottom * height - 1e-6)
    left, right = math.floor(box.left * width + 1e-6), math.ceil(box.right * width - 1e-6)
    crop = images[:, :, top:bottom, left:right]
    if crop.shape[-2:] == (size, size):
        return crop
    resized = torch.nn.functional.interpolate(
        crop.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)
