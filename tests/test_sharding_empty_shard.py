"""A shard whose videos all failed gets no tar (its manifest part still commits it); the README's reader
recipe, pasted as it stands, and the contact sheet keep working on such an output."""

from __future__ import annotations

import subprocess
import sys

from pipelines.sharding.contact_sheet import main as contact_sheet_main
from pipelines.sharding.manifest import completed_shards, read_manifest
from pipelines.sharding.plan import PlannedVideo
from pipelines.sharding.shard_task import ShardTask, process_shard
from pipelines.sharding.tar_writer import ShardTarWriter
from pipelines.storage import open_storage
from pipelines.video import DecodeConfig
from tests.test_readme_recipes import readme_recipe
from tests.test_sharding_tar_writer import jpeg

META = {
    "video_id": "good", "duration_s": 2.0, "num_frames": 2, "width": 32, "height": 24,
    "frame_timestamps_s": [0.0, 1.0], "source": {"category_1": "a", "category_2": "b"},
    "captions": {"start": [0.0], "end": [2.0], "text": ["hello"]},
}  # fmt: skip


def failing_video(shard: int, video_id: str) -> PlannedVideo:
    return PlannedVideo(
        shard=shard, video_id=video_id, video_path="", caption_offset=-1, caption_length=0,
        category_1="", category_2="", rank=None, task_id=None, planned_failure="missing_file",
    )  # fmt: skip


def all_failed_task(shard: int, tmp_path) -> ShardTask:
    return ShardTask(
        shard=shard,
        shard_key=f"shards/howto100m-{shard:06d}.tar",
        videos=(failing_video(shard, f"gone{shard}a"), failing_video(shard, f"gone{shard}b")),
        videos_dir=str(tmp_path),
        captions_path=str(tmp_path / "caption.json"),
        decode=DecodeConfig(),
    )


def test_all_failed_shard_has_no_tar_and_readers_still_work(tmp_path, capsys):
    out = tmp_path / "OUT"
    storage = open_storage(str(out))
    with ShardTarWriter(tmp_path / "good.tar") as writer:  # shard 0: one good sample
        writer.add_sample("good", META, [jpeg((255, 0, 0))] * 2)
    storage.upload_file("shards/howto100m-000000.tar", tmp_path / "good.tar")
    report = process_shard(all_failed_task(1, tmp_path), storage)  # shard 1: every video failed
    # shard 2: an earlier attempt left a tar, this attempt's videos all failed: the stale tar goes
    storage.upload_file("shards/howto100m-000002.tar", tmp_path / "good.tar")
    process_shard(all_failed_task(2, tmp_path), storage)

    assert report.failed == 2 and report.ok == 0 and report.tar_bytes == 0
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["howto100m-000000.tar"]
    assert {1, 2} <= completed_shards(storage)
    assert {row["reason"] for row in read_manifest(storage).to_pylist()} == {"missing_file"}

    recipe = readme_recipe("read-shards")
    result = subprocess.run([sys.executable, "-c", recipe], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["good", "2"]
    assert "Warning" not in result.stderr, result.stderr  # no shardshuffle warning either

    missing = contact_sheet_main(["--shard", str(out / "shards/howto100m-000001.tar")])
    err = capsys.readouterr().err
    assert missing == 2 and len(err.strip().splitlines()) == 1 and "all failed" in err

    (tmp_path / "empty.tar").write_bytes(b"\0" * 10240)  # an empty tar, as earlier versions wrote
    empty = contact_sheet_main(["--shard", str(tmp_path / "empty.tar"), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert empty == 2 and len(err.strip().splitlines()) == 1 and "holds no samples" in err

    made = contact_sheet_main(
        ["--shard", str(out / "shards/howto100m-000000.tar"), "--out", str(tmp_path / "sheet.png")]
    )
    assert made == 0 and (tmp_path / "sheet.png").is_file()
