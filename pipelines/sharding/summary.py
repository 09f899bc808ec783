"""What a person wants to know when the job ends: what was done, what failed and why, how fast."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sharding.manifest import CONSOLIDATED_MANIFEST_KEY, MANIFEST_PREFIX, STATUS_OK
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
    # the figures of every run that sharded something, oldest first (this one last, if it did): a rerun
    # with nothing left to do keeps the earlier runs' figures instead of overwriting them with zeros
    runs: tuple[dict, ...] = ()

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
            *self._run_lines(),
            f"plan {PLAN_KEY}, manifest {MANIFEST_PREFIX} ({CONSOLIDATED_MANIFEST_KEY} in one file), "
            f"shards shards/ under {self.out}",
        ]
        return "\n".join(lines)

    def _run_lines(self) -> list[str]:
        if not self.run_shards:
            return [
                f"this run    nothing to do: every shard was already complete "
                f"({len(self.runs)} earlier run(s) in {SUMMARY_KEY})"
            ]
        return [
            f"this run    {self.run_shards} shards, {self.run_video_seconds:.0f} s of video in {self.run_wall_seconds:.1f} s wall",
            f"throughput  {self.video_seconds_per_cpu_second:.1f} s of video per CPU-second, "
            f"{self.video_seconds_per_wall_second:.1f} per wall-second",
            f"peak memory {self.peak_task_rss_mib:.0f} MiB per shard task worker (its ffmpeg child not included)",
        ]

    def save(self, storage: Storage) -> None:
        storage.write_bytes(SUMMARY_KEY, json.dumps(asdict(self), indent=2).encode())


def summarize(
    storage: Storage,
    plan: Plan,
    manifest: pa.Table,
    reports: list[ShardReport],
    *,
    wall_seconds: float,
) -> ShardingSummary:
    ok = pc.equal(manifest["status"], STATUS_OK)
    ok_rows = manifest.filter(ok)
    failed_reasons = Counter(manifest.filter(pc.invert(ok))["reason"].to_pylist())
    run_video = sum(r.video_seconds for r in reports)
    run_cpu = sum(r.cpu_seconds for r in reports)
    peak_mib = max((r.peak_rss_bytes for r in reports), default=0) / 2**20
    this_run = {
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "shards": len(reports),
        "wall_seconds": wall_seconds,
        "video_seconds": run_video,
        "cpu_seconds": run_cpu,
        "peak_task_rss_mib": peak_mib,
    }
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
        peak_task_rss_mib=peak_mib,
        runs=(*earlier_runs(storage), *([this_run] if reports else [])),
    )


def earlier_runs(storage: Storage) -> list[dict]:
    """The runs recorded by the summary an earlier run of this job saved (none if there is none)."""
    if not storage.exists(SUMMARY_KEY):
        return []
    saved = json.loads(storage.read_bytes(SUMMARY_KEY))
    if "runs" in saved:
        return list(saved["runs"])
    if saved.get("run_shards"):  # saved before runs were kept apart: its one run
        keys = ("wall_seconds", "video_seconds", "cpu_seconds")
        return [{"shards": saved["run_shards"], **{k: saved[f"run_{k}"] for k in keys},
                 "peak_task_rss_mib": saved.get("peak_task_rss_mib", 0.0)}]  # fmt: skip
    return []
