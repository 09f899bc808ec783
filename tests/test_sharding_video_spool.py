"""The video spool: one copy per decode, removed after it, and folders of dead task processes swept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.sharding.video_spool import spooled_copy, task_spool
from pipelines.storage import ObjectNotFound, open_storage


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid  # reaped: no process has this id (until the kernel reuses it)


def test_copies_and_the_task_folder_are_removed_even_when_the_decode_fails(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path / "store"))
    store.write_bytes("videos/a/x.MP4", b"not really a video")
    with task_spool(tmp_path / "spool") as folder:
        assert folder.name.startswith(f"{os.getpid()}-")
        with pytest.raises(RuntimeError), spooled_copy(store, "videos/a/x.MP4", folder=folder) as path:
            assert path.read_bytes() == b"not really a video" and path.suffix == ".mp4"
            raise RuntimeError("ffmpeg failed")
        assert not path.exists()
        with pytest.raises(ObjectNotFound), spooled_copy(store, "videos/gone.mp4", folder=folder):
            pass
        assert not list(folder.iterdir())
    assert not folder.exists()


def test_spools_of_dead_processes_are_swept_at_the_next_task_start(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    stale = root / f"{dead_pid()}-0badc0de"
    live = root / f"{os.getpid()}-feedf00d"  # another task of a live process keeps its folder
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "video.mp4").write_bytes(b"x" * 1000)
    with task_spool(root):
        assert not stale.exists() and live.exists()
