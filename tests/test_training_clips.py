"""Clip sampling (MIL-NCE's rule) checked against hand-worked examples on hand-built sample json."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.clips import (
    BadSampleError,
    ClipConfig,
    clip_count,
    clip_frame_indices,
    nearest_captions,
    parse_sample_json,
    sample_clips,
    spread_anchors,
)


def sample_json(num_frames: int, captions: list[tuple[float, float]]) -> dict:
    """The fields of the shard contract's json that clip sampling reads (plus a few it ignores)."""
    return {
        "video_id": "vid",
        "num_frames": num_frames,
        "frame_timestamps_s": [float(i) for i in range(num_frames)],
        "duration_s": float(num_frames),
        "captions": {
            "start": [s for s, _ in captions],
            "end": [e for _, e in captions],
            "text": [f"caption {i}" for i in range(len(captions))],
        },
    }


# 60 frames (60 s), six captions; centres 4, 12, 21, 35, 42, 57.5 s.
SIXTY_SECONDS = sample_json(60, [(2, 6), (10, 14), (20, 22), (30, 40), (41, 43), (55, 60)])
T12_K3 = ClipConfig(max_frames=12, candidates=3, clips_per_video=8)


def test_hand_worked_video_gives_the_documented_clips():
    clips = sample_clips(parse_sample_json(SIXTY_SECONDS), T12_K3, np.random.default_rng(0))
    # n = min(8 per video, 6 captions, 60 // 12 = 5) = 5; strata of caption indices {0},{1},{2},{3},{4,5}
    assert len(clips) == 5
    assert [c.anchor for c in clips[:4]] == [0, 1, 2, 3] and clips[4].anchor in (4, 5)
    by_anchor = {c.anchor: c for c in clips}
    # first = floor(c - 12/2 + 1/2), clamped to [0, 60 - 12]
    assert by_anchor[0].frame_indices == tuple(range(0, 12))  # floor(-1.5) = -2 -> clamped to 0
    assert by_anchor[1].frame_indices == tuple(range(6, 18))  # seconds [6, 18) centred on 12
    assert by_anchor[2].frame_indices == tuple(range(15, 27))  # [15, 27) centred on 21
    assert by_anchor[3].frame_indices == tuple(range(29, 41))  # [29, 41) centred on 35
    # K = 3 nearest by centre distance, the anchor first
    assert by_anchor[0].caption_indices == (0, 1, 2)  # distances 8, 17
    assert by_anchor[2].caption_indices == (2, 1, 3)  # distances 9 (caption 1), 14 (caption 3)
    assert by_anchor[3].caption_indices == (3, 4, 2)  # distances 7, 14


def test_last_stratum_anchor_and_window_clamped_to_the_end():
    seen = {}
    for seed in range(40):
        last = sample_clips(parse_sample_json(SIXTY_SECONDS), T12_K3, np.random.default_rng(seed))[-1]
        seen[last.anchor] = last
    assert set(seen) == {4, 5}  # both captions of the last stratum get drawn
    assert seen[4].frame_indices == tuple(range(36, 48)) and seen[4].caption_indices == (4, 3, 5)
    # centre 57.5 -> first = 52, clamped to 60 - 12 = 48
    assert seen[5].frame_indices == tuple(range(48, 60)) and seen[5].caption_indices == (5, 4, 3)


def test_window_rounds_half_up_and_respects_stride():
    config = ClipConfig(max_frames=12)
    assert clip_frame_indices(12.5, 100, config) == tuple(range(7, 19))  # floor(12.5 - 6 + 0.5) = 7
    strided = ClipConfig(max_frames=4, frame_stride_s=2.0)  # span = 3 * 2 + 1 = 7 frames
    assert clip_frame_indices(10.0, 100, strided) == (7, 9, 11, 13)  # floor(10 - 3.5 + 0.5) = 7


def test_captions_that_do_not_fit_the_clip_still_give_a_window_inside_the_video():
    config = ClipConfig(max_frames=12)
    assert clip_frame_indices(30.0, 60, config) == tuple(range(24, 36))  # a 60 s caption: its middle
    assert clip_frame_indices(100.0, 60, config) == tuple(range(48, 60))  # past the last frame: the end
    assert clip_frame_indices(-5.0, 60, config) == tuple(range(0, 12))


