"""The plan: a deterministic assignment of every selected video to a shard, persisted once.

`plan.parquet` carries everything a shard task needs (the video's file, the byte extent of its
record in caption.json, its metadata, a failure already known at plan time) so tasks never
scan the source, and it carries a digest of the output-affecting config so a rerun with other
settings cannot silently mix two datasets in one output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config_values import PositiveInt
from pipelines.howto100m import (
    CaptionIndex,
    SubsetConfig,
    index_caption_stream,
    is_safe_video_id,
    select_subset,
)
from pipelines.sharding.caption_index_store import load_or_build_caption_index
from pipelines.sharding.sources import (
    captions_identity,
    check_sources_exist,
    is_object_store_url,
    list_source_videos,
    open_source_file,
    read_source_metadata,
)
from pipelines.storage import PreconditionFailed, Storage
from pipelines.video import DecodeConfig

log = logging.getLogger(__name__)

PLAN_KEY = "plan.parquet"


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Each a local path or s3://bucket/prefix (the same endpoint and credentials as --out)."""

    videos: str  # folder (or s3:// prefix) of <video_id>.mp4|.webm|.mkv files, sub-folders allowed
    metadata: str  # HowTo100M_v1.csv
    captions: str  # caption.json (the ASR captions)


@dataclass(frozen=True, kw_only=True)
class ShardLayoutConfig:
    videos_per_shard: PositiveInt = 32  # ~32 x 400 s x ~12 KB/frame = ~150 MB tars for HowTo100M
    shard_name: str = "howto100m"  # tar names: shards/<shard_name>-000123.tar


@dataclass(frozen=True, kw_only=True)
class PlannedVideo:
    shard: int
    video_id: str
    video_path: str  # relative to SourceConfig.videos ("" if no file)
    caption_offset: int  # byte extent of this video's record in caption.json (-1 if none)
    caption_length: int
    category_1: str
    category_2: str
    rank: int | None
    task_id: int | None
    planned_failure: str  # reason code known before decoding ("" if none)


PLAN_SCHEMA = pa.schema(
    [
        ("shard", pa.int32()),
        ("video_id", pa.string()),
        ("video_path", pa.string()),
        ("caption_offset", pa.int64()),
        ("caption_length", pa.int64()),
        ("category_1", pa.string()),
        ("category_2", pa.string()),
        ("rank", pa.int64()),
        ("task_id", pa.int64()),
        ("planned_failure", pa.string()),
    ]
)


class PlanMismatchError(ValueError):
    """The output folder already holds a plan made with other settings."""


@dataclass(frozen=True)
class Plan:
    videos: tuple[PlannedVideo, ...]
    digest: str
    config: dict  # the output-affecting config the digest covers (JSON-able)

    @property
    def num_shards(self) -> int:
        return 1 + max((v.shard for v in self.videos), default=-1)

    def shard_videos(self, shard: int) -> list[PlannedVideo]:
        return [v for v in self.videos if v.shard == shard]

    def shard_key(self, shard: int) -> str:
        return f"shards/{self.config['layout']['shard_name']}-{shard:06d}.tar"


def plan_config(
    source: SourceConfig, subset: SubsetConfig, decode: DecodeConfig, layout: ShardLayoutConfig
) -> dict:
    """What determines the output. caption.json's identity is in it because the plan stores byte offsets into
    it; it is the content's (size + ETag or head/tail hash), so a byte-identical copy or restore resumes."""
    config = {
        "source": {**asdict(source), "captions_identity": captions_identity(source.captions)},
        "subset": asdict(subset),
        "decode": asdict(decode),
        "layout": asdict(layout),
    }
    return json.loads(json.dumps(config, default=str))  # the JSON form, as it is stored and read back


def config_digest(config: dict) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def build_plan(
    source: SourceConfig,
    subset: SubsetConfig,
    decode: DecodeConfig,
    layout: ShardLayoutConfig,
    *,
    index_store: Storage | None = None,
) -> Plan:
    """index_store: where the caption index is kept and reused (the output storage); None scans every time."""
    check_sources_exist(source.videos, source.metadata, source.captions)
    config = plan_config(source, subset, decode, layout)
    files = list_source_videos(source.videos)  # first: an empty s3 prefix stops before the long steps
    metadata = read_source_metadata(source.metadata)
    captions = _caption_index(source, config, index_store)
    selection = select_subset(metadata, captions.ids(), subset)
    not_in_metadata = set(selection.not_in_metadata)
    planned = []
    for position, video_id in enumerate(sorted(set(selection.video_ids) | not_in_metadata)):
        meta = metadata.get(video_id)
        offset, length = captions.extent(video_id) if video_id in captions else (-1, 0)
        planned.append(
            PlannedVideo(
                shard=position // layout.videos_per_shard,
                video_id=video_id,
                video_path=files.get(video_id, "") if is_safe_video_id(video_id) else "",
                caption_offset=offset,
                caption_length=length,
                category_1=meta.category_1 if meta else "",
                category_2=meta.category_2 if meta else "",
                rank=meta.rank if meta else None,
                task_id=meta.task_id if meta else None,
                planned_failure=_planned_failure(video_id, meta is not None, files, video_id in captions),
            )
        )
    return Plan(videos=tuple(planned), digest=config_digest(config), config=config)


