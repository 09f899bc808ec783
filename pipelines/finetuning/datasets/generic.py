"""A user's own data: `videos/<video_id>.<ext>` and `captions.csv` with columns `video_id,caption,split`
(split "train" or "test"; several rows per video give several captions)."""

from __future__ import annotations

import csv
from pathlib import Path

from pipelines.finetuning.datasets.base import (
    RetrievalSplit,
    build_split,
    group_captions,
    index_videos,
    require_file,
)

CAPTIONS_CSV = "captions.csv"
_COLUMNS = {"video_id", "caption", "split"}


def read_generic(root: Path, part: str, variant: str) -> RetrievalSplit:
    del variant
    path = require_file(root / CAPTIONS_CSV, "captions csv")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not set(reader.fieldnames or ()) >= _COLUMNS:
            raise ValueError(f"{path} needs the columns {sorted(_COLUMNS)}, has {reader.fieldnames}")
        rows = [row for row in reader if row["split"].strip() == part]
    return build_split(
        dataset="generic",
        split=part,
        source=CAPTIONS_CSV,
        video_ids=[row["video_id"] for row in rows],
        captions=group_captions((row["video_id"], row["caption"]) for row in rows),
        videos=index_videos(root / "videos"),
    )