def test_short_video_gives_one_clip_of_all_its_frames():
    video = parse_sample_json(sample_json(5, [(0, 1), (1, 2), (2, 4)]))
    clips = sample_clips(video, ClipConfig(max_frames=12, candidates=5), np.random.default_rng(0))
    assert len(clips) == 1  # max(1, 5 // 12) = 1
    assert clips[0].frame_indices == (0, 1, 2, 3, 4)  # the stream pads to 12 and masks 7
    assert len(clips[0].caption_indices) == 3  # fewer than K = 5 captions: all of them, anchor first
    assert sorted(clips[0].caption_indices) == [0, 1, 2]
    strided = sample_clips(video, ClipConfig(max_frames=12, frame_stride_s=2.0), np.random.default_rng(0))
    assert strided[0].frame_indices == (0, 2, 4)


def test_no_captions_or_no_frames_give_no_clip():
    config = ClipConfig()
    assert sample_clips(parse_sample_json(sample_json(30, [])), config, np.random.default_rng(0)) == []
    assert sample_clips(parse_sample_json(sample_json(0, [(0, 1)])), config, np.random.default_rng(0)) == []
    assert clip_count(0, 5, config) == 0 and clip_count(30, 0, config) == 0


def test_clip_count_is_min_of_cap_captions_and_video_length():
    config = ClipConfig(max_frames=12, clips_per_video=8)
    assert clip_count(400, 100, config) == 8  # the cap
    assert clip_count(400, 3, config) == 3  # one per caption
    assert clip_count(40, 100, config) == 3  # 40 // 12
    assert clip_count(11, 100, config) == 1  # shorter than a clip: one padded clip
    assert clip_count(24, 100, ClipConfig(max_frames=12, frame_stride_s=2.0)) == 1  # span 23


def test_nearest_captions_breaks_ties_by_lower_index():
    assert nearest_captions([0.0, 10.0, 20.0], anchor=1, count=2) == (1, 0)
    assert nearest_captions([0.0, 10.0, 20.0], anchor=1, count=5) == (1, 0, 2)
    assert nearest_captions([5.0, 5.0, 9.0], anchor=1, count=3) == (1, 0, 2)  # same centre as the anchor


def test_anchors_are_one_per_stratum_and_uniform_within_it():
    rng = np.random.default_rng(1)
    draws = np.array([spread_anchors(10, 3, rng) for _ in range(3000)])  # strata [0,3), [3,6), [6,10)
    for column, (low, high) in enumerate([(0, 3), (3, 6), (6, 10)]):
        values, counts = np.unique(draws[:, column], return_counts=True)
        assert values.tolist() == list(range(low, high))
        assert counts.min() > 0.8 * 3000 / (high - low)  # roughly uniform


def test_same_seed_same_clips():
    video = parse_sample_json(SIXTY_SECONDS)
    first = sample_clips(video, T12_K3, np.random.default_rng(7))
    assert first == sample_clips(video, T12_K3, np.random.default_rng(7))


@pytest.mark.parametrize(
    "metadata",
    [
        {"num_frames": 3},
        {"num_frames": 3, "captions": {"start": [0], "end": [1, 2], "text": ["a"]}},
        {"num_frames": "3", "captions": {"start": [], "end": [], "text": []}},
        {"num_frames": -1, "captions": {"start": [], "end": [], "text": []}},
    ],
)
def test_malformed_json_is_a_bad_sample_error_naming_the_sample(metadata):
    with pytest.raises(BadSampleError, match="shard.tar video x"):
        parse_sample_json(metadata, where="shard.tar video x")


@pytest.mark.parametrize(
    "fields", [{"max_frames": 0}, {"candidates": 0}, {"clips_per_video": 0}, {"frame_stride_s": 1.5}]
)
def test_bad_clip_config_is_refused(fields):
    with pytest.raises(ValueError, match="ClipConfig"):
        ClipConfig(**fields)
