"""Where the sharding job reads HowTo100M from: local paths or s3://bucket/prefix, one interface.

Each source flag names a folder (--videos) or one file (--metadata, --captions). A file is opened as
(storage of its folder, its name), so reading it is the `Storage` interface on both backends: a
streamed GET for the CSV and the caption scan, Range GETs for single caption records. Local folders
keep their direct walk and paths (ffmpeg reads them in place); s3 videos are listed with
list_objects_v2 and spooled one at a time (see video_spool.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from pipelines.howto100m import (
    VideoFileIndex,
    VideoMetadata,
    index_video_files,
    index_video_paths,
    read_metadata_stream,
)
from pipelines.sharding.video_spool import spooled_copy, task_spool
from pipelines.storage import Storage, StorageError, open_storage, validate_key

log = logging.getLogger(__name__)


def is_object_store_url(url: str) -> bool:
    return url.startswith("s3://")


def open_source_file(url: str) -> tuple[Storage, str]:
    """(storage of the folder holding the file, the file's key in it) for a path or s3:// URL."""
    if is_object_store_url(url):
        folder, _, name = url.removeprefix("s3://").rstrip("/").rpartition("/")
        if not folder or not name:
            raise ValueError(f"{url!r} names a bucket, not an object; use s3://bucket/path/to/file")
        return open_storage(f"s3://{folder}"), name
    path = Path(url).expanduser().absolute()
    return open_storage(str(path.parent)), path.name


def check_sources_exist(videos: str, metadata: str, captions: str) -> None:
    """Stop before any work, naming the flag, if a source is missing or its store unreachable."""
    for flag, url in (("--metadata", metadata), ("--captions", captions)):
        try:
            storage, key = open_source_file(url)
            if not storage.exists(key):
                raise FileNotFoundError(
                    f"{flag} {url!r} does not exist; point {flag} at the HowTo100M {flag[2:]}"
                )
        except StorageError as error:
            raise StorageError(f"{flag} {url!r}: {error}") from None
    if is_object_store_url(videos):
        try:
            open_storage(videos)  # HeadBucket: endpoint, bucket and credentials; the listing finds the files
        except StorageError as error:
            raise StorageError(f"--videos {videos!r}: {error}") from None
        return
    if not Path(videos).exists():
        raise FileNotFoundError(f"--videos {videos!r} does not exist; point --videos at the HowTo100M videos")
    if not Path(videos).is_dir():
        raise NotADirectoryError(f"--videos {videos!r} is not a folder of video files")


def read_source_metadata(url: str) -> dict[str, VideoMetadata]:
    """The metadata CSV, streamed (never held whole as bytes) from a path or an s3:// object."""
    storage, key = open_source_file(url)
    with contextlib.closing(storage.open_read(key)) as stream:
        return read_metadata_stream(stream, name=url)


def list_source_videos(url: str) -> VideoFileIndex:
    """video_id -> path relative to --videos; an s3:// prefix is listed (paginated), not walked."""
    if not is_object_store_url(url):
        return index_video_files(url)
    keys = open_storage(url).list("")
    usable = [key for key in keys if _is_usable_key(key)]
    if len(usable) < len(keys):  # e.g. "a//b.mp4": such a key could not be read back through Storage
        log.warning(
            "%s: %d objects have keys with empty/'.'/'..' segments; left out", url, len(keys) - len(usable)
        )
    index = index_video_paths(usable, where=url)
    if not index and not index.unsafe_ids:
        raise ValueError(
            f"--videos {url!r} holds no .mp4/.webm/.mkv objects; point --videos at the video prefix"
        )
    return index


def _is_usable_key(key: str) -> bool:
    try:
        validate_key(key)
    except ValueError:
        return False
    return True


def captions_identity(url: str) -> str:
    """What identifies caption.json's bytes (S3: ETag + size; local: size + head/tail hash), not its mtime."""
    storage, key = open_source_file(url)
    return storage.content_identity(key)


class VideoSource:
    """The --videos source inside a shard task: a local path as is, an s3:// object spooled to local disk."""

    def __init__(self, url: str, spool_folder: Path | None) -> None:
        self.url = url
        self._storage = open_storage(url) if is_object_store_url(url) else None
        self._spool_folder = spool_folder

    def uri(self, video_path: str) -> str:
        """Where `video_path` is, for messages: the local path or the s3:// URL."""
        return str(Path(self.url) / video_path) if self._storage is None else self._storage.uri(video_path)

    @contextlib.contextmanager
    def local_file(self, video_path: str) -> Iterator[Path]:
        """A local path ffmpeg can read for `video_path`; a spooled copy is deleted on exit.

        ObjectNotFound if the object went away since planning (the caller records missing_file)."""
        if self._storage is None:
            yield Path(self.url) / video_path
            return
        assert self._spool_folder is not None, "s3 videos need the task's spool folder"
        with spooled_copy(self._storage, video_path, folder=self._spool_folder) as path:
            yield path


@contextlib.contextmanager
def open_video_source(url: str) -> Iterator[VideoSource]:
    """The task's view of --videos; for s3:// with a spool folder of its own for the task's lifetime."""
    if not is_object_store_url(url):
        yield VideoSource(url, None)
        return
    with task_spool() as folder:
        yield VideoSource(url, folder)


__all__ = [
    "VideoSource",
    "captions_identity",
    "check_sources_exist",
    "is_object_store_url",
    "list_source_videos",
    "open_source_file",
    "open_video_source",
    "read_source_metadata",
]
