"""Which videos of a HowTo100M collection to shard: all, by category, by an id list, capped."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from pipelines.howto100m.ids import is_safe_video_id
from pipelines.howto100m.metadata import VideoMetadata

logger = logging.getLogger(__name__)

# CLIP4Clip (Luo et al. 2021, arXiv 2104.08860, "post-pretraining" section) post-pretrains on
# "HowTo100M-380k": the paper describes it as the ~380k HowTo100M videos of the "Food and
# Entertaining" category (category_1 in HowTo100M_v1.csv). That is our reading of the paper; its
# text could not be re-checked from this environment, and the authors never published the id list
# (ArrowLuo/CLIP4Clip issues #5/#13 decline to release the post-pretrained model; #28 gives 1 fps,
# 12 frames per clip, overlapping captions cleaned then concatenated to <= 32 tokens). So the row
# count of a given download may differ from 380k: check `summary["selected"]`. For another
# definition use subset="categories" with your own `categories`, or an `id_list`.
HOWTO100M_380K_CATEGORIES = ("Food and Entertaining",)

SubsetName = Literal["all", "howto100m-380k", "categories"]
SUBSET_NAMES: tuple[str, ...] = get_args(SubsetName)


@dataclass(frozen=True, kw_only=True)
class SubsetConfig:
    subset: SubsetName = "all"  # "categories" selects by `categories`
    categories: tuple[str, ...] = ()  # category_1 or "category_1/category_2" values, for subset="categories"
    id_list: str | None = None
    """A text file of video ids, one per line ('#' comments); the selection is intersected with it."""
    max_videos: int = 0  # 0 = no cap; else a deterministic pseudo-random sample (hash of seed + id)
    seed: int = 0
    """Which pseudo-random sample --max-videos takes (the same seed selects the same videos)."""

    def __post_init__(self) -> None:
        if self.subset not in SUBSET_NAMES:
            raise ValueError(f"--subset must be one of {SUBSET_NAMES}, got {self.subset!r}")
        if self.subset == "categories" and not self.categories:
            raise ValueError('subset="categories" needs at least one entry in `categories`')
        if self.categories and self.subset != "categories":
            logger.warning(
                'subset categories %s are ignored: subset is %r, not "categories"',
                self.categories,
                self.subset,
            )
        if self.max_videos < 0:
            raise ValueError(f"max_videos must be >= 0 (0 = no cap), got {self.max_videos}")


@dataclass(frozen=True, kw_only=True)
class SubsetSelection:
    # Sorted. Includes ids that will fail (no captions, missing file, unsafe id) so the manifest
    # records them rather than losing them silently.
    video_ids: tuple[str, ...]
    not_in_metadata: tuple[str, ...]  # selected ids with no CSV row (caption-only ids)
    summary: dict[
        str, int
    ]  # counts for a human: csv_rows, caption_records, csv_only, caption_only, selected...


def select_subset(
    metadata: dict[str, VideoMetadata], caption_ids: Iterable[str], config: SubsetConfig
) -> SubsetSelection:
    """The videos `config` selects; the same inputs and config always give the same tuple.

    Universe: for subset="all", the CSV ids plus caption-only ids; for a category subset, the CSV
    rows of those categories. An id list intersects that; `max_videos` then samples it.
    """
    captioned = set(caption_ids)
    matched = _match_by_name(metadata, captioned, config)
    summary = _source_counts(metadata, captioned)
    if config.id_list is not None:
        listed = read_id_list(config.id_list)
        summary["id_list_ids"] = len(listed)
        summary["id_list_unknown"] = _count_unknown_listed(listed, metadata, captioned, config.id_list)
        matched &= listed
    summary["matched"] = len(matched)
    video_ids = tuple(sorted(_sample(matched, config.max_videos, config.seed)))
    not_in_metadata = tuple(video_id for video_id in video_ids if video_id not in metadata)
    summary.update(_selection_counts(video_ids, captioned, not_in_metadata))
    logger.info("subset %r: %s", config.subset, summary)
    return SubsetSelection(video_ids=video_ids, not_in_metadata=not_in_metadata, summary=summary)


def read_id_list(path: str | os.PathLike) -> set[str]:
    """Ids from a text file, one per line; blank lines and '#' comments (whole or trailing) skipped."""
    with open(path, encoding="utf-8", errors="replace") as file:
        return {line.split("#", 1)[0].strip() for line in file} - {""}


def _match_by_name(metadata: dict[str, VideoMetadata], captioned: set[str], config: SubsetConfig) -> set[str]:
    if config.subset == "all":
        return set(metadata) | captioned
    categories = HOWTO100M_380K_CATEGORIES if config.subset == "howto100m-380k" else config.categories
    return _match_categories(metadata, categories)


def _match_categories(metadata: dict[str, VideoMetadata], categories: Iterable[str]) -> set[str]:
    """Rows whose category_1, or "category_1/category_2", is one of `categories`."""
    wanted = {category.strip() for category in categories}
    matched: set[str] = set()
    used: set[str] = set()
    for video_id, row in metadata.items():
        hits = wanted & {row.category_1, f"{row.category_1}/{row.category_2}"}
        if hits:
            matched.add(video_id)
            used |= hits
    if wanted - used:
        known = sorted({row.category_1 for row in metadata.values()})
        logger.warning("categories %s match no CSV row (category_1 values: %s)", sorted(wanted - used), known)
    return matched


def _count_unknown_listed(
    listed: set[str], metadata: dict[str, VideoMetadata], captioned: set[str], path: str | os.PathLike
) -> int:
    unknown = sorted(listed - set(metadata) - captioned)
    if unknown:
        logger.warning(
            "%s: %d listed ids are in neither the CSV nor caption.json and are left out (e.g. %s)",
            path,
            len(unknown),
            unknown[:5],
        )
    return len(unknown)


def _sample(video_ids: set[str], max_videos: int, seed: int) -> set[str]:
    """The `max_videos` ids of smallest hash(seed, id): stable, and a sample of N is inside that of N+1."""
    if max_videos == 0 or len(video_ids) <= max_videos:
        return video_ids
    return set(sorted(video_ids, key=lambda video_id: (_sample_rank(video_id, seed), video_id))[:max_videos])


def _sample_rank(video_id: str, seed: int) -> bytes:
    text = f"{seed}\0{video_id}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=8).digest()


def _source_counts(metadata: dict[str, VideoMetadata], captioned: set[str]) -> dict[str, int]:
    in_csv = set(metadata)
    return {
        "csv_rows": len(in_csv),
        "caption_records": len(captioned),
        "csv_only": len(in_csv - captioned),
        "caption_only": len(captioned - in_csv),
    }


def _selection_counts(
    video_ids: tuple[str, ...], captioned: set[str], not_in_metadata: tuple[str, ...]
) -> dict[str, int]:
    return {
        "selected": len(video_ids),
        "selected_without_captions": sum(video_id not in captioned for video_id in video_ids),
        "selected_not_in_metadata": len(not_in_metadata),
        "selected_unsafe_ids": sum(not is_safe_video_id(video_id) for video_id in video_ids),
    }
