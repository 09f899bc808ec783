"""pipelines.video against real ffmpeg-encoded files: frame timing, content, sizes and failure reasons."""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from PIL import Image

from infra.sample_collection import COLOURS, SampleCollection
from pipelines.video import (
    FAILURE_REASONS,
    DecodeConfig,
    DecodedVideo,
    VideoDecodeError,
    decode_frames_at_1fps,
    probe_video,
    split_concatenated_jpegs,
)
from tests.fixtures_media import DEFAULT_COLOURS, colour_on_screen

VIDEO_KINDS = {
    "h264_mp4_bframes_30fps_audio": dict(container="mp4", fps=30, with_audio=True),
    "h264_mp4_faststart_60fps": dict(container="mp4", fps=60, width=640, height=360, faststart=True),
    "vp9_webm_25fps_audio": dict(container="webm", fps=25, width=480, height=270, with_audio=True),
    "vp9_webm_60fps": dict(container="webm", fps=60),
    "h264_mkv_25fps_audio": dict(container="mkv", fps=25, width=384, height=216, with_audio=True),
    "h264_mp4_portrait": dict(container="mp4", fps=30, width=180, height=320),
    "h264_mp4_variable_frame_rate": dict(container="mp4", fps=30, with_audio=True, variable_frame_rate=True),
}


def ffprobe_video_duration(path: Path) -> float:
    """The video stream's duration per ffprobe (Matroska keeps it in a tag; else the container's)."""
    probe = ffmpeg.probe(str(path))
    stream = next(s for s in probe["streams"] if s["codec_type"] == "video")
    if "duration" in stream:
        return float(stream["duration"])
    tag = stream.get("tags", {}).get("DURATION")
    if tag:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return float(probe["format"]["duration"])


def nearest_colour(jpeg: bytes) -> str:
    """Name of the COLOURS entry closest to the mean RGB of the frame's central quarter."""
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
    height, width, _ = image.shape
    centre = image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4].reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda name: float(np.linalg.norm(centre - np.array(COLOURS[name]))))


def assert_frames_are_valid_jpegs(decoded: DecodedVideo) -> None:
    for jpeg in decoded.jpegs:
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG"
        assert image.size == (decoded.width, decoded.height)
        image.load()  # decodes the entropy-coded data: a truncated JPEG raises here


