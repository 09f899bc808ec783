"""One shard, start to commit: decode each planned video, write the tar, upload it, write the manifest part.

Pure library code (no Ray): the Ray job wraps `process_shard` in a task. A failing video becomes
a manifest row with a reason and the shard goes on; only infrastructure errors (the store is
unreachable, the disk is full) escape, and then nothing is committed for this shard.
"""

from __future__ import annotations

import resource
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipelines.failpoints import failpoint
from pipelines.howto100m import (
    CaptionError,
    CaptionSegments,
    clean_captions,
    clip_captions,
    parse_caption_record,
)
from pipelines.sharding.manifest import (
    STATUS_FAILED,
    STATUS_OK,
    ManifestRow,
    manifest_key,
    manifest_part_bytes,
    manifest_table,
)
from pipelines.sharding.plan import PlannedVideo
from pipelines.sharding.sources import VideoSource, open_source_file, open_video_source
from pipelines.sharding.tar_writer import ShardTarWriter
from pipelines.storage import ObjectNotFound, Storage
from pipelines.video import DecodeConfig, DecodedVideo, VideoDecodeError, decode_frames_at_1fps

ATTEMPTS_PREFIX = "_attempts/"


@dataclass(frozen=True, kw_only=True)
class ShardTask:
    shard: int
    shard_key: str  # where the tar goes, relative to the output root
    videos: tuple[PlannedVideo, ...]
    videos_dir: str  # local folder or s3:// prefix (SourceConfig.videos)
    captions_path: str  # local path or s3:// URL of caption.json (SourceConfig.captions)
    decode: DecodeConfig


@dataclass(frozen=True, kw_only=True)
class ShardReport:
    shard: int
    ok: int
    failed: int
    frames: int
    video_seconds: float  # decoded duration of the ok videos
    cpu_seconds: float  # this task's CPU time, its ffmpeg children included
    wall_seconds: float
    peak_rss_bytes: int  # the worker process (Ray reuses workers, so: its peak so far); ffmpeg runs beside it
    tar_bytes: int
    manifest: pa.Table  # the rows of the part it committed: the job keeps them, it reads no part back


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    row: ManifestRow
    sample: tuple[dict, list[bytes]] | None  # (json metadata, jpegs) for ok videos


def process_shard(task: ShardTask, storage: Storage) -> ShardReport:
    started, cpu_before = time.monotonic(), _cpu_seconds()
    attempts = _record_attempt(storage, task.shard)
    rows: list[ManifestRow] = []
    captions = _CaptionSource(*open_source_file(task.captions_path))
    with (
        tempfile.TemporaryDirectory(prefix=f"shard-{task.shard:06d}-") as scratch,
        open_video_source(task.videos_dir) as videos,
    ):
        tar_path = Path(scratch) / "shard.tar"
        with ShardTarWriter(tar_path) as writer:
            for video in task.videos:
                outcome = _process_video(video, task, attempts, videos, captions)
                row = outcome.row
                if outcome.sample is not None:
                    metadata, jpegs = outcome.sample
                    row = _with_bytes(row, writer.add_sample(row.key, metadata, jpegs))
                rows.append(row)
        tar_bytes = _publish_tar(storage, task.shard_key, tar_path, rows)
    failpoint("after_tar_upload")
    manifest = manifest_table(rows)
    storage.write_bytes(manifest_key(task.shard), manifest_part_bytes(manifest))  # the commit marker
    return _report(task.shard, manifest, rows, started, cpu_before, tar_bytes)


def _publish_tar(storage: Storage, key: str, tar_path: Path, rows: list[ManifestRow]) -> int:
    """Uploads the tar (atomic: visible whole or not at all) and returns its size. A shard whose videos all
    failed gets no tar, since an empty one breaks WebDataset readers ("No samples found"); its manifest
    part still commits it. An earlier attempt's tar of this shard is removed then, so none is left stale."""
    if not any(row.status == STATUS_OK for row in rows):
        storage.delete(key)
        return 0
    storage.upload_file(key, tar_path)
    return tar_path.stat().st_size


@dataclass(frozen=True)
class _CaptionSource:
    storage: Storage  # the folder (or s3:// prefix) holding caption.json
    key: str

    def read_record(self, video: PlannedVideo) -> dict:
        """Only this video's bytes of caption.json (a Range GET on S3), by the extent in the plan."""
        data = self.storage.read_range(self.key, video.caption_offset, video.caption_length)
        return parse_caption_record(data, video.video_id)


