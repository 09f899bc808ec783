"""The sharding job without Ray: every shard in this process, one after another.

For small local runs (benchmarks, trying settings on a few videos) where starting a cluster costs
more than the work. Same plan, shard task and commit protocol as the Ray job, so the output is the
same and a later Ray run resumes it.
"""

from __future__ import annotations

from pipelines.sharding.job import ShardingConfig, committed_rows, shard_task_for
from pipelines.sharding.manifest import manifest_after_run, manifest_before_run, write_consolidated_manifest
from pipelines.sharding.plan import load_or_create_plan
from pipelines.sharding.shard_task import ShardReport, process_shard
from pipelines.storage import open_storage


def shard_in_process(config: ShardingConfig) -> list[ShardReport]:
    storage = open_storage(config.out)
    plan, _ = load_or_create_plan(storage, config.source, config.selection, config.decoding, config.layout)
    before = manifest_before_run(storage)
    reports = [
        process_shard(shard_task_for(plan, shard, config), storage)
        for shard in range(plan.num_shards)
        if shard not in before.parts
    ]
    manifest = manifest_after_run(storage, before, committed_rows(reports))
    if not manifest.consolidated_current:
        write_consolidated_manifest(storage, manifest)
    return reports
