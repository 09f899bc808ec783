"""The manifest: one Parquet part per shard, one row per planned video, written LAST.

A shard is complete iff its manifest part exists, so the part doubles as the shard's commit
marker; resume lists `manifest/` to know what is done. Readable with pyarrow.dataset, pandas or
DuckDB pointed at the folder.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.storage import Storage

MANIFEST_PREFIX = "manifest/"
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


def manifest_part_bytes(rows: list[ManifestRow]) -> bytes:
    table = pa.Table.from_pylist([asdict(row) for row in rows], schema=MANIFEST_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def completed_shards(storage: Storage) -> set[int]:
    """Indices of shards whose manifest part exists (= committed)."""
    done = set()
    for key in storage.list(MANIFEST_PREFIX):
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and name[: -len(".parquet")].isdigit():
            done.add(int(name[: -len(".parquet")]))
    return done


def read_manifest(storage: Storage) -> pa.Table:
    """All committed manifest parts as one table (empty table with the schema if none)."""
    parts = [
        pq.read_table(io.BytesIO(storage.read_bytes(key)))
        for key in storage.list(MANIFEST_PREFIX)
        if key.endswith(".parquet")
    ]
    if not parts:
        return MANIFEST_SCHEMA.empty_table()
    return pa.concat_tables(parts).cast(MANIFEST_SCHEMA)
