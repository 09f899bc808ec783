"""DiDeMo as video-paragraph retrieval (CLIP4Clip's protocol): `train_data.json` / `test_data.json` (a list
of moments {"video": <file name>, "description", "times", ...}), every video's descriptions concatenated
into one query; the video file is `<video>` plus a container extension (as in CLIP4Clip's copy)."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.finetuning.datasets.base import (
    RetrievalSplit,
    as_paragraphs,
    build_split,
    group_captions,
    index_videos,
    require_file,
)

FILES = {"train": "train_data.json", "val": "val_data.json", "test": "test_data.json"}


def read_didemo(root: Path, part: str, variant: str) -> RetrievalSplit:
    del variant
    moments = json.loads(require_file(root / FILES[part], f"DiDeMo {part} json").read_text())
    videos = index_videos(root)
    # Also accept files named like the id without its own extension ("<id>.mp4" for a "<id>" entry).
    for moment in moments:
        stem = Path(moment["video"]).stem
        if moment["video"] not in videos and stem in videos:
            videos[moment["video"]] = videos[stem]
    return build_split(
        dataset="didemo",
        split=part,
        source=FILES[part],
        video_ids=[m["video"] for m in moments],
        captions=as_paragraphs(group_captions((m["video"], m["description"]) for m in moments)),
        videos=videos,
    )
