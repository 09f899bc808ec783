"""What a person wants to know when the job ends: what was done, what failed and why, how fast.

The totals come from the manifest, so every run (a resume, or a rerun with nothing left to do) states
the whole output. Per-run figures (wall time, throughput, peak memory) describe one run each: they are
appended to the `runs` list kept in summary.json, never overwritten by a later run.
"""

from __future__ import annotations

import json
import logging
import textwrap
import time
from collections import Counter
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sharding.manifest import CONSOLIDATED_MANIFEST_KEY, MANIFEST_PREFIX, STATUS_OK
from pipelines.sharding.plan import PLAN_KEY, Plan
from pipelines.sharding.shard_task import ShardReport
from pipelines.storage import ObjectNotFound, Storage

SUMMARY_KEY = "summary.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunFigures:
    """One run of the job: only the shards it processed (shards already complete are not counted)."""

    started_at: str  # UTC, ISO 8601
    shards: int
    wall_seconds: float
    video_seconds: float
    cpu_seconds: float
    video_seconds_per_cpu_second: float
    video_seconds_per_wall_second: float
    peak_task_rss_mib: float


@dataclass(frozen=True, kw_only=True)
class ShardingSummary:
    out: str
    # the whole output, from the manifest:
    planned_videos: int
    manifest_rows: int
    complete_shards: int
    total_shards: int
    ok_videos: int
    failed_by_reason: dict[str, int]
    frames: int
    video_hours: float
    runs: tuple[RunFigures, ...]  # every run so far, oldest first; this run last

    @property
    def this_run(self) -> RunFigures:
        return self.runs[-1]

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
        lines.append(f"frames      {self.frames} (1 fps), {self.video_hours:.3f} h of video")
        run = self.this_run
        if run.shards == 0:
            lines.append("this run    no shard left to do")
        worked = [r for r in self.runs if r.shards]
        if (
            worked
        ):  # the figures of the last run that sharded anything (this one, unless it had nothing to do)
            last = worked[-1]
            label = "this run   " if last is run else f"run {self.runs.index(last) + 1}/{len(self.runs)}  "
            lines += [
                f"{label} {last.shards} shards, {last.video_seconds:.0f} s of video in {last.wall_seconds:.1f} s wall",
                f"throughput  {last.video_seconds_per_cpu_second:.1f} s of video per CPU-second, "
                f"{last.video_seconds_per_wall_second:.1f} per wall-second",
                f"peak memory {last.peak_task_rss_mib:.0f} MiB per shard task worker (its ffmpeg child not included)",
            ]
        lines.append(
            f"plan {PLAN_KEY}, manifest {MANIFEST_PREFIX} ({CONSOLIDATED_MANIFEST_KEY} in one file), "
            f"shards shards/ under {self.out}"
        )
        return "\n".join(lines)

    def save(self, storage: Storage) -> None:
        storage.write_bytes(SUMMARY_KEY, json.dumps(asdict(self), indent=2).encode())


def summarize(
    storage: Storage,
    plan: Plan,
    manifest: pa.Table,
    reports: list[ShardReport],
    *,
    wall_seconds: float,
    started_at: float,
) -> ShardingSummary:
    ok = pc.equal(manifest["status"], STATUS_OK)
    ok_rows = manifest.filter(ok)
    failed_reasons = Counter(manifest.filter(pc.invert(ok))["reason"].to_pylist())
    run_video = sum(r.video_seconds for r in reports)
    run_cpu = sum(r.cpu_seconds for r in reports)
    run = RunFigures(
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        shards=len(reports),
        wall_seconds=wall_seconds,
        video_seconds=run_video,
        cpu_seconds=run_cpu,
        video_seconds_per_cpu_second=run_video / run_cpu if run_cpu else 0.0,
        video_seconds_per_wall_second=run_video / wall_seconds if wall_seconds else 0.0,
        peak_task_rss_mib=max((r.peak_rss_bytes for r in reports), default=0) / 2**20,
    )
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
        runs=(*earlier_runs(storage), run),
    )


def earlier_runs(storage: Storage) -> list[RunFigures]:
    """The runs recorded in an existing summary.json (one written before `runs` existed counts as one run)."""
    try:
        saved = json.loads(storage.read_bytes(SUMMARY_KEY))
    except ObjectNotFound:
        return []
    except ValueError:
        log.warning(
            "%s is not JSON; the figures of earlier runs are not carried over", storage.uri(SUMMARY_KEY)
        )
        return []
    if "runs" in saved:
        return [RunFigures(**run) for run in saved["runs"]]
    if saved.get("run_shards"):  # the single-run layout of earlier versions
        return [
            RunFigures(
                started_at="",
                shards=saved["run_shards"],
                wall_seconds=saved["run_wall_seconds"],
                video_seconds=saved["run_video_seconds"],
                cpu_seconds=saved["run_cpu_seconds"],
                video_seconds_per_cpu_second=saved["video_seconds_per_cpu_second"],
                video_seconds_per_wall_second=saved["video_seconds_per_wall_second"],
                peak_task_rss_mib=saved["peak_task_rss_mib"],
            )
        ]
    return []
