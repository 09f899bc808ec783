"""ActivityNet Captions as video-paragraph retrieval (CLIP4Clip's protocol): `train.json` and `val_1.json`
({video_id: {"duration", "timestamps", "sentences"}}; the test split is val_1), every video's sentences
concatenated into one query; videos `v_<youtube id>.mp4` (any container, any sub-folder)."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.finetuning.datasets.base import (
    RetrievalSplit,
    as_paragraphs,
    build_split,
    index_videos,
    require_file,
)

FILES = {"train": "train.json", "test": "val_1.json"}


def read_activitynet(root: Path, part: str, variant: str) -> RetrievalSplit:
    del variant
    annotations = json.loads(require_file(root / FILES[part], f"ActivityNet {part} json").read_text())
    videos = index_videos(root)
    # Some copies of the videos drop the "v_" of the annotation ids.
    videos.update({f"v_{stem}": path for stem, path in list(videos.items()) if not stem.startswith("v_")})
    return build_split(
        dataset="activitynet",
        split=part,
        source=FILES[part],
        video_ids=list(annotations),
        captions=as_paragraphs({vid: entry["sentences"] for vid, entry in annotations.items()}),
        videos=videos,
    )