def _process_video(
    video: PlannedVideo, task: ShardTask, attempts: int, videos: VideoSource, caption_source: _CaptionSource
) -> _Outcome:
    if video.planned_failure:
        return _failed(video, task, attempts, video.planned_failure, _planned_detail(video))
    try:
        captions, caption_issues = clean_captions(caption_source.read_record(video))
    except CaptionError as error:
        return _failed(video, task, attempts, error.reason, error.detail)
    cpu_before = _children_cpu_seconds()
    try:
        decoded = _decode(videos, video.video_path, task.decode)
    except VideoDecodeError as error:
        return _failed(
            video, task, attempts, error.reason, error.detail, cpu=_children_cpu_seconds() - cpu_before
        )
    cpu = _children_cpu_seconds() - cpu_before
    try:
        captions = clip_captions(captions, decoded.duration_s)
    except CaptionError as error:
        return _failed(video, task, attempts, error.reason, error.detail, decoded=decoded, cpu=cpu)
    row = ManifestRow(
        video_id=video.video_id,
        shard=task.shard_key,
        key=video.video_id,  # is_safe_video_id() guarantees a valid tar member / WebDataset key
        status=STATUS_OK,
        reason="",
        detail=_issues_detail(caption_issues),
        duration_s=decoded.duration_s,
        num_frames=len(decoded.jpegs),
        num_captions=len(captions.text),
        bytes=0,
        decode_seconds=decoded.decode_seconds,
        cpu_seconds=cpu,
        attempts=attempts,
    )
    return _Outcome(
        row=row, sample=(sample_metadata(video, decoded, captions, caption_issues), decoded.jpegs)
    )


def _decode(videos: VideoSource, video_path: str, config: DecodeConfig) -> DecodedVideo:
    try:
        with videos.local_file(video_path) as path:
            try:
                return decode_frames_at_1fps(path, config)
            except VideoDecodeError as error:  # name the source in the manifest, not a spooled copy
                raise VideoDecodeError(
                    error.reason, error.detail.replace(str(path), videos.uri(video_path))
                ) from None
    except ObjectNotFound:  # deleted from the store since planning: the same code a vanished local file gets
        raise VideoDecodeError("missing_file", f"no object {videos.uri(video_path)}") from None


def sample_metadata(
    video: PlannedVideo, decoded: DecodedVideo, captions: CaptionSegments, caption_issues: dict[str, int]
) -> dict:
    """The sample's `json` member: the shard contract between sharding and training."""
    info = decoded.info
    return {
        "video_id": video.video_id,
        "source": {
            "path": video.video_path,
            "category_1": video.category_1,
            "category_2": video.category_2,
            "rank": video.rank,
            "task_id": video.task_id,
            "codec": info.codec,
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
            "has_audio": info.has_audio,
            "container_duration_s": info.container_duration_s,
        },
        "duration_s": decoded.duration_s,
        "num_frames": len(decoded.jpegs),
        "frame_timestamps_s": list(decoded.timestamps_s),
        "width": decoded.width,
        "height": decoded.height,
        "captions": {"start": list(captions.start), "end": list(captions.end), "text": list(captions.text)},
        "caption_issues": caption_issues,
    }


def _failed(
    video: PlannedVideo,
    task: ShardTask,
    attempts: int,
    reason: str,
    detail: str,
    *,
    decoded: DecodedVideo | None = None,
    cpu: float = 0.0,
) -> _Outcome:
    row = ManifestRow(
        video_id=video.video_id,
        shard=task.shard_key,
        key="",
        status=STATUS_FAILED,
        reason=reason,
        detail=detail[:500],
        duration_s=decoded.duration_s if decoded else 0.0,
        num_frames=len(decoded.jpegs) if decoded else 0,
        num_captions=0,
        bytes=0,
        decode_seconds=decoded.decode_seconds if decoded else 0.0,
        cpu_seconds=cpu,
        attempts=attempts,
    )
    return _Outcome(row=row, sample=None)


def _planned_detail(video: PlannedVideo) -> str:
    return {
        "unsafe_id": "video id is not [A-Za-z0-9_-]{1,128}: it cannot be a file or tar member name safely",
        "not_in_metadata": "id has captions but no row in the metadata CSV",
        "missing_file": "no <id>.mp4|.webm|.mkv under the videos folder",
        "no_captions": "id has no record in caption.json",
    }.get(video.planned_failure, "")


def _issues_detail(issues: dict[str, int]) -> str:
    found = {kind: count for kind, count in sorted(issues.items()) if count}
    return ", ".join(f"{kind}={count}" for kind, count in found.items())


def _with_bytes(row: ManifestRow, written: int) -> ManifestRow:
    return ManifestRow(**{**row.__dict__, "bytes": written})


def _record_attempt(storage: Storage, shard: int) -> int:
    """Leaves a marker per start of this shard and returns how many starts there have been."""
    prefix = f"{ATTEMPTS_PREFIX}{shard:06d}/"
    storage.write_bytes(f"{prefix}{time.time_ns()}-{uuid.uuid4().hex[:8]}", b"")
    return len(storage.list(prefix))


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + _children_cpu_seconds()


def _report(
    shard: int, manifest: pa.Table, rows: list[ManifestRow], started: float, cpu_before: float, tar_bytes: int
) -> ShardReport:
    ok_rows = [r for r in rows if r.status == STATUS_OK]
    return ShardReport(
        shard=shard,
        ok=len(ok_rows),
        failed=len(rows) - len(ok_rows),
        frames=sum(r.num_frames for r in ok_rows),
        video_seconds=sum(r.duration_s for r in ok_rows),
        cpu_seconds=_cpu_seconds() - cpu_before,
        wall_seconds=time.monotonic() - started,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
        tar_bytes=tar_bytes,
        manifest=manifest,
    )


__all__ = ["ShardReport", "ShardTask", "process_shard", "sample_metadata"]