def child_processes_of_this_test_process() -> list[str]:
    """'pid name state' of every ffmpeg/ffprobe child (zombies included) of this process, from /proc.

    Other children (the session's S3 server, a Ray head) are not the decoder's business."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        name = stat_line[stat_line.index("(") + 1 : stat_line.rindex(")")]
        state, parent_pid = stat_line[stat_line.rindex(")") + 2 :].split()[:2]
        if int(parent_pid) == os.getpid() and name.startswith(("ffmpeg", "ffprobe")):
            children.append(f"{entry} {name} {state}")
    return children


@pytest.mark.parametrize("kind", sorted(VIDEO_KINDS))
def test_one_frame_per_second_shows_what_is_on_screen_then(make_video, kind):
    path = make_video(DEFAULT_COLOURS, **VIDEO_KINDS[kind])
    decoded = decode_frames_at_1fps(path)

    duration = ffprobe_video_duration(path)
    assert abs(decoded.num_frames - duration) <= 1
    assert len(decoded.timestamps_s) == decoded.num_frames
    for index, timestamp in enumerate(decoded.timestamps_s):
        assert abs(timestamp - index) <= 0.25
    assert decoded.timestamps_s == sorted(decoded.timestamps_s)
    assert 0 < decoded.duration_s <= decoded.num_frames
    assert_frames_are_valid_jpegs(decoded)
    seen = [nearest_colour(jpeg) for jpeg in decoded.jpegs]
    expected = [colour_on_screen(DEFAULT_COLOURS, t) for t in decoded.timestamps_s]
    assert seen == expected


@pytest.mark.parametrize(
    "kind", ["h264_mp4_bframes_30fps_audio", "h264_mp4_portrait", "vp9_webm_25fps_audio"]
)
def test_short_side_is_resized_keeping_aspect_and_even_sizes(make_video, kind):
    recipe = VIDEO_KINDS[kind]
    source_width, source_height = recipe.get("width", 320), recipe.get("height", 180)
    path = make_video(DEFAULT_COLOURS[:3], **recipe)
    for short_side in (224, 112):
        decoded = decode_frames_at_1fps(path, DecodeConfig(short_side=short_side))
        assert min(decoded.width, decoded.height) == short_side
        assert decoded.width % 2 == 0 and decoded.height % 2 == 0
        assert (decoded.width > decoded.height) == (source_width > source_height)
        assert decoded.width / decoded.height == pytest.approx(source_width / source_height, rel=0.01)


def test_two_frames_per_second_and_source_size(make_video):
    path = make_video(DEFAULT_COLOURS[:4], container="webm", fps=25)
    decoded = decode_frames_at_1fps(path, DecodeConfig(fps=2.0, short_side=0))
    assert abs(decoded.num_frames - 2 * ffprobe_video_duration(path)) <= 1
    for index, timestamp in enumerate(decoded.timestamps_s):
        assert abs(timestamp - index / 2) <= 0.25 / 2
    assert (decoded.width, decoded.height) == (320, 180)
    assert [nearest_colour(j) for j in decoded.jpegs] == [
        colour_on_screen(DEFAULT_COLOURS[:4], t) for t in decoded.timestamps_s
    ]


def test_duration_that_is_not_whole_seconds(make_video):
    path = make_video(["red", "blue"], boundaries_s=[0, 1.25, 3.5])
    decoded = decode_frames_at_1fps(path)
    assert abs(decoded.num_frames - 3.5) <= 1
    assert decoded.duration_s == pytest.approx(3.5, abs=0.05)  # capped by the stream, not n/fps = 4
    assert [nearest_colour(j) for j in decoded.jpegs] == ["red", "red", "blue", "blue"][: decoded.num_frames]


def test_audio_longer_than_video_is_not_truncation(make_video):
    path = make_video(DEFAULT_COLOURS[:4], with_audio=True, audio_extra_s=4.0)
    decoded = decode_frames_at_1fps(path)
    assert decoded.info.container_duration_s > decoded.info.duration_s + 3
    assert abs(decoded.num_frames - 4) <= 1
    assert decoded.duration_s == pytest.approx(4.0, abs=0.1)


def test_paths_with_spaces_colons_and_a_leading_dash(make_video):
    path = make_video(DEFAULT_COLOURS[:3], name="dir with space/-weird: name (1)")
    decoded = decode_frames_at_1fps(path)
    assert [nearest_colour(j) for j in decoded.jpegs] == list(DEFAULT_COLOURS[:3])


def test_probe_reports_stream_facts(make_video):
    path = make_video(DEFAULT_COLOURS[:3], container="webm", fps=25, width=480, height=270, with_audio=True)
    info = probe_video(path)
    assert (info.codec, info.width, info.height, info.fps, info.has_audio) == ("vp9", 480, 270, 25.0, True)
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    assert info.container_duration_s >= info.duration_s - 0.05


# Failure reasons of the files the sample collection generates, plus the ones that need no file.
VIDEO_FAILURE_REASONS = sorted(set(FAILURE_REASONS) - {"timeout"})


def video_path_for_reason(collection: SampleCollection, reason: str) -> Path:
    video_id = next(i for i, r in collection.expected_failures.items() if r == reason)
    return collection.video_files.get(video_id, collection.videos_dir / f"{video_id}.mp4")


@pytest.mark.parametrize("reason", VIDEO_FAILURE_REASONS)
def test_broken_files_fail_with_their_reason_every_time(sample_collection, reason):
    path = video_path_for_reason(sample_collection, reason)
    outcomes = []
    for _ in range(2):
        with pytest.raises(VideoDecodeError) as caught:
            decode_frames_at_1fps(path, DecodeConfig(timeout_s=60))
        outcomes.append((caught.value.reason, caught.value.detail))
    assert outcomes[0][0] == reason
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1]


def test_truncated_file_still_declares_its_full_duration(sample_collection):
    path = video_path_for_reason(sample_collection, "truncated")
    info = probe_video(path)
    assert info.duration_s == pytest.approx(10.0, abs=0.1)  # the header survived the cut


def test_fifo_times_out_and_leaves_no_child_process(sample_collection):
    path = video_path_for_reason(sample_collection, "timeout")
    with pytest.raises(VideoDecodeError) as caught:
        decode_frames_at_1fps(path, DecodeConfig(timeout_s=2))
    assert caught.value.reason == "timeout"
    assert child_processes_of_this_test_process() == []


def test_successful_decode_leaves_no_child_process(make_video):
    decode_frames_at_1fps(make_video(DEFAULT_COLOURS[:2]))
    assert child_processes_of_this_test_process() == []


def test_decode_error_pickles_with_reason_and_detail():
    error = VideoDecodeError("truncated", "decoded 4.0 s of a declared 10.0 s")
    restored = pickle.loads(pickle.dumps(error))
    assert (restored.reason, restored.detail, str(restored)) == (error.reason, error.detail, str(error))
    with pytest.raises(ValueError, match="unknown failure reason"):
        VideoDecodeError("flaky", "no such reason")


@pytest.mark.parametrize(
    "bad_field",
    [
        dict(fps=0),
        dict(short_side=223),
        dict(short_side=-2),
        dict(jpeg_quality=1),
        dict(jpeg_quality=32),
        dict(timeout_s=0),
        dict(min_duration_s=-1),
        dict(ffmpeg_threads=-1),
    ],
)
def test_decode_config_rejects_bad_values(bad_field):
    with pytest.raises(ValueError):
        DecodeConfig(**bad_field)


def test_jpeg_splitting_follows_segment_lengths_not_eoi_bytes():
    # A comment holding FF D9 and restart markers in the scan: a split on FF D9 would cut these apart.
    jpegs = []
    for index, colour in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250)]):
        buffer = io.BytesIO()
        noise = np.random.default_rng(index).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        image = Image.fromarray(
            np.clip(noise // 4 + np.array(colour, dtype=np.uint8) // 2, 0, 255).astype(np.uint8)
        )
        image.save(buffer, "JPEG", comment=b"x\xff\xd9y", restart_marker_blocks=1)
        jpegs.append(buffer.getvalue())
    assert all(jpeg.count(b"\xff\xd9") >= 2 for jpeg in jpegs)
    assert split_concatenated_jpegs(b"".join(jpegs)) == jpegs
    with pytest.raises(VideoDecodeError):
        split_concatenated_jpegs(b"".join(jpegs)[:-5])


def test_frames_are_spread_at_one_per_second_over_a_long_video(make_video):
    colours = [name for name in COLOURS][:8] * 5  # 40 s, tiny frames: cheap
    path = make_video(colours, width=64, height=36, fps=25)
    decoded = decode_frames_at_1fps(path, DecodeConfig(short_side=0))
    assert abs(decoded.num_frames - 40) <= 1
    assert all(math.isclose(t, i, abs_tol=0.25) for i, t in enumerate(decoded.timestamps_s))
    assert [nearest_colour(j) for j in decoded.jpegs] == [
        colour_on_screen(colours, t) for t in decoded.timestamps_s
    ]
