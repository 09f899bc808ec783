"""Frame decoding: shapes, CLIP normalisation maths, crop geometry, one crop per clip, draft-mode decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.training.frames import (
    CLIP_MEAN,
    CLIP_STD,
    FrameConfig,
    centre_crop_box,
    decode_clip,
    decode_frame,
    normalise,
    random_resized_crop_box,
)


def jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def halves(width: int, height: int, left=(255, 0, 0), right=(0, 0, 255)) -> bytes:
    """Left half one colour, right half another."""
    image = Image.new("RGB", (width, height), left)
    image.paste(Image.new("RGB", (width - width // 2, height), right), (width // 2, 0))
    return jpeg(image)


def gradient(width: int, height: int) -> bytes:
    """A smooth diagonal gradient: a fair image for comparing two resampling paths."""
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    pixels = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
    return jpeg(Image.fromarray(pixels))


def test_output_shape_and_dtype():
    frames = [halves(64, 48)] * 3
    clip = decode_clip(frames, FrameConfig(image_size=16), np.random.default_rng(0))
    assert clip.shape == (3, 3, 16, 16) and clip.dtype == torch.float32


def test_solid_colour_normalises_to_clip_formula():
    data = jpeg(Image.new("RGB", (64, 48), (200, 100, 50)))
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # PIL's own full-size decode
    assert (decoded == decoded[0, 0]).all() and np.abs(decoded[0, 0].astype(int) - [200, 100, 50]).max() <= 3
    for random_crop in (False, True):
        clip = decode_clip(
            [data], FrameConfig(image_size=8, random_crop=random_crop), np.random.default_rng(0)
        )
        expected = (decoded[0, 0] / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)  # per channel
        torch.testing.assert_close(
            clip[0], torch.tensor(expected, dtype=torch.float32)[:, None, None].expand(3, 8, 8)
        )


def test_normalise_moves_channels_first_and_applies_mean_std():
    pixels = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    out = normalise(pixels)
    assert out.shape == (2, 3, 4, 4)
    expected = (pixels.double() / 255 - torch.tensor(CLIP_MEAN, dtype=torch.float64)) / torch.tensor(
        CLIP_STD, dtype=torch.float64
    )
    torch.testing.assert_close(out, expected.permute(0, 3, 1, 2).float())


def test_centre_crop_keeps_the_middle_square():
    # 200 x 100, red | blue: the middle 100 x 100 square is x in [50, 150): red on its left, blue on its right.
    frame = decode_frame(halves(200, 100), centre_crop_box(200, 100), 32)
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    assert (frame[:, :14, 0] > 200).all() and (frame[:, :14, 2] < 50).all()
    assert (frame[:, 18:, 2] > 200).all() and (frame[:, 18:, 0] < 50).all()
    assert centre_crop_box(100, 200) == centre_crop_box(200, 100).__class__(
        left=0.0, top=0.25, right=1.0, bottom=0.75
    )


def test_one_random_crop_for_every_frame_of_a_clip():
    frames = [halves(160, 120)] * 4  # identical frames: identical outputs iff one crop is used
    config = FrameConfig(image_size=24, random_crop=True, crop_scale=(0.1, 0.5))
    clip = decode_clip(frames, config, np.random.default_rng(3))
    for t in range(1, 4):
        torch.testing.assert_close(clip[t], clip[0], rtol=0, atol=0)
    crops = {decode_clip(frames, config, np.random.default_rng(seed)).sum().item() for seed in range(6)}
    assert len(crops) > 1  # the crop is random across clips


def test_random_resized_crop_box_follows_torchvision_ranges():
    rng = np.random.default_rng(0)
    width, height = 320, 180
    for _ in range(200):
        box = random_resized_crop_box(width, height, scale=(0.3, 0.8), ratio=(3 / 4, 4 / 3), rng=rng)
        assert 0 <= box.left < box.right <= 1 and 0 <= box.top < box.bottom <= 1
        crop_w, crop_h = (box.right - box.left) * width, (box.bottom - box.top) * height
        assert 0.3 * 0.97 <= crop_w * crop_h / (width * height) <= 0.8 * 1.03  # pixel rounding
        assert 3 / 4 * 0.97 <= crop_w / crop_h <= 4 / 3 * 1.03


def test_random_resized_crop_falls_back_to_centre_crop_with_clamped_ratio():
    # Whole-frame area at ratio exactly 1 cannot fit a 2:1 frame: torchvision's fallback, a centred 1:1 crop.
    box = random_resized_crop_box(200, 100, scale=(1.0, 1.0), ratio=(1.0, 1.0), rng=np.random.default_rng(0))
    assert box == centre_crop_box(200, 100)


def test_draft_decoding_matches_a_full_size_decode_then_resize():
    data = gradient(640, 480)
    box = centre_crop_box(640, 480)
    fast = decode_frame(data, box, 32).astype(float)  # libjpeg scales by 1/8 while decoding (480 / 8 >= 32)
    reference = (
        Image.open(io.BytesIO(data))
        .convert("RGB")
        .resize((32, 32), Image.Resampling.BICUBIC, box=(80, 0, 560, 480))
    )
    assert (
        np.abs(fast - np.asarray(reference, dtype=float)).mean() < 3.0
    )  # same geometry, tiny resampling error


def test_grayscale_jpeg_comes_out_rgb():
    data = jpeg(Image.new("L", (40, 30), 128))
    frame = decode_frame(data, centre_crop_box(40, 30), 8)
    assert frame.shape == (8, 8, 3) and np.abs(frame.astype(int) - 128).max() <= 2


@pytest.mark.parametrize(
    "fields",
    [{"image_size": 0}, {"crop_scale": (0.0, 1.0)}, {"crop_scale": (0.8, 0.5)}, {"crop_ratio": (2.0, 1.0)}],
)
def test_bad_frame_config_is_refused(fields):
    with pytest.raises(ValueError, match="FrameConfig"):
        FrameConfig(**fields)


def test_empty_clip_is_refused():
    with pytest.raises(ValueError, match="at least one frame"):
        decode_clip([], FrameConfig(), np.random.default_rng(0))


def test_centre_crop_at_the_shard_size_is_a_plain_crop_of_the_decoded_frame():
    data = gradient(398, 224)  # a 16:9 shard frame, short side 224
    frame = decode_frame(data, centre_crop_box(398, 224), 224)
    reference = Image.open(io.BytesIO(data)).convert("RGB").crop((87, 0, 311, 224))  # (398 - 224) / 2 = 87
    np.testing.assert_array_equal(frame, np.asarray(reference))
