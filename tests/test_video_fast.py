"""The fast decode path (B-frames skipped) against the exact path and the naive ffmpeg command, on every
benchmark kind; its fallback to an exact decode; the lag bound; the GPU flag without a GPU."""

from __future__ import annotations

import io
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.shard_throughput import KINDS, encode_corpus_video
from pipelines.video import (
    PACKET_WINDOW_S,
    DecodeConfig,
    DecodedVideo,
    decode_frames_at_1fps,
    largest_sample_lag,
    naive_ffmpeg_command,
    predicted_reference_frame_times,
)
from tests.fixtures_media import DEFAULT_COLOURS, colour_on_screen
from tests.test_video import VIDEO_KINDS, nearest_colour

EXACT = DecodeConfig(decode_mode="exact")
FAST = DecodeConfig(decode_mode="fast")
HAS_NVIDIA_GPU = os.path.exists("/dev/nvidiactl")


def mean_abs_pixel_difference(first: DecodedVideo, second: DecodedVideo) -> float:
    """Mean |RGB difference| (0..255) over all frames of two decodes of the same video."""
    differences = [
        np.abs(
            np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.float32)
            - np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float32)
        ).mean()
        for a, b in zip(first.jpegs, second.jpegs, strict=True)
    ]
    return float(np.mean(differences))


def naive_frame_count(path: Path, tmp_path: Path) -> int:
    frames = tmp_path / f"naive-{path.stem}"
    frames.mkdir()
    subprocess.run(naive_ffmpeg_command(path, frames), check=True, timeout=120)
    return len(list(frames.glob("*.jpg")))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fast_path_matches_exact_and_naive_on_each_benchmark_kind(tmp_path, kind):
    # A static pattern (smptebars + temporal noise): any frame of a second looks the same, so the pixel
    # difference measures decoding damage, not the (bounded) lag of the sampled frame.
    path = tmp_path / f"{kind}.{KINDS[kind].container}"
    encode_corpus_video(path, KINDS[kind], seconds=8, pattern="smptebars")
    exact, fast = decode_frames_at_1fps(path, EXACT), decode_frames_at_1fps(path, FAST)

    assert fast.num_frames == exact.num_frames == naive_frame_count(path, tmp_path)
    assert fast.timestamps_s == exact.timestamps_s
    assert all(abs(t - i) <= 0.25 for i, t in enumerate(fast.timestamps_s))
    assert (fast.width, fast.height) == (exact.width, exact.height)
    assert fast.max_frame_lag_s <= FAST.max_frame_lag_s
    assert mean_abs_pixel_difference(fast, exact) < 2.0  # of 255; JPEG re-encoding noise is ~0.5
    recipe = KINDS[kind]
    if recipe.container == "webm" or not recipe.bframes:
        assert fast.decode_path == "exact"  # nothing to skip: no fast attempt at all
    elif not recipe.variable_frame_rate:
        assert fast.decode_path == "fast"
        assert fast.max_frame_lag_s > 0  # B-frames were really skipped


@pytest.mark.parametrize("kind", sorted(VIDEO_KINDS))
def test_fast_path_shows_what_is_on_screen_on_the_colour_videos(make_video, kind):
    path = make_video(DEFAULT_COLOURS, **VIDEO_KINDS[kind])
    exact, fast = decode_frames_at_1fps(path, EXACT), decode_frames_at_1fps(path, FAST)

    assert fast.num_frames == exact.num_frames
    assert fast.timestamps_s == exact.timestamps_s
    assert [nearest_colour(jpeg) for jpeg in fast.jpegs] == [
        colour_on_screen(DEFAULT_COLOURS, t) for t in fast.timestamps_s
    ]
    assert mean_abs_pixel_difference(fast, exact) < 2.0