def _caption_index(source: SourceConfig, config: dict, index_store: Storage | None) -> CaptionIndex:
    identity = config["source"]["captions_identity"]
    if index_store is not None:
        return load_or_build_caption_index(index_store, source.captions, identity)
    log.info("indexing %s (one streaming pass)", source.captions)
    storage, key = open_source_file(source.captions)
    with contextlib.closing(storage.open_read(key)) as stream:
        return index_caption_stream(stream, name=source.captions)


def _planned_failure(video_id: str, has_metadata: bool, files: Mapping[str, str], has_captions: bool) -> str:
    # Checked in this order so an unsafe id is never looked up as a path.
    if not is_safe_video_id(video_id):
        return "unsafe_id"
    if not has_metadata:
        return "not_in_metadata"
    if video_id not in files:
        return "missing_file"
    if not has_captions:
        return "no_captions"
    return ""


def plan_to_bytes(plan: Plan) -> bytes:
    table = pa.Table.from_pylist([asdict(v) for v in plan.videos], schema=PLAN_SCHEMA)
    table = table.replace_schema_metadata(
        {"digest": plan.digest, "config": json.dumps(plan.config, sort_keys=True, default=str)}
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def plan_from_bytes(data: bytes) -> Plan:
    table = pq.read_table(io.BytesIO(data))
    meta = table.schema.metadata or {}
    videos = tuple(PlannedVideo(**row) for row in table.to_pylist())
    return Plan(videos=videos, digest=meta[b"digest"].decode(), config=json.loads(meta[b"config"]))


def load_or_create_plan(
    storage: Storage,
    source: SourceConfig,
    subset: SubsetConfig,
    decode: DecodeConfig,
    layout: ShardLayoutConfig,
) -> tuple[Plan, bool]:
    """The output's plan, created on first run; returns (plan, created). Refuses a changed config."""
    check_sources_exist(source.videos, source.metadata, source.captions)
    wanted = plan_config(source, subset, decode, layout)
    if storage.exists(PLAN_KEY):
        existing = plan_from_bytes(storage.read_bytes(PLAN_KEY))
        _refuse_if_changed(existing, wanted, storage.uri(PLAN_KEY))
        return existing, False
    plan = build_plan(source, subset, decode, layout, index_store=storage)
    try:
        storage.write_bytes(PLAN_KEY, plan_to_bytes(plan), if_none_match=True)
    except PreconditionFailed:
        # Another driver wrote the plan between our check and our write: theirs wins if compatible.
        existing = plan_from_bytes(storage.read_bytes(PLAN_KEY))
        _refuse_if_changed(existing, wanted, storage.uri(PLAN_KEY))
        return existing, False
    return plan, True


def _refuse_if_changed(existing: Plan, wanted: dict, where: str) -> None:
    wanted = _in_the_form_of(existing, wanted)
    if existing.digest == config_digest(wanted):
        return
    changed = sorted(_diff_paths(existing.config, wanted))
    raise PlanMismatchError(
        f"{where} was made with different settings (digest {existing.digest} != {config_digest(wanted)}); "
        f"changed: {', '.join(changed)}. Rerun with the original settings to resume, or choose a new --out."
    )


def _in_the_form_of(existing: Plan, wanted: dict) -> dict:
    """Plans made before captions were identified by content recorded a local caption.json's size and
    mtime: compare such a plan with the file's size and mtime now, so it resumes while both still hold
    (and a refusal names what changed). Any other plan is compared with `wanted` as it is."""
    captions = wanted["source"]["captions"]
    if "captions_mtime_ns" not in existing.config.get("source", {}) or is_object_store_url(captions):
        return wanted
    stat = Path(captions).stat()
    source = {key: value for key, value in wanted["source"].items() if key != "captions_identity"}
    legacy_source = {**source, "captions_bytes": stat.st_size, "captions_mtime_ns": stat.st_mtime_ns}
    return {**wanted, "source": legacy_source}


def _diff_paths(old: dict, new: dict, prefix: str = "") -> list[str]:
    paths = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            paths += _diff_paths(a, b, f"{prefix}{key}.")
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            paths.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return paths
