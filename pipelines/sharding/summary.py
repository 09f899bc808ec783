"""What a person wants to know when the job ends: what was done, what failed and why, how fast."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sharding.manifest import MANIFEST_PREFIX, STATUS_OK
from pipelines.sharding.plan import PLAN_KEY, Plan
from pipelines.sharding.shard_task import ShardReport
from pipelines.storage import Storage

SUMMARY_KEY = "summary.json"


@dataclass(frozen=True, kw_only=True)
class ShardingSummary:
    out: str
    planned_videos: int
    manifest_rows: int
    complete_shards: int
    total_shards: int
    ok_videos: int
    failed_by_reason: dict[str, int]
    frames: int
    video_hours: float
    # this run only (resumed shards that were already complete are not counted):
    run_shards: int
    run_wall_seconds: float
    run_video_seconds: float
    run_cpu_seconds: float
    video_seconds_per_cpu_second: float
    video_seconds_per_wall_second: float
    peak_task_rss_mib: float

    def render(self) -> str:
        failed = sum(self.failed_by_reason.values())
        lines = [
            "",
            f"== sharding summary: {self.out}",
            f"shards      {self.complete_shards}/{self.total_shards} complete",
            f"videos      {self.ok_videos} ok, {failed} failed, {self.manifest_rows}/{self.planned_videos} in manifest",
        ]
        by_count = sorted(self.failed_by_reason.items(), key=lambda item: (-item[1], item[0]))
        reasons = ", ".join(f"{count} {reason}" for reason, count in by_count)
        # a wrapped paragraph: a run with every kind of failure still reads at a glance
        lines += textwrap.wrap(reasons, width=100, initial_indent="  failed    ", subsequent_indent=" " * 12)
        lines += [
            f"frames      {self.frames} (1 fps), {self.video_hours:.3f} h of video",
            f"this run    {self.run_shards} shards, {self.run_video_seconds:.0f} s of video in {self.run_wall_seconds:.1f} s wall",
            f"throughput  {self.video_seconds_per_cpu_second:.1f} s of video per CPU-second, "
            f"{self.video_seconds_per_wall_second:.1f} per wall-second",
            f"peak memory {self.peak_task_rss_mib:.0f} MiB per shard task worker (its ffmpeg child not included)",
            f"plan {PLAN_KEY}, manifest {MANIFEST_PREFIX}, shards shards/ under {self.out}",
        ]
        return "\n".join(lines)

    def save(self, storage: Storage) -> None:
        storage.write_bytes(SUMMARY_KEY, json.dumps(asdict(self), indent=2).encode())


def summarize(
    storage: Storage, plan: Plan, manifest: pa.Table, reports: list[ShardReport], *, wall_seconds: float
) -> ShardingSummary:
    ok = pc.equal(manifest["status"], STATUS_OK)
    ok_rows = manifest.filter(ok)
    failed_reasons = Counter(manifest.filter(pc.invert(ok))["reason"].to_pylist())
    run_video = sum(r.video_seconds for r in reports)
    run_cpu = sum(r.cpu_seconds for r in reports)
    return ShardingSummary(
        out=storage.url,
        planned_videos=len(plan.videos),
        manifest_rows=manifest.num_rows,
        complete_shards=len(set(manifest["shard"].to_pylist())),
        total_shards=plan.num_shards,
        ok_videos=ok_rows.num_rows,
        failed_by_reason=dict(failed_reasons),
        frames=int(pc.sum(ok_rows["num_frames"]).as_py() or 0),
        video_hours=float(pc.sum(ok_rows["duration_s"]).as_py() or 0.0) / 3600,
        run_shards=len(reports),
        run_wall_seconds=wall_seconds,
        run_video_seconds=run_video,
        run_cpu_seconds=run_cpu,
        video_seconds_per_cpu_second=run_video / run_cpu if run_cpu else 0.0,
        video_seconds_per_wall_second=run_video / wall_seconds if wall_seconds else 0.0,
        peak_task_rss_mib=max((r.peak_rss_bytes for r in reports), default=0) / 2**20,
    )
