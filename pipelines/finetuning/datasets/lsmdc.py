"""LSMDC (Large Scale Movie Description Challenge) annotation csv files, tab-separated:
`clip_id, start_aligned, end_aligned, start_extracted, end_extracted, sentence`; training
`LSMDC16_annos_training.csv`, test `LSMDC16_challenge_1000_publictect.csv` (the 1,000-clip test set);
videos `<movie>/<clip_id>.avi`."""

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

FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
_SENTENCE_COLUMN = 5


def read_lsmdc(root: Path, part: str, variant: str) -> RetrievalSplit:
    del variant
    path = require_file(root / FILES[part], f"LSMDC {part} annotations")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    rows = [row for row in rows if len(row) > _SENTENCE_COLUMN]
    return build_split(
        dataset="lsmdc",
        split=part,
        source=FILES[part],
        video_ids=[row[0] for row in rows],
        captions=group_captions((row[0], row[_SENTENCE_COLUMN]) for row in rows),
        videos=index_videos(root),
    )
