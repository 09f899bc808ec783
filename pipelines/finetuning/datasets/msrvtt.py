"""MSR-VTT as CLIP4Clip distributes it: `MSRVTT_data.json` (all captions: {"sentences": [{"video_id",
"caption", ...}]}), `MSRVTT_train.9k.csv` / `MSRVTT_train.7k.csv` (column `video_id`: the training videos;
every caption of each is a training pair), `MSRVTT_JSFUSION_test.csv` (`key,vid_key,video_id,sentence`: the
1k-A test set, one caption per video) and the raw videos (`video0.mp4`, ...; any sub-folder)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pipelines.finetuning.datasets.base import (
    RetrievalSplit,
    build_split,
    group_captions,
    index_videos,
    require_file,
)

DATA_JSON = "MSRVTT_data.json"
TRAIN_CSV = {"9k": "MSRVTT_train.9k.csv", "7k": "MSRVTT_train.7k.csv"}
TEST_CSV = "MSRVTT_JSFUSION_test.csv"


def read_msrvtt(root: Path, part: str, variant: str) -> RetrievalSplit:
    """part "train" (variant "9k" or "7k") or "test" (the JSFusion 1k-A split)."""
    videos = index_videos(root)
    if part == "test":
        rows = _read_csv(require_file(root / TEST_CSV, "MSR-VTT test csv"))
        captions = group_captions((row["video_id"], row["sentence"]) for row in rows)
        ids = [row["video_id"] for row in rows]
        return build_split(
            dataset="msrvtt", split="test", source=TEST_CSV, video_ids=ids, captions=captions, videos=videos
        )
    if variant not in TRAIN_CSV:
        raise ValueError(f"MSR-VTT training split {variant!r} is not one of {sorted(TRAIN_CSV)}")
    ids = [row["video_id"] for row in _read_csv(require_file(root / TRAIN_CSV[variant], "MSR-VTT train csv"))]
    sentences = json.loads(require_file(root / DATA_JSON, "MSR-VTT caption json").read_text())["sentences"]
    captions = group_captions((s["video_id"], s["caption"]) for s in sentences)
    return build_split(
        dataset="msrvtt",
        split="train",
        source=f"{TRAIN_CSV[variant]} + {DATA_JSON}",
        video_ids=ids,
        captions=captions,
        videos=videos,
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
