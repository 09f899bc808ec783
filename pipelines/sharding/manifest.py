"""The manifest: one Parquet part per shard, one row per planned video, written LAST.

A shard is complete iff its manifest part exists, so the part doubles as the shard's commit
marker; resume lists `manifest/` to know what is done. Readable with pyarrow.dataset, pandas or
DuckDB pointed at the folder.

At ~12k shards, reading every part is ~12k GETs, so the job also writes `manifest.parquet` (all
parts in one file, written atomically, naming the parts it covers). Readers list the parts (one
LIST per 1000) and use the consolidated file for every part it covers; parts it does not cover (a
job still running or resumed since) are read concurrently.

The job itself never reads back what it wrote: a shard task returns the rows of the part it
committed, and the driver keeps them. A run starts by making the consolidated file cover exactly
the committed parts (`manifest_before_run`: resume rebuilds it there, once), rewrites it from
memory every few minutes and when it ends (`manifest_after_run`: one LIST checks memory against
the store). A run commits only shards that were not committed when it started, so the file never
names a part written after it; a crash re-reads only the parts committed since its last rewrite.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.storage import ObjectNotFound, Storage

MANIFEST_PREFIX = "manifest/"
CONSOLIDATED_MANIFEST_KEY = "manifest.parquet"
_COVERS_METADATA = b"manifest_parts"  # Parquet key-value metadata: JSON list of the shard indices covered
READ_CONCURRENCY = 32  # parts in flight at once: GETs are latency-bound, not bandwidth-bound
STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class ManifestRow:
    video_id: str
    shard: str  # tar key relative to the output root, e.g. "shards/howto100m-000012.tar"
    key: str  # WebDataset __key__ of the sample ("" when failed)
    status: str  # ok | failed
    reason: str  # stable failure code ("" when ok)
    detail: str  # human-readable detail (ffmpeg's last error line, dropped-caption counts, ...)
    duration_s: float  # decoded duration (0 when failed before decoding)
    num_frames: int
    num_captions: int
    bytes: int  # bytes this video added to the shard (frames + json)
    decode_seconds: float  # wall time of probe + decode
    cpu_seconds: float  # CPU time of the ffmpeg processes for this video (user + sys)
    attempts: int  # how many times this video's shard has been started, this one included


MANIFEST_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("shard", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("duration_s", pa.float64()),
        ("num_frames", pa.int32()),
        ("num_captions", pa.int32()),
        ("bytes", pa.int64()),
        ("decode_seconds", pa.float64()),
        ("cpu_seconds", pa.float64()),
        ("attempts", pa.int32()),
    ]
)
assert [f.name for f in fields(ManifestRow)] == MANIFEST_SCHEMA.names


def manifest_key(shard_index: int) -> str:
    return f"{MANIFEST_PREFIX}{shard_index:06d}.parquet"


def manifest_table(rows: list[ManifestRow]) -> pa.Table:
    return pa.Table.from_pylist([asdict(row) for row in rows], schema=MANIFEST_SCHEMA)


def manifest_part_bytes(rows: list[ManifestRow] | pa.Table) -> bytes:
    table = rows if isinstance(rows, pa.Table) else manifest_table(rows)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def completed_shards(storage: Storage) -> set[int]:
    """Indices of shards whose manifest part exists (= committed)."""
    return set(_part_keys(storage))


def _part_keys(storage: Storage) -> dict[int, str]:
    parts = {}
    for key in storage.list(MANIFEST_PREFIX):
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and name[: -len(".parquet")].isdigit():
            parts[int(name[: -len(".parquet")])] = key
    return parts


@dataclass(frozen=True)
class ManifestSnapshot:
    table: pa.Table  # the rows of `parts`, in shard order, cast to MANIFEST_SCHEMA
    parts: frozenset[int]  # committed shards the table covers (all of them at the time of reading)
    consolidated_current: bool  # the consolidated file covered every part: no need to rewrite it


def read_manifest(storage: Storage) -> pa.Table:
    """All committed manifest parts as one table (empty table with the schema if none)."""
    return load_manifest(storage).table


def load_manifest(storage: Storage) -> ManifestSnapshot:
    """The committed manifest: the consolidated file for the parts it covers, the other parts read concurrently.

    A consolidated file that names a part which is not committed (parts deleted by hand, another
    job's file copied in) is ignored whole: the parts are the truth.
    """
    parts = _part_keys(storage)
    covered, consolidated = _read_consolidated(storage)
    if not covered <= parts.keys():
        covered, consolidated = frozenset(), None
    missing = sorted(parts.keys() - covered)
    tables = [consolidated] if consolidated is not None else []
    tables += read_parts(storage, [parts[shard] for shard in missing])
    table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    if missing and consolidated is not None:  # keep rows in shard order, as if read from the parts
        table = table.take(pc.sort_indices(table, [("shard", "ascending")]))
    return ManifestSnapshot(
        table=table, parts=frozenset(parts), consolidated_current=consolidated is not None and not missing
    )


def read_parts(storage: Storage, keys: list[str]) -> list[pa.Table]:
    """The manifest parts at `keys`, READ_CONCURRENCY at a time (threads: GETs wait on the network)."""
    if not keys:
        return []
    with ThreadPoolExecutor(max_workers=min(READ_CONCURRENCY, len(keys))) as pool:
        return list(pool.map(lambda key: _parquet_table(storage.read_bytes(key)), keys))


def write_consolidated_manifest(storage: Storage, snapshot: ManifestSnapshot) -> None:
    """`snapshot` as the one-file manifest; a single atomic write (temp + rename locally, one PUT on S3)."""
    covers = json.dumps(sorted(snapshot.parts)).encode()
    table = snapshot.table.replace_schema_metadata({_COVERS_METADATA: covers})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    storage.write_bytes(CONSOLIDATED_MANIFEST_KEY, sink.getvalue())


def drop_consolidated_manifest(storage: Storage) -> None:
    storage.delete(CONSOLIDATED_MANIFEST_KEY)


def manifest_before_run(storage: Storage) -> ManifestSnapshot:
    """The committed manifest as a run starts, the consolidated file made to cover exactly its parts.

    Currency is judged by the parts' names, so a file naming a part that is not committed (deleted by
    hand to redo its shard) must go before the run rewrites that part under the same name.
    """
    snapshot = load_manifest(storage)
    if snapshot.consolidated_current:
        return snapshot
    if snapshot.parts:
        write_consolidated_manifest(storage, snapshot)
    else:
        drop_consolidated_manifest(storage)
    return replace(snapshot, consolidated_current=bool(snapshot.parts))


def manifest_with_committed(before: ManifestSnapshot, committed: Mapping[int, pa.Table]) -> ManifestSnapshot:
    """`before` plus the parts a run has committed since (shard index -> the rows its task returned),
    rows in shard order; `consolidated_current` says whether the file on the store still covers it all."""
    if not committed:
        return before
    table = pa.concat_tables([before.table, *committed.values()]).combine_chunks()
    table = table.take(pc.sort_indices(table, [("shard", "ascending")]))
    return ManifestSnapshot(table=table, parts=before.parts | committed.keys(), consolidated_current=False)


def manifest_after_run(
    storage: Storage, before: ManifestSnapshot, committed: Mapping[int, pa.Table]
) -> ManifestSnapshot:
    """The manifest when a run's tasks are done, from memory, checked against the store with one LIST.

    A part committed by a task whose reply never came (it failed after its commit) is read; if a part
    known in memory is gone from the store (deleted by hand meanwhile), everything is read again.
    """
    parts = _part_keys(storage)
    known = before.parts | committed.keys()
    if not known <= parts.keys():
        return load_manifest(storage)
    unknown = sorted(parts.keys() - known)
    read = dict(zip(unknown, read_parts(storage, [parts[shard] for shard in unknown]), strict=True))
    return manifest_with_committed(before, {**committed, **read})


def _read_consolidated(storage: Storage) -> tuple[frozenset[int], pa.Table | None]:
    try:
        table = pq.read_table(io.BytesIO(storage.read_bytes(CONSOLIDATED_MANIFEST_KEY)))
    except (ObjectNotFound, pa.ArrowInvalid):  # none yet, or not a Parquet file: the parts still answer
        return frozenset(), None
    covers = (table.schema.metadata or {}).get(_COVERS_METADATA)
    if covers is None:  # not ours: ignore it
        return frozenset(), None
    return frozenset(json.loads(covers)), table.replace_schema_metadata(None).cast(MANIFEST_SCHEMA)


def _parquet_table(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data)).cast(MANIFEST_SCHEMA)
