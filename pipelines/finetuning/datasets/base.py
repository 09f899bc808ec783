"""The one interface every retrieval dataset layout is read into.

A layout reader turns a published annotation layout into a `RetrievalSplit`: the videos of one split,
each with its file and its captions (several per video for MSR-VTT train, MSVD; one paragraph for the
video-paragraph datasets). Items whose video file or captions are missing are reported and skipped, never
silently dropped: `RetrievalSplit.skipped` says which and why, `expected_videos` what the split declares.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".3gp", ".mpg", ".mpeg")


@dataclass(frozen=True, kw_only=True)
class RetrievalItem:
    video_id: str
    path: Path  # the video file
    captions: tuple[str, ...]  # >= 1


@dataclass(frozen=True, kw_only=True)
class SkippedItem:
    video_id: str
    reason: str  # "missing_video" | "no_captions"


@dataclass(frozen=True, kw_only=True)
class RetrievalSplit:
    dataset: str
    split: str  # "train" or "test" (the split's published name is in `source`)
    source: str  # the annotation file(s) the split was read from
    items: tuple[RetrievalItem, ...]
    skipped: tuple[SkippedItem, ...]
    expected_videos: int  # what the annotation declares for the split

    @property
    def num_captions(self) -> int:
        return sum(len(item.captions) for item in self.items)

    @property
    def is_complete(self) -> bool:
        return len(self.items) == self.expected_videos

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for skipped in self.skipped:
            reasons[skipped.reason] = reasons.get(skipped.reason, 0) + 1
        text = (
            f"{self.dataset} {self.split}: {len(self.items)} of {self.expected_videos} videos, "
            f"{self.num_captions} captions"
        )
        return text + (f"; skipped {reasons}" if reasons else "")


def index_videos(root: Path) -> dict[str, Path]:
    """Video id (file stem) -> file, for every video under `root` (any depth; published layouts nest them
    differently: MSR-VTT's videos/all/, LSMDC's <movie>/<clip>.avi, ...)."""
    found: dict[str, Path] = {}
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, Path(folder) / name)
    return found


def build_split(
    *,
    dataset: str,
    split: str,
    source: str,
    video_ids: Sequence[str],
    captions: Mapping[str, Sequence[str]],
    videos: Mapping[str, Path],
) -> RetrievalSplit:
    """Items for `video_ids` (in that order, duplicates dropped), skipping those without a file or captions;
    the skipped ones are logged with counts."""
    items, skipped = [], []
    for video_id in dict.fromkeys(video_ids):
        texts = tuple(text.strip() for text in captions.get(video_id, ()) if text and text.strip())
        if video_id not in videos:
            skipped.append(SkippedItem(video_id=video_id, reason="missing_video"))
        elif not texts:
            skipped.append(SkippedItem(video_id=video_id, reason="no_captions"))
        else:
            items.append(RetrievalItem(video_id=video_id, path=videos[video_id], captions=texts))
    result = RetrievalSplit(
        dataset=dataset,
        split=split,
        source=source,
        items=tuple(items),
        skipped=tuple(skipped),
        expected_videos=len(dict.fromkeys(video_ids)),
    )
    (log.warning if skipped else log.info)("%s", result.summary())
    return result


def group_captions(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(video_id, caption) pairs -> video_id -> captions, in order."""
    grouped: dict[str, list[str]] = {}
    for video_id, caption in pairs:
        grouped.setdefault(video_id, []).append(caption)
    return grouped


def as_paragraphs(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Video-paragraph retrieval (ActivityNet, DiDeMo): all sentences of a video, in order, one query."""
    return {
        video_id: [" ".join(s.strip() for s in sentences if s.strip())]
        for video_id, sentences in captions.items()
    }


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ValueError(f"{what} not found: {path} (see the dataset's published layout in the README)")
    return path
