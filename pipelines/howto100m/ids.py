"""HowTo100M video ids: which ids are safe to use as file names and WebDataset keys."""

from __future__ import annotations

import re

# YouTube ids are 11 characters of this alphabet; the bound leaves room for other collections.
VIDEO_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def is_safe_video_id(video_id: str) -> bool:
    """True if `video_id` can name a file and a WebDataset key.

    A '.' would split a WebDataset key into key + extension, and '/' or '..' would escape the
    videos folder, so anything outside `VIDEO_ID_PATTERN` is refused (and recorded as failed).
    """
    return isinstance(video_id, str) and VIDEO_ID_PATTERN.fullmatch(video_id) is not None
