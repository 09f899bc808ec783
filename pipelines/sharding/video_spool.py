"""A bounded local spool for videos on object storage: one video on disk per task, deleted after use.

ffprobe/ffmpeg read a video 3-4 times (probe, packet scan, fast decode, maybe an exact decode), and mp4
files with their moov index at the end make every HTTP read seek; one download to local disk is faster
and never hands ffmpeg a URL (a presigned one would be a credential in /proc/*/cmdline). See
benchmarks/video_access.py for the measurement.

Disk use: the one video being decoded. Each task uses its own folder `<root>/<pid>-<random>`; the copy
is deleted when its decode ends (try/finally), the folder when the task ends, and folders whose process
is dead (a task killed with SIGKILL, an OOM kill, a lost node's restart) are swept at the next task's start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipelines.storage import Storage

log = logging.getLogger(__name__)

SPOOL_FOLDER_NAME = "clip4clip-video-spool"


def default_spool_root() -> Path:
    """`$TMPDIR/clip4clip-video-spool` (tempfile's choice of temp folder, so TMPDIR moves it)."""
    return Path(tempfile.gettempdir()) / SPOOL_FOLDER_NAME


@contextlib.contextmanager
def task_spool(root: Path | None = None) -> Iterator[Path]:
    """This task's spool folder: stale folders of dead processes are swept first, this one removed after."""
    root = root or default_spool_root()
    root.mkdir(parents=True, exist_ok=True)
    sweep_dead_spools(root)
    folder = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def spooled_copy(storage: Storage, key: str, *, folder: Path) -> Iterator[Path]:
    """A local copy of `key` in `folder` (keeping its extension, which ffmpeg's probing may use), deleted on exit."""
    path = folder / f"{uuid.uuid4().hex[:12]}{Path(key).suffix.lower()}"
    try:
        storage.download_file(key, path)
        yield path
    finally:
        path.unlink(missing_ok=True)


def sweep_dead_spools(root: Path) -> None:
    """Remove `<pid>-*` folders under `root` whose process no longer exists."""
    for folder in root.iterdir():
        pid_text = folder.name.partition("-")[0]
        if folder.is_dir() and pid_text.isdigit() and not _process_exists(int(pid_text)):
            log.info("removing the video spool of dead process %s: %s", pid_text, folder)
            shutil.rmtree(folder, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: an existence (and permission) check, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
