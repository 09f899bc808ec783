"""The consolidated manifest: used for the parts it covers, ignored when it names parts that are not
committed, the same table as the parts read one by one; a run's manifest kept from its tasks' rows
without reading its parts back; on a local folder and on the moto S3 server."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipelines.sharding.manifest import (
    CONSOLIDATED_MANIFEST_KEY,
    STATUS_FAILED,
    STATUS_OK,
    ManifestRow,
    load_manifest,
    manifest_after_run,
    manifest_before_run,
    manifest_key,
    manifest_part_bytes,
    manifest_table,
    read_manifest,
    write_consolidated_manifest,
)
from pipelines.storage import Storage, open_storage


def row(shard: int, video: int) -> ManifestRow:
    ok = video % 3 != 0
    return ManifestRow(
        video_id=f"v{shard:03d}-{video}",
        shard=f"shards/x-{shard:06d}.tar",
        key=f"v{shard:03d}-{video}" if ok else "",
        status=STATUS_OK if ok else STATUS_FAILED,
        reason="" if ok else "truncated",
        detail="",
        duration_s=float(video),
        num_frames=video,
        num_captions=1,
        bytes=10 * video,
        decode_seconds=0.5,
        cpu_seconds=0.25,
        attempts=1,
    )


def commit_parts(storage: Storage, shards: range | list[int]) -> dict[int, pa.Table]:
    """Commits a part per shard, as a shard task does; returns the rows each task would return."""
    committed = {}
    for shard in shards:
        committed[shard] = manifest_table([row(shard, v) for v in range(4)])
        storage.write_bytes(manifest_key(shard), manifest_part_bytes(committed[shard]))
    return committed


def garble_parts(storage: Storage, shards: range | list[int]) -> None:
    """Parts that are no Parquet any more: whatever still gives the right rows did not read them."""
    for shard in shards:
        storage.write_bytes(manifest_key(shard), b"not parquet")


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "out"))
    return open_storage(request.getfixturevalue("s3_url"))


def rows_from_parts_by_a_peer(storage: Storage) -> list[dict]:
    """The parts read one by one with plain pyarrow (not the code under test), in key order."""
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(k))) for k in storage.list("manifest/")]
    return [r for t in tables for r in t.to_pylist()]


def test_consolidated_manifest_is_the_parts_table_and_is_used_when_current(storage):
    commit_parts(storage, range(40))  # more parts than READ_CONCURRENCY
    first = load_manifest(storage)
    assert not first.consolidated_current and first.parts == frozenset(range(40))
    assert first.table.to_pylist() == rows_from_parts_by_a_peer(storage)

    write_consolidated_manifest(storage, first)
    again = load_manifest(storage)
    assert again.consolidated_current and again.table.to_pylist() == first.table.to_pylist()
    # readers use it: with the parts' contents changed behind its back it still answers (the parts'
    # names are what currency is judged by; parts are written once, so their contents never change)
    storage.write_bytes(manifest_key(0), manifest_part_bytes([row(0, 1)]))
    assert read_manifest(storage).num_rows == 160


def test_parts_committed_after_the_consolidated_file_are_read_too(storage):
    commit_parts(storage, range(5))
    write_consolidated_manifest(storage, load_manifest(storage))
    commit_parts(storage, range(5, 9))  # a resumed job committed more shards
    later = load_manifest(storage)
    assert not later.consolidated_current and later.parts == frozenset(range(9))
    assert later.table.to_pylist() == rows_from_parts_by_a_peer(storage)  # shard order kept

    write_consolidated_manifest(storage, later)
    assert load_manifest(storage).consolidated_current


def test_a_consolidated_file_naming_uncommitted_parts_is_ignored(storage):
    commit_parts(storage, range(6))
    write_consolidated_manifest(storage, load_manifest(storage))
    storage.delete(manifest_key(5))  # that shard is no longer committed
    stale = load_manifest(storage)
    assert not stale.consolidated_current and stale.parts == frozenset(range(5))
    assert stale.table.to_pylist() == rows_from_parts_by_a_peer(storage)

    storage.write_bytes(CONSOLIDATED_MANIFEST_KEY, b"not parquet")  # garbage: the parts still answer
    assert read_manifest(storage).to_pylist() == rows_from_parts_by_a_peer(storage)


def test_no_parts_is_an_empty_table_and_the_folder_reader_ignores_the_consolidated_file(storage, tmp_path):
    assert read_manifest(storage).num_rows == 0
    commit_parts(storage, range(3))
    write_consolidated_manifest(storage, load_manifest(storage))
    if storage.local_path("manifest") is not None:  # pointing pyarrow at manifest/ still reads the parts only
        assert pads.dataset(storage.local_path("manifest"), format="parquet").count_rows() == 12


def test_a_run_keeps_its_tasks_rows_and_reads_no_part_back(storage):
    commit_parts(storage, [0, 2, 5])  # committed by an earlier run that crashed
    before = manifest_before_run(storage)  # resume: the consolidated file is rebuilt over them
    assert before.consolidated_current and load_manifest(storage).consolidated_current
    committed = commit_parts(storage, [4, 1, 3, 6])  # this run, in the order its tasks finished
    expected = rows_from_parts_by_a_peer(storage)
    garble_parts(storage, range(7))

    after = manifest_after_run(storage, before, committed)
    assert after.table.to_pylist() == expected  # every row, in shard order, and no part was read
    assert after.parts == frozenset(range(7)) and not after.consolidated_current
    write_consolidated_manifest(storage, after)
    assert read_manifest(storage).to_pylist() == expected


def test_a_part_committed_without_a_reply_is_read_and_a_vanished_part_means_reading_all(storage):
    before = manifest_before_run(storage)  # a fresh output: nothing committed
    assert before.parts == frozenset() and before.table.num_rows == 0
    committed = commit_parts(storage, [0, 1])
    commit_parts(storage, [2])  # its task failed after the commit: no rows came back
    assert manifest_after_run(storage, before, committed).table.to_pylist() == rows_from_parts_by_a_peer(
        storage
    )

    storage.delete(manifest_key(1))  # deleted by hand while the run went on: memory is not the truth
    after = manifest_after_run(storage, before, committed)
    assert after.parts == frozenset({0, 2})
    assert after.table.to_pylist() == rows_from_parts_by_a_peer(storage)


def test_a_run_starts_with_a_consolidated_file_that_names_only_committed_parts(storage):
    commit_parts(storage, range(4))
    write_consolidated_manifest(storage, load_manifest(storage))
    storage.delete(manifest_key(2))  # to redo shard 2, which this run will commit again under that name
    before = manifest_before_run(storage)
    assert before.parts == frozenset({0, 1, 3}) and load_manifest(storage).consolidated_current
    redone = manifest_table([row(2, v) for v in range(7)])  # the redone shard has other rows
    storage.write_bytes(manifest_key(2), manifest_part_bytes(redone))
    # a crash here: readers get shard 2's new rows, not the copy the old file held
    assert load_manifest(storage).table.to_pylist() == rows_from_parts_by_a_peer(storage)

    for shard in (0, 1, 2, 3):
        storage.delete(manifest_key(shard))
    assert not manifest_before_run(storage).parts  # nothing committed: no file names anything
    assert not storage.exists(CONSOLIDATED_MANIFEST_KEY)
