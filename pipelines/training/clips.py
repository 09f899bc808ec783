"""Clip sampling for MIL-NCE post-pretraining: which frames and which captions make one training clip.

Pure functions on a shard sample's `json` (pipelines/sharding/shard_task.py `sample_metadata`): frames are
at 1 fps with frame n showing t = n s (the sharding decoder pins them there), captions are sorted by start
and clipped to the decoded duration. Nothing is decoded here: the result is frame and caption indices.

The rule (MIL-NCE, Miech et al. 2020: a clip's positives are the captions nearest to it in time), for a
video of F frames and C captions, with T = max_frames, k = stride in frames, span = (T - 1) * k + 1 frames:

1. Count: n = 0 if F == 0 or C == 0 (no clip without a caption), else
   n = min(clips_per_video, C, max(1, F // span)) -- at most one clip per caption and about one per
   `span` frames (a short video gives one clip, not several near-copies). It depends on (F, C) only, so
   the stream counts an epoch's clips from the manifest without opening a shard.
2. Anchors: caption indices 0..C-1 are cut into n contiguous strata of near-equal size, stratum
   i = [floor(i * C / n), floor((i + 1) * C / n)), and one caption is drawn uniformly from each (seeded rng):
   distinct anchors, spread over the video (captions are in start order).
3. Frames: the anchor's centre c = (start + end) / 2 s. The window of `span` frames starts at
   first = floor(c - span / 2 + 1/2), i.e. the seconds [first, first + span) it covers are centred on c
   (halves round up), clamped to [0, F - span]; the clip takes frames first, first + k, ..., first + (T-1)k.
   A caption longer than the clip gets its middle; one past the last frame gets the video's last frames.
   A video with F < span frames: frames 0, k, 2k, ... < F (all of them at k = 1); the stream pads the
   remaining T - len positions and masks them out.
4. Candidates: the anchor first, then the other captions by distance between segment centres
   |c_j - c| (ties: lower index first), K in all; fewer when C < K (the stream masks the missing ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.config_values import PositiveInt

SHARD_FPS = 1.0  # frames per second in the shards (the sharding contract)


class BadSampleError(ValueError):
    """A shard sample's json does not follow the shard contract (names the field to look at)."""


