"""MSVD as CLIP4Clip distributes it: `raw-captions.pkl` ({video_id: [[token, ...], ...]}: ~40 captions per
video), `train_list.txt` / `val_list.txt` / `test_list.txt` (one video id a line) and the raw videos
(`<video_id>.avi`). The pickle is read with an unpickler that builds only dicts, lists and strings."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from pipelines.finetuning.datasets.base import RetrievalSplit, build_split, index_videos, require_file

CAPTIONS_PKL = "raw-captions.pkl"
LISTS = {"train": "train_list.txt", "test": "test_list.txt", "val": "val_list.txt"}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # no class may be built: plain containers only
        raise pickle.UnpicklingError(
            f"{CAPTIONS_PKL} may hold only dicts/lists/strings, found {module}.{name}"
        )


def read_msvd(root: Path, part: str, variant: str) -> RetrievalSplit:
    del variant  # MSVD has one split of each kind
    ids_file = require_file(root / LISTS[part], f"MSVD {part} list")
    ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    raw = require_file(root / CAPTIONS_PKL, "MSVD captions").read_bytes()
    tokenised = _DataOnlyUnpickler(io.BytesIO(raw)).load()
    captions = {
        video_id: [" ".join(c) if isinstance(c, list) else str(c) for c in sentences]
        for video_id, sentences in tokenised.items()
    }
    return build_split(
        dataset="msvd",
        split=part,
        source=f"{LISTS[part]} + {CAPTIONS_PKL}",
        video_ids=ids,
        captions=captions,
        videos=index_videos(root),
    )
