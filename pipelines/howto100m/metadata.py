"""`HowTo100M_v1.csv`: one row per video with its wikiHow categories and search rank/task."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

logger = logging.getLogger(__name__)

METADATA_COLUMNS = ("video_id", "category_1", "category_2", "rank", "task_id")


@dataclass(frozen=True, kw_only=True)
class VideoMetadata:
    video_id: str
    category_1: str  # top-level wikiHow category, e.g. "Food and Entertaining"
    category_2: str  # second-level wikiHow category
    rank: int | None  # YouTube search rank of the video for its task query; None if absent/unparsable
    task_id: int | None  # HowTo100M task id; None if absent/unparsable


def read_metadata_csv(path: str | os.PathLike) -> dict[str, VideoMetadata]:
    """Read `HowTo100M_v1.csv` into {video_id: VideoMetadata}.

    Blank rows, rows with a different number of fields than the header and rows without a
    video id are skipped, and duplicated ids keep their first row; each kind is logged once with
    its count. Ids are not validated here: unsafe ids are kept so the job can record them.
    """
    with open(path, "rb") as file:
        return read_metadata_stream(file, name=os.fspath(path))


def read_metadata_stream(file: BinaryIO, *, name: str) -> dict[str, VideoMetadata]:
    """`read_metadata_csv` over a byte stream read once in order (e.g. an S3 object body); `name` is for messages."""
    text = io.TextIOWrapper(file, newline="", encoding="utf-8-sig", errors="replace")
    reader = csv.reader(text)
    header = [column.strip() for column in next(reader, [])]
    columns = _column_positions(header, name)
    metadata, skipped = _parse_rows(reader, columns, width=len(header))
    text.detach()  # the caller owns `file`
    for kind, count in sorted(skipped.items()):
        logger.warning("%s: skipped %d rows (%s)", name, count, kind)
    return metadata


def _column_positions(header: list[str], path: str | os.PathLike) -> dict[str, int | None]:
    if "video_id" not in header:
        raise ValueError(
            f"{path}: the CSV header {header!r} has no 'video_id' column; expected the "
            f"HowTo100M_v1.csv header {','.join(METADATA_COLUMNS)}"
        )
    return {name: (header.index(name) if name in header else None) for name in METADATA_COLUMNS}


def _parse_rows(
    rows: Iterable[list[str]], columns: dict[str, int | None], *, width: int
) -> tuple[dict[str, VideoMetadata], Counter[str]]:
    metadata: dict[str, VideoMetadata] = {}
    skipped: Counter[str] = Counter()
    for row in rows:
        if not any(field.strip() for field in row):
            skipped["blank row"] += 1
        elif len(row) != width:
            skipped[f"field count differs from the header's {width}"] += 1
        else:
            entry = _row_to_metadata(row, columns)
            if not entry.video_id:
                skipped["empty video_id"] += 1
            elif entry.video_id in metadata:
                skipped["duplicate video_id, first row kept"] += 1
            else:
                metadata[entry.video_id] = entry
    return metadata, skipped


def _row_to_metadata(row: list[str], columns: dict[str, int | None]) -> VideoMetadata:
    def field(name: str) -> str:
        position = columns[name]
        return "" if position is None else row[position].strip()

    return VideoMetadata(
        video_id=field("video_id"),
        category_1=field("category_1"),
        category_2=field("category_2"),
        rank=_parse_optional_int(field("rank")),
        task_id=_parse_optional_int(field("task_id")),
    )


def _parse_optional_int(text: str) -> int | None:
    """'12' -> 12, '12.0' -> 12 (pandas writes integer columns with gaps as floats), else None."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None