@dataclass(frozen=True, kw_only=True)
class ClipConfig:
    max_frames: PositiveInt = 12  # T: frames per clip
    candidates: PositiveInt = 5  # K: captions per clip (the anchor + its K-1 nearest in time)
    clips_per_video: PositiveInt = 8  # upper bound; fewer for short videos or few captions
    frame_stride_s: float = 1.0  # seconds between a clip's frames: a whole number of shard frames

    def __post_init__(self) -> None:
        for name in ("max_frames", "candidates", "clips_per_video"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClipConfig.{name} must be >= 1, got {getattr(self, name)}")
        stride = self.frame_stride_s * SHARD_FPS
        if not (stride >= 1 and math.isclose(stride, round(stride))):
            raise ValueError(
                f"ClipConfig.frame_stride_s={self.frame_stride_s} must be a whole number >= 1 of shard "
                f"frames (shards hold {SHARD_FPS:g} frame per second)"
            )

    @property
    def stride_frames(self) -> int:
        return round(self.frame_stride_s * SHARD_FPS)

    @property
    def span_frames(self) -> int:
        """Shard frames one clip covers, first to last inclusive."""
        return (self.max_frames - 1) * self.stride_frames + 1


@dataclass(frozen=True, kw_only=True)
class ClipSpec:
    """One clip of a video, as indices into the sample's frames and captions."""

    anchor: int  # caption index the clip is centred on
    frame_indices: tuple[int, ...]  # 1..max_frames ascending frame indices (fewer only for short videos)
    caption_indices: tuple[int, ...]  # 1..K caption indices, the anchor first


@dataclass(frozen=True, kw_only=True)
class VideoCaptions:
    """The fields of a sample's json that clip sampling reads, validated."""

    num_frames: int
    start_s: tuple[float, ...]
    end_s: tuple[float, ...]
    text: tuple[str, ...]

    @property
    def centres_s(self) -> np.ndarray:
        return (np.asarray(self.start_s, dtype=np.float64) + np.asarray(self.end_s, dtype=np.float64)) / 2


def parse_sample_json(metadata: dict, *, where: str = "sample") -> VideoCaptions:
    """Validate the json fields clip sampling needs; BadSampleError says which one is wrong."""
    captions = metadata.get("captions")
    if not isinstance(captions, dict) or not all(
        isinstance(captions.get(f), list) for f in ("start", "end", "text")
    ):
        raise BadSampleError(
            f'{where}: json "captions" must be {{"start": [...], "end": [...], "text": [...]}}'
        )
    start, end, text = captions["start"], captions["end"], captions["text"]
    if not len(start) == len(end) == len(text):
        raise BadSampleError(
            f"{where}: caption lists differ in length ({len(start)}, {len(end)}, {len(text)})"
        )
    num_frames = metadata.get("num_frames")
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 0:
        raise BadSampleError(f'{where}: json "num_frames" must be an int >= 0, got {num_frames!r}')
    return VideoCaptions(
        num_frames=num_frames,
        start_s=tuple(float(s) for s in start),
        end_s=tuple(float(e) for e in end),
        text=tuple(str(t) for t in text),
    )


def clip_count(num_frames: int, num_captions: int, config: ClipConfig) -> int:
    """How many clips `sample_clips` cuts from a video (rule 1 of the module docstring)."""
    if num_frames <= 0 or num_captions <= 0:
        return 0
    return min(config.clips_per_video, num_captions, max(1, num_frames // config.span_frames))


def spread_anchors(num_captions: int, count: int, rng: np.random.Generator) -> list[int]:
    """One caption index drawn uniformly from each of `count` near-equal contiguous strata (rule 2)."""
    assert 0 < count <= num_captions
    bounds = [i * num_captions // count for i in range(count + 1)]
    return [int(rng.integers(low, high)) for low, high in zip(bounds[:-1], bounds[1:], strict=True)]


def clip_frame_indices(centre_s: float, num_frames: int, config: ClipConfig) -> tuple[int, ...]:
    """The frames of the clip centred on `centre_s` (rule 3); fewer than max_frames only if the video is short."""
    span, stride = config.span_frames, config.stride_frames
    if num_frames < span:
        return tuple(range(0, num_frames, stride))
    centre_frames = centre_s * SHARD_FPS
    first = math.floor(centre_frames - span / 2 + 0.5)
    first = min(max(first, 0), num_frames - span)
    return tuple(range(first, first + span, stride))


def nearest_captions(centres_s: Sequence[float] | np.ndarray, anchor: int, count: int) -> tuple[int, ...]:
    """The anchor, then the other captions by |centre - anchor's centre| (ties: lower index), `count` at most."""
    centres = np.asarray(centres_s, dtype=np.float64)
    distance = np.abs(centres - centres[anchor])
    others = [i for i in np.lexsort((np.arange(len(centres)), distance)).tolist() if i != anchor]
    return (anchor, *others[: count - 1])


def sample_clips(video: VideoCaptions, config: ClipConfig, rng: np.random.Generator) -> list[ClipSpec]:
    """The clips of one video (the module docstring's rule), in anchor (time) order; [] without captions."""
    count = clip_count(video.num_frames, len(video.text), config)
    if count == 0:
        return []
    centres = video.centres_s
    return [
        ClipSpec(
            anchor=anchor,
            frame_indices=clip_frame_indices(float(centres[anchor]), video.num_frames, config),
            caption_indices=nearest_captions(centres, anchor, config.candidates),
        )
        for anchor in spread_anchors(len(video.text), count, rng)
    ]