def test_fast_path_falls_back_to_exact_where_skipping_would_break_1fps_sampling(tmp_path):
    # 5 fps, always 2 B-frames between references (b-adapt=0): the decoded frames are 0.6 s apart, so a
    # sample could show a frame 0.4 s old; the fast path must notice and decode every frame instead.
    path = tmp_path / "five_fps_ibbp.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=5",
         "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-x264-params", "b-adapt=0",
         "-g", "40", "-pix_fmt", "yuv420p", "-threads", "1", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    exact, fast = decode_frames_at_1fps(path, EXACT), decode_frames_at_1fps(path, FAST)

    assert (exact.decode_path, fast.decode_path) == ("exact", "exact_fallback")
    assert fast.jpegs == exact.jpegs
    assert fast.timestamps_s == exact.timestamps_s
    # With a looser bound the skipped decode is accepted; its lag is the one the fallback guarded against:
    # references at 0, 0.6, 1.2, 1.8, 2.4, ...: slot 1 shows t=0.6 (0.4 s old), slot 2 t=1.8 (0.2 s old).
    loose = decode_frames_at_1fps(path, replace(FAST, max_frame_lag_s=0.99))
    assert loose.decode_path == "fast"
    assert loose.max_frame_lag_s == pytest.approx(0.4, abs=1e-6)
    assert loose.timestamps_s == exact.timestamps_s
    # The packet timestamps predict the same: the fallback is chosen before any frame is decoded.
    predicted = predicted_reference_frame_times(str(path), 0, deadline=time.monotonic() + 60)
    assert predicted == pytest.approx([0.6 * k for k in range(len(predicted))], abs=1e-6)
    assert largest_sample_lag([float(n) for n in range(8)], predicted) == pytest.approx(0.4, abs=1e-6)


def test_the_probe_predicts_from_the_opening_and_the_decode_checks_the_rest(tmp_path):
    # 30 fps until 40 s (past the probe's packet window), then every 6th frame (5 fps) with 2 B-frames
    # between references: only the decode can see that its late samples would lag 0.4 s.
    path = tmp_path / "late_low_rate.mp4"
    late = PACKET_WINDOW_S + 10
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30",
         "-t", str(late + 8), "-vf", f"select='lt(t,{late})+not(mod(n,6))'", "-fps_mode", "vfr",
         "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-x264-params", "b-adapt=0", "-g", "60",
         "-pix_fmt", "yuv420p", "-threads", "1", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    predicted = predicted_reference_frame_times(str(path), 0, deadline=time.monotonic() + 60)
    assert PACKET_WINDOW_S - 1 < predicted[-1] < late  # the window only
    assert largest_sample_lag([float(n) for n in range(int(predicted[-1]) + 1)], predicted) < 0.25

    exact, fast = decode_frames_at_1fps(path, EXACT), decode_frames_at_1fps(path, FAST)
    assert fast.decode_path == "exact_fallback"
    assert fast.jpegs == exact.jpegs and fast.timestamps_s == exact.timestamps_s
    assert fast.num_frames == late + 8


def test_largest_sample_lag_is_the_oldest_source_frame_behind_a_slot():
    decoded = [0.0, 0.1, 0.9, 2.5]  # source frame times (s)
    # slot 0 -> 0.0 (lag 0), slot 1 -> 0.9 (0.1), slot 2 -> 0.9 (1.1), slot 3 -> 2.5 (0.5)
    assert largest_sample_lag([0.0, 1.0, 2.0, 3.0], decoded) == pytest.approx(1.1)
    assert largest_sample_lag([0.0, 1.0], [0.3, 1.0]) == 0.0  # slot 0 before the first frame is padding
    assert largest_sample_lag([], decoded) == 0.0


@pytest.mark.parametrize(
    "bad_field",
    [{"decode_mode": "fastest"}, {"decoder": "cuda"}, {"max_frame_lag_s": -0.1}, {"max_frame_lag_s": 1.0}],
)
def test_decode_config_rejects_bad_decode_path_settings(bad_field):
    with pytest.raises(ValueError, match=next(iter(bad_field))):
        DecodeConfig(**bad_field)


@pytest.mark.skipif(HAS_NVIDIA_GPU, reason="checks the message shown where there is no GPU")
def test_nvdec_without_a_gpu_fails_with_a_clear_message(make_video):
    path = make_video(DEFAULT_COLOURS[:2])
    with pytest.raises(RuntimeError, match='decoder="cpu"'):
        decode_frames_at_1fps(path, DecodeConfig(decoder="nvdec"))


@pytest.mark.skipif(not HAS_NVIDIA_GPU, reason="needs an NVIDIA GPU")
def test_nvdec_matches_the_cpu_decode(make_video):
    path = make_video(DEFAULT_COLOURS, fps=30)
    cpu, gpu = decode_frames_at_1fps(path, FAST), decode_frames_at_1fps(path, replace(FAST, decoder="nvdec"))
    assert gpu.timestamps_s == cpu.timestamps_s
    assert mean_abs_pixel_difference(gpu, cpu) < 2.0
