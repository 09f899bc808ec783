"""An index of caption.json: each video's record byte extent, so a task reads only its records."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.howto100m.caption_scan import decode_key, scan_caption_records
from pipelines.howto100m.captions import CaptionError

logger = logging.getLogger(__name__)

_METADATA_KEY = b"howto100m.caption_index"
_FORMAT_VERSION = 1
# numpy 'S' arrays are as wide as their longest key; safe ids have at most 128 ASCII bytes, and a
# longer key (never usable) would widen every row, so such records are left out with a warning.
_MAX_KEY_BYTES = 128


class StaleCaptionIndexError(ValueError):
    """caption.json changed (size or mtime) since its index was built; rebuild the index."""


@dataclass(frozen=True, kw_only=True)
class _SourceStamp:
    """What identifies one version of caption.json without reading it."""

    size: int  # bytes
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> _SourceStamp:
        stat = os.stat(path)
        return cls(size=stat.st_size, mtime_ns=stat.st_mtime_ns)


class CaptionIndex:
    """Byte offsets of each video's record inside caption.json, built by ONE streaming pass.

    Ids are kept sorted in compact numpy arrays (about 30 bytes per record, so ~40 MB for the
    1.2M HowTo100M videos) that pickle cheaply into Ray tasks; `restricted_to` cuts it down to
    one shard's ids. Ids are stored UTF-8 encoded ('surrogatepass' keeps JSON "\\udXXX" escapes).
    """

    def __init__(
        self,
        *,
        path: str,
        keys: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        source: _SourceStamp | None,
    ) -> None:
        assert keys.dtype.kind == "S" and len(keys) == len(offsets) == len(lengths)
        assert len(keys) < 2 or bool(np.all(keys[:-1] < keys[1:])), "keys must be sorted and unique"
        self.path = path
        self.source = source
        self._keys = keys  # (N,) bytes, sorted
        self._offsets = offsets.astype(np.int64)  # (N,) byte offset of each record's value
        self._lengths = lengths.astype(np.int64)  # (N,) byte length of each record's value

    def __contains__(self, video_id: object) -> bool:
        return isinstance(video_id, str) and self._row(video_id) is not None

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return (_decode_id(key) for key in self._keys)

    def ids(self) -> list[str]:
        """All video ids, sorted by their UTF-8 bytes (= code point order)."""
        return list(self)

    def extent(self, video_id: str) -> tuple[int, int]:
        """(byte offset, byte length) of the record; KeyError if the id has none."""
        row = self._row(video_id)
        if row is None:
            raise KeyError(f"{video_id!r} has no record in {self.path}")
        return int(self._offsets[row]), int(self._lengths[row])

    def read_raw(self, video_id: str) -> dict:
        """The record of `video_id` as json.loads gives it (NaN allowed, bad UTF-8 -> U+FFFD).

        Reads only that record's bytes. KeyError if there is none; StaleCaptionIndexError if the
        file changed; CaptionError("malformed_captions") if the record is not a JSON object.
        """
        offset, length = self.extent(video_id)
        self.check_fresh()
        with open(self.path, "rb") as file:
            file.seek(offset)
            return _parse_record(file.read(length), video_id)

    def iter_raw(self, video_ids: Iterable[str]) -> Iterator[tuple[str, dict | CaptionError]]:
        """(video_id, record or the CaptionError it raised) in file order, one open file, for a shard."""
        wanted = sorted((self.extent(video_id), video_id) for video_id in set(video_ids))
        self.check_fresh()
        with open(self.path, "rb") as file:
            for (offset, length), video_id in wanted:
                file.seek(offset)
                try:
                    yield video_id, _parse_record(file.read(length), video_id)
                except CaptionError as error:
                    yield video_id, error

    def restricted_to(self, video_ids: Iterable[str]) -> CaptionIndex:
        """A smaller index with only those of `video_ids` that have a record (to ship to a task)."""
        rows = sorted({row for row in map(self._row, video_ids) if row is not None})
        return CaptionIndex(
            path=self.path,
            keys=self._keys[rows],
            offsets=self._offsets[rows],
            lengths=self._lengths[rows],
            source=self.source,
        )

    def is_stale(self) -> bool:
        return self.source is not None and _SourceStamp.of(self.path) != self.source

    def check_fresh(self) -> None:
        if self.is_stale():
            raise StaleCaptionIndexError(
                f"{self.path} changed since its caption index was built (recorded {self.source}, now "
                f"{_SourceStamp.of(self.path)}); rebuild it with build_caption_index"
            )

    def to_parquet_bytes(self, stamp: dict) -> bytes:
        """The index as Parquet (video_id, offset, length) with `stamp` (JSON-able) in its metadata."""
        table = pa.table(
            {"video_id": _ids_column(self._keys), "offset": self._offsets, "length": self._lengths}
        )
        table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(stamp).encode()})
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()

    @classmethod
    def from_parquet_bytes(cls, data: bytes, *, name: str) -> tuple[CaptionIndex, dict]:
        """(index, stamp) of `to_parquet_bytes` output; the index has no local source to re-check."""
        table = pq.read_table(io.BytesIO(data))
        metadata = table.schema.metadata or {}
        if _METADATA_KEY not in metadata:
            raise ValueError(f"{name} is not a caption index written by CaptionIndex.to_parquet_bytes")
        index = _from_table(table, path=name, source=None)
        return index, json.loads(metadata[_METADATA_KEY])

    def save(self, path: str | os.PathLike) -> None:
        """Write a Parquet file (video_id, offset, length) + the source stamp; atomic replace."""
        assert self.source is not None, "an index read from a stream is kept with to_parquet_bytes"
        table = pa.table(
            {"video_id": _ids_column(self._keys), "offset": self._offsets, "length": self._lengths}
        )
        stamp = {
            "version": _FORMAT_VERSION,
            "source_path": self.path,
            "source_size": self.source.size,
            "source_mtime_ns": self.source.mtime_ns,
        }
        table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(stamp).encode()})
        temporary = f"{os.fspath(path)}.tmp-{os.getpid()}"
        pq.write_table(table, temporary)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, captions_path: str | os.PathLike | None = None) -> CaptionIndex:
        """Read an index written by `save`; StaleCaptionIndexError if caption.json changed since.

        captions_path: where caption.json is now, if not where the index was built.
        """
        table = pq.read_table(path)
        stamp = _read_stamp(table, path)
        source_path = os.fspath(captions_path) if captions_path is not None else stamp["source_path"]
        index = _from_table(
            table,
            path=source_path,
            source=_SourceStamp(size=stamp["source_size"], mtime_ns=stamp["source_mtime_ns"]),
        )
        index.check_fresh()
        return index

    def _row(self, video_id: str) -> int | None:
        key = _encode_id(video_id)
        row = int(np.searchsorted(self._keys, key))
        return row if row < len(self._keys) and self._keys[row] == key else None


def build_caption_index(captions_path: str | os.PathLike, *, chunk_bytes: int = 16 << 20) -> CaptionIndex:
    """Scan caption.json once, `chunk_bytes` at a time, into a CaptionIndex.

    Memory: about chunk_bytes (plus the longest single string) for the scan, plus the index
    itself. A repeated id keeps its last record, as json.loads would; keys over 128 bytes or
    ending in NUL (never safe ids) are left out with a warning. Raises
    CaptionFileFormatError (a ValueError) with the byte offset if the file is not a JSON object.
    """
    path = os.fspath(captions_path)
    source = _SourceStamp.of(path)
    with open(path, "rb") as file:
        index = index_caption_stream(file, name=path, chunk_bytes=chunk_bytes, source=source)
    if _SourceStamp.of(path) != source:
        raise StaleCaptionIndexError(f"{path} changed while it was being indexed; index it again")
    return index


def index_caption_stream(
    file: BinaryIO, *, name: str, chunk_bytes: int = 16 << 20, source: _SourceStamp | None = None
) -> CaptionIndex:
    """`build_caption_index` over any readable byte stream (an S3 object body: one GET, read in order).

    source None: the stream has no local file to re-check; whoever keeps the index keeps the source's
    identity with it (the sharding plan does), and `is_stale` is then always False.
    """
    keys: list[bytes] = []
    offsets: list[int] = []
    lengths: list[int] = []
    unindexable = 0
    for raw_key, offset, length in scan_caption_records(file, chunk_bytes=chunk_bytes, name=name):
        key = _encode_id(decode_key(raw_key))
        if not _is_indexable(key):
            unindexable += 1
            continue
        keys.append(key)
        offsets.append(offset)
        lengths.append(length)
    if unindexable:
        logger.warning(
            "%s: %d records have a key longer than %d bytes or ending in NUL; not indexed",
            name,
            unindexable,
            _MAX_KEY_BYTES,
        )
    index = _from_unsorted(
        path=name,
        keys=_keys_array(keys),
        offsets=np.array(offsets, dtype=np.int64),
        lengths=np.array(lengths, dtype=np.int64),
        source=source,
    )
    logger.info("indexed %d caption records of %s", len(index), name)
    return index


def load_or_build_caption_index(
    captions_path: str | os.PathLike, index_path: str | os.PathLike, *, chunk_bytes: int = 16 << 20
) -> CaptionIndex:
    """The saved index at `index_path` if it matches caption.json, else a fresh one (then saved)."""
    if os.path.exists(index_path):
        try:
            return CaptionIndex.load(index_path, captions_path=captions_path)
        except StaleCaptionIndexError as error:
            logger.warning("rebuilding the caption index: %s", error)
    index = build_caption_index(captions_path, chunk_bytes=chunk_bytes)
    index.save(index_path)
    return index


def _from_table(table: pa.Table, *, path: str, source: _SourceStamp | None) -> CaptionIndex:
    return _from_unsorted(
        path=path,
        keys=_keys_array(table.column("video_id").cast(pa.binary()).to_pylist()),
        offsets=table.column("offset").to_numpy(),
        lengths=table.column("length").to_numpy(),
        source=source,
    )


def _from_unsorted(
    *, path: str, keys: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, source: _SourceStamp | None
) -> CaptionIndex:
    """Sort by key; of repeated keys keep the last in file order (json.loads semantics)."""
    order = np.argsort(keys, kind="stable")  # equal keys stay in file order
    keys = keys[order]
    is_last_of_run = np.append(keys[:-1] != keys[1:], True) if len(keys) else np.zeros(0, dtype=bool)
    if not is_last_of_run.all():
        logger.warning(
            "%s: %d video ids have several records; the last one is kept", path, int((~is_last_of_run).sum())
        )
    rows = order[is_last_of_run]
    return CaptionIndex(
        path=path, keys=keys[is_last_of_run], offsets=offsets[rows], lengths=lengths[rows], source=source
    )


def _is_indexable(key: bytes) -> bool:
    # numpy 'S' arrays are as wide as their longest key and strip trailing NULs (merging 'a' and
    # 'a\x00'); neither kind of key can be a safe video id, so they are left out.
    return len(key) <= _MAX_KEY_BYTES and not key.endswith(b"\x00")


def _keys_array(keys: list[bytes]) -> np.ndarray:
    return np.array(keys, dtype=np.bytes_) if keys else np.zeros(0, dtype="S1")


def _encode_id(video_id: str) -> bytes:
    return video_id.encode("utf-8", "surrogatepass")


def _decode_id(key: bytes) -> str:
    return key.decode("utf-8", "surrogatepass")


def _ids_column(keys: np.ndarray) -> pa.Array:
    """Ids as a Parquet string column, or binary if some id is not valid UTF-8 (lone surrogates)."""
    binary = pa.array(keys.tolist(), type=pa.binary())
    try:
        return binary.cast(pa.string())
    except pa.ArrowInvalid:
        return binary


def _read_stamp(table: pa.Table, path: str | os.PathLike) -> dict:
    metadata = table.schema.metadata or {}
    if _METADATA_KEY not in metadata:
        raise ValueError(f"{os.fspath(path)} is not a caption index written by CaptionIndex.save")
    stamp = json.loads(metadata[_METADATA_KEY])
    if stamp.get("version") != _FORMAT_VERSION:
        raise StaleCaptionIndexError(f"{os.fspath(path)} has index format {stamp.get('version')}; rebuild it")
    return stamp


def parse_caption_record(data: bytes, video_id: str) -> dict:
    """One record's bytes (its extent in caption.json) as json.loads gives it; CaptionError if not an object."""
    return _parse_record(data, video_id)


def _parse_record(data: bytes, video_id: str) -> dict:
    try:
        record = json.loads(data.decode("utf-8", "replace"), strict=False)
    except json.JSONDecodeError as error:
        raise CaptionError("malformed_captions", f"record of {video_id!r} is not JSON: {error}") from None
    if not isinstance(record, dict):
        raise CaptionError("malformed_captions", f"record of {video_id!r} is a {type(record).__name__}")
    return record


def read_caption_record(
    captions_path: str | os.PathLike, offset: int, length: int, video_id: str = ""
) -> dict:
    """One record read by its byte extent (from `CaptionIndex.extent`), without loading an index.

    Shard tasks get the extents in the plan, so each task reads only its videos' bytes.
    """
    with open(captions_path, "rb") as file:
        file.seek(offset)
        return _parse_record(file.read(length), video_id)
