"""The sharding job on Ray: plan once, one task per incomplete shard, bounded in flight, then a summary.

Resume is the same call: complete shards (manifest part present) are skipped and the others
are redone whole, so a crash at any point loses and duplicates nothing. Tasks return the rows they
committed, so the end of the job reads no manifest part back (see pipelines/sharding/manifest.py).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

import pyarrow as pa
import ray
from tqdm import tqdm

from pipelines.failpoints import failpoint_runtime_env
from pipelines.howto100m import SubsetConfig
from pipelines.ray_cluster import connect_to_ray
from pipelines.sharding.manifest import (
    ManifestSnapshot,
    manifest_after_run,
    manifest_before_run,
    manifest_with_committed,
    write_consolidated_manifest,
)
from pipelines.sharding.plan import Plan, ShardLayoutConfig, SourceConfig, load_or_create_plan
from pipelines.sharding.shard_task import ShardReport, ShardTask, process_shard
from pipelines.sharding.summary import ShardingSummary, summarize
from pipelines.storage import Storage, open_storage
from pipelines.video import DecodeConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    ray_address: str = ""
    """Ray cluster to run on: "" = the one this job was submitted to (or a new local one); "auto"; host:port."""
    max_in_flight: int = 0  # shard tasks submitted at once; 0 = 2 x the cluster's CPUs
    task_retries: int = 3  # Ray retries of a shard task whose worker or node died
    gpus_per_task: float = 0.0  # with --decoder nvdec: the share of a GPU each shard task needs (e.g. 0.125)


@dataclass(frozen=True, kw_only=True)
class ShardingConfig:
    """Shard a HowTo100M collection into WebDataset tars of 1 fps JPEG frames + ASR captions."""

    source: SourceConfig
    out: str  # local folder or s3://bucket/prefix
    selection: SubsetConfig = field(default_factory=SubsetConfig)
    decoding: DecodeConfig = field(default_factory=DecodeConfig)
    layout: ShardLayoutConfig = field(default_factory=ShardLayoutConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    consolidate_every_s: float = 600.0
    """How often a running job rewrites manifest.parquet from the rows its tasks returned: a resume after
    a crash reads only the parts committed since, one GET each (~6 ms per part on a loopback store)."""


class ShardingIncompleteError(RuntimeError):
    """Some shards could not be committed; rerunning the same command retries them."""


def run_sharding_job(config: ShardingConfig) -> ShardingSummary:
    _task_resources(config)  # a bad resource request stops here, before any planning
    storage = open_storage(config.out)  # fails fast, with what to fix, if the store is unreachable
    plan, created = load_or_create_plan(
        storage, config.source, config.selection, config.decoding, config.layout
    )
    before = manifest_before_run(storage)
    pending = [shard for shard in range(plan.num_shards) if shard not in before.parts]
    print(
        f"plan {plan.digest}: {len(plan.videos)} videos in {plan.num_shards} shards "
        f"({'new' if created else 'resumed'}; {len(before.parts)} complete, {len(pending)} to do) -> {storage.url}",
        flush=True,
    )
    started = time.monotonic()
    reports, errors = _run_shard_tasks(plan, pending, config, storage, before)
    wall_seconds = time.monotonic() - started
    manifest = manifest_after_run(storage, before, committed_rows(reports))
    if not manifest.consolidated_current:
        write_consolidated_manifest(storage, manifest)
    summary = summarize(storage, plan, manifest.table, reports, wall_seconds=wall_seconds)
    print(summary.render(), flush=True)
    summary.save(storage)
    if errors:
        details = "; ".join(f"shard {shard}: {error}" for shard, error in sorted(errors.items())[:5])
        raise ShardingIncompleteError(
            f"{len(errors)} shard(s) not committed ({details}). Rerun the same command to retry them."
        )
    return summary


def _task_resources(config: ShardingConfig) -> dict:
    # ffmpeg runs one thread per video: one video per core is the fastest CPU layout. NVDEC tasks
    # also hold a share of a GPU, so Ray only places them on GPU nodes and never oversubscribes one.
    if config.decoding.decoder == "nvdec" and config.ray.gpus_per_task <= 0:
        raise ValueError("--decoder nvdec needs --gpus-per-task > 0 (e.g. 0.125: eight shard tasks per GPU)")
    return {"num_cpus": 1, "num_gpus": config.ray.gpus_per_task}


def committed_rows(reports: list[ShardReport]) -> dict[int, pa.Table]:
    return {report.shard: report.manifest for report in reports}


def _run_shard_tasks(
    plan: Plan, pending: list[int], config: ShardingConfig, storage: Storage, before: ManifestSnapshot
) -> tuple[list[ShardReport], dict[int, str]]:
    _connect(config.ray.ray_address)
    remote = ray.remote(_process_shard_remote).options(
        **_task_resources(config),
        max_retries=config.ray.task_retries,
        retry_exceptions=False,  # only system failures (a dead worker or node) are retried by Ray
        runtime_env=failpoint_runtime_env(),
    )
    limit = config.ray.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    queue = list(pending)
    in_flight: dict[ray.ObjectRef, int] = {}
    reports: list[ShardReport] = []
    errors: dict[int, str] = {}
    total = sum(len(plan.shard_videos(s)) for s in pending)
    consolidated_at = time.monotonic()
    # In a log (ray job output is not a terminal) every refresh is a new line: refresh less often there.
    with tqdm(total=total, unit="video", mininterval=1.0 if sys.stderr.isatty() else 10.0) as bar:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                shard = queue.pop(0)
                in_flight[remote.remote(shard_task_for(plan, shard, config), storage)] = shard
            finished, _ = ray.wait(list(in_flight), num_returns=1)
            shard = in_flight.pop(finished[0])
            try:
                report = ray.get(finished[0])
            except Exception as error:  # one shard's failure must not stop the others
                errors[shard] = f"{type(error).__name__}: {str(error).splitlines()[-1] if str(error) else ''}"
                log.error("shard %d failed: %s", shard, error)
                continue
            reports.append(report)
            if time.monotonic() - consolidated_at >= config.consolidate_every_s:
                write_consolidated_manifest(storage, manifest_with_committed(before, committed_rows(reports)))
                consolidated_at = time.monotonic()
            bar.update(report.ok + report.failed)
            bar.set_postfix(
                ok=sum(r.ok for r in reports), failed=sum(r.failed for r in reports), refresh=False
            )
    return reports, errors


def _process_shard_remote(task: ShardTask, storage: Storage) -> ShardReport:
    return process_shard(task, storage)


def shard_task_for(plan: Plan, shard: int, config: ShardingConfig) -> ShardTask:
    return ShardTask(
        shard=shard,
        shard_key=plan.shard_key(shard),
        videos=tuple(plan.shard_videos(shard)),
        videos_dir=config.source.videos,
        captions_path=config.source.captions,
        decode=config.decoding,
    )


def _connect(address: str) -> None:
    connect_to_ray(address)
