"""Decoded frames of retrieval videos, cached on local disk so epochs 2..n (and every evaluation) don't decode
again.

Videos are decoded with the sharding job's decoder (`decode_frames_at_1fps`: 1 fps, short side 224, JPEG)
and all their frames are cached, one file per video: the JPEGs back to back (`split_concatenated_jpegs`
reads them apart again). The file name is a digest of the video's path, size, mtime and the decode config,
so a changed video or config is decoded afresh. Writes are atomic (temp file + rename): several training
workers on one machine may fill the same cache at once. `uniform_frame_indices` then picks `max_frames`
of them (CLIP4Clip's uniform sampling).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.config_values import PositiveFloat, PositiveInt
from pipelines.finetuning.datasets.base import RetrievalItem, SkippedItem
from pipelines.video import DecodeConfig, VideoDecodeError, decode_frames_at_1fps, split_concatenated_jpegs

log = logging.getLogger(__name__)

DEFAULT_CACHE = "~/.cache/clip4clip/frames"
_SUFFIX = ".mjpeg"


@dataclass(frozen=True, kw_only=True)
class FrameCacheConfig:
    frame_cache: str = DEFAULT_CACHE  # local folder for decoded frames (per machine)
    decode_threads: PositiveInt = 4  # ffmpeg processes at once while filling the cache
    short_side: int = 224  # decoded frame size (short side, pixels); the sharding job's default
    decode_timeout_s: PositiveFloat = 300.0


def uniform_frame_indices(num_frames: int, max_frames: int) -> list[int]:
    """All frames when they fit, else `max_frames` spread evenly from first to last (CLIP4Clip's
    np.linspace(0, n - 1, max_frames, dtype=int))."""
    if num_frames <= max_frames:
        return list(range(num_frames))
    return [int(i) for i in np.linspace(0, num_frames - 1, num=max_frames, dtype=int)]


class FrameCache:
    def __init__(self, config: FrameCacheConfig) -> None:
        self.config = config
        self.folder = Path(config.frame_cache).expanduser()
        self.decode = DecodeConfig(fps=1.0, short_side=config.short_side, timeout_s=config.decode_timeout_s)

    def path_for(self, video: Path) -> Path:
        stat = video.stat()
        identity = f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.decode}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        return self.folder / digest[:2] / f"{digest}{_SUFFIX}"

    def frames(self, video: Path) -> list[bytes]:
        """Every 1 fps frame of `video` as JPEG bytes; decoded (and cached) on first use."""
        cached = self.path_for(video)
        if cached.is_file():
            return split_concatenated_jpegs(cached.read_bytes())
        jpegs = decode_frames_at_1fps(video, self.decode).jpegs
        cached.parent.mkdir(parents=True, exist_ok=True)
        temp = cached.with_name(f".{cached.name}.{os.getpid()}.{id(jpegs)}")
        temp.write_bytes(b"".join(jpegs))
        os.replace(temp, cached)
        return jpegs

    def sampled_frames(self, video: Path, max_frames: int) -> list[bytes]:
        jpegs = self.frames(video)
        return [jpegs[i] for i in uniform_frame_indices(len(jpegs), max_frames)]

    def fill(self, items: Sequence[RetrievalItem]) -> tuple[list[RetrievalItem], list[SkippedItem]]:
        """Decode every item not cached yet (in parallel); items that fail to decode are returned as skipped
        (reason = the decoder's: missing_file, truncated, ...)."""

        def check(item: RetrievalItem) -> str:
            try:
                if not self.path_for(item.path).is_file():
                    self.frames(item.path)
            except VideoDecodeError as error:
                log.warning("skipping %s: %s", item.video_id, error)
                return error.reason
            except OSError as error:
                log.warning("skipping %s: %s", item.video_id, error)
                return "missing_video"
            return ""

        with ThreadPoolExecutor(max(1, self.config.decode_threads)) as pool:
            reasons = list(pool.map(check, items))
        kept = [item for item, reason in zip(items, reasons, strict=True) if not reason]
        skipped = [
            SkippedItem(video_id=item.video_id, reason=reason)
            for item, reason in zip(items, reasons, strict=True)
            if reason
        ]
        return kept, skipped
