"""What an embedding job embeds, as a flat list of items grouped into parts (the unit of work and commit).

- a folder of videos (any depth): id = the path under the folder without its extension ("a/clip01");
- a fine-tuning dataset in its published layout (`--dataset msrvtt --data-root ...`): the videos of its train
  and test splits, id = the dataset's video id;
- the sharding job's output (`--shards`): the videos its manifest marks ok, one part per shard, read from the
  tar (their 1 fps JPEGs; nothing is decoded again);
- a text file of queries, one per line (blank lines skipped): id = the line number ("line-000012").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipelines.finetuning.datasets import read_split
from pipelines.sharding.manifest import read_manifest
from pipelines.storage import open_storage

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
Kind = Literal["video_file", "shard_video", "text"]


@dataclass(frozen=True, kw_only=True)
class EmbedItem:
    id: str
    kind: Kind
    source: str  # the video file, the shard tar's key under the shards root, or "" for a text
    text: str = ""  # the query (texts only)
    sample_key: str = ""  # the WebDataset __key__ in the tar (shard videos only)


@dataclass(frozen=True, kw_only=True)
class Part:
    name: str  # "videos-000003", "texts-000000": its files' names
    items: tuple[EmbedItem, ...]


def folder_items(folder: str | Path) -> list[EmbedItem]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"--videos {root} is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and not p.is_dir())
    items = [
        EmbedItem(id=p.relative_to(root).with_suffix("").as_posix(), kind="video_file", source=str(p))
        for p in paths
    ]
    return _unique(items, f"--videos {root}")


def dataset_items(dataset: str, data_root: str, variant: str = "9k") -> list[EmbedItem]:
    """Both splits' videos; a video listed in both is embedded once."""
    seen: dict[str, EmbedItem] = {}
    for part in ("train", "test"):
        for item in read_split(dataset, data_root, part, variant).items:
            seen.setdefault(
                item.video_id, EmbedItem(id=item.video_id, kind="video_file", source=str(item.path))
            )
    return sorted(seen.values(), key=lambda item: item.id)


def shard_parts(shards: str) -> list[Part]:
    """One part per shard tar, holding its ok videos (the manifest's rows; failed videos are not in the tar)."""
    manifest = read_manifest(open_storage(shards)).to_pylist()
    if not manifest:
        raise ValueError(
            f"--shards {shards} has no committed manifest parts: is it the sharding job's --out?"
        )
    by_tar: dict[str, list[EmbedItem]] = {}
    for row in manifest:
        if row["status"] == "ok":
            item = EmbedItem(
                id=row["video_id"], kind="shard_video", source=row["shard"], sample_key=row["key"]
            )
            by_tar.setdefault(row["shard"], []).append(item)
    return [
        Part(name=f"shards-{n:06d}", items=tuple(sorted(items, key=lambda i: i.id)))
        for n, (_, items) in enumerate(sorted(by_tar.items()))
    ]


def text_items(path: str | Path) -> list[EmbedItem]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [
        EmbedItem(id=f"line-{number:06d}", kind="text", source="", text=line.strip())
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]


def chunk(items: Sequence[EmbedItem], prefix: str, size: int) -> list[Part]:
    return [
        Part(name=f"{prefix}-{n:06d}", items=tuple(items[start : start + size]))
        for n, start in enumerate(range(0, len(items), size))
    ]


def _unique(items: list[EmbedItem], where: str) -> list[EmbedItem]:
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(
            f"{where}: several videos share the id(s) {duplicates[:5]} (same name, other extension)"
        )
    return items
