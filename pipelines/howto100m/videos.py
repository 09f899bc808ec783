"""The videos folder: `<video_id>.mp4|.webm|.mkv`, possibly in sub-folders."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from pipelines.howto100m.ids import is_safe_video_id

logger = logging.getLogger(__name__)

# Preference order when one id has several files: mp4 (H.264, cheapest to decode) first.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv")


@dataclass(frozen=True, kw_only=True, eq=False)
class VideoFileIndex(Mapping[str, str]):
    """video_id -> path relative to the videos folder ('/'-separated), for safe ids only.

    Reads like the `dict[str, str]` it wraps. Files whose name stem fails `is_safe_video_id`
    are listed in `unsafe_ids` with no path, so no path is ever built from an unsafe id.
    """

    paths: dict[str, str]
    unsafe_ids: tuple[str, ...]  # sorted stems of video files whose id is unsafe
    duplicate_ids: tuple[str, ...]  # sorted safe ids with several files (one was picked)

    def __getitem__(self, video_id: str) -> str:
        return self.paths[video_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def index_video_files(videos_dir: str | os.PathLike) -> VideoFileIndex:
    """Walk `videos_dir` (sub-folders too, symlinked folders not followed) for video files.

    Any non-folder entry with a video extension counts, FIFOs and zero-byte files included: the
    decoder classifies those. When an id has several files the pick is deterministic: mp4 over
    webm over mkv, then the shortest path, then the lexicographically first.
    """
    if not os.path.isdir(videos_dir):
        raise ValueError(f"videos folder {os.fspath(videos_dir)!r} does not exist or is not a folder")
    return _index(_walk_video_files(videos_dir), where=os.fspath(videos_dir))


def index_video_paths(relative_paths: Iterable[str], *, where: str) -> VideoFileIndex:
    """`index_video_files` over '/'-separated paths already listed (the keys under an s3:// prefix)."""
    found = []
    for relative_path in relative_paths:
        extension = _video_extension(relative_path.rpartition("/")[2])
        if extension:
            found.append((relative_path.rpartition("/")[2][: -len(extension)], relative_path))
    return _index(found, where=where)


def _index(found: Iterable[tuple[str, str]], *, where: str) -> VideoFileIndex:
    """(name stem, relative path) pairs -> the index, with the deterministic pick among duplicates."""
    candidates: dict[str, list[str]] = {}
    unsafe: set[str] = set()
    for video_id, relative_path in found:
        if is_safe_video_id(video_id):
            candidates.setdefault(video_id, []).append(relative_path)
        else:
            unsafe.add(video_id)
    paths = {video_id: min(found, key=_preference) for video_id, found in sorted(candidates.items())}
    duplicates = tuple(video_id for video_id, found in paths.items() if len(candidates[video_id]) > 1)
    _log_index_problems(where, candidates, duplicates, unsafe)
    return VideoFileIndex(paths=paths, unsafe_ids=tuple(sorted(unsafe)), duplicate_ids=duplicates)


def _walk_video_files(videos_dir: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Yield (name stem, '/'-separated path relative to videos_dir) of every video file."""
    root = os.fspath(videos_dir)
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()  # walk order (and so logs) independent of the file system
        relative_folder = os.path.relpath(folder, root)
        for name in sorted(files):
            extension = _video_extension(name)
            if extension:
                relative = name if relative_folder == "." else os.path.join(relative_folder, name)
                yield name[: -len(extension)], relative.replace(os.sep, "/")


def _video_extension(name: str) -> str:
    """The video extension `name` ends with ('' if none); unlike os.path.splitext, '..mp4' has one."""
    return next((name[-len(ext) :] for ext in VIDEO_EXTENSIONS if name.lower().endswith(ext)), "")


def _preference(relative_path: str) -> tuple[int, int, str]:
    extension = _video_extension(relative_path).lower()
    return VIDEO_EXTENSIONS.index(extension), len(relative_path), relative_path


def _log_index_problems(
    videos_dir: str | os.PathLike,
    candidates: dict[str, list[str]],
    duplicates: tuple[str, ...],
    unsafe: set[str],
) -> None:
    if duplicates:
        examples = "; ".join(f"{video_id}: {sorted(candidates[video_id])}" for video_id in duplicates[:3])
        logger.warning(
            "%s: %d video ids have several files; picked mp4 > webm > mkv, then the shortest path (e.g. %s)",
            videos_dir,
            len(duplicates),
            examples,
        )
    if unsafe:
        logger.warning(
            "%s: %d video files have an unsafe id and get no path (e.g. %s)",
            videos_dir,
            len(unsafe),
            sorted(unsafe)[:3],
        )
