"""The sharding job without Ray: every shard in this process, one after another.

For small local runs (benchmarks, trying settings on a few videos) where starting a cluster costs
more than the work. Same plan, shard task and commit protocol as the Ray job, so the output is the
same and a later Ray run resumes it.
"""

from __future__ import annotations

from pipelines.sharding.job import ShardingConfig, shard_task_for
from pipelines.sharding.manifest import (
    completed_shards,
    drop_consolidated_manifest,
    load_manifest,
    write_consolidated_manifest,
)
from pipelines.sharding.plan import load_or_create_plan
from pipelines.sharding.shard_task import ShardReport, process_shard
from pipelines.storage import open_storage


def shard_in_process(config: ShardingConfig) -> list[ShardReport]:
    storage = open_storage(config.out)
    plan, _ = load_or_create_plan(storage, config.source, config.selection, config.decoding, config.layout)
    done = completed_shards(storage)
    if len(done) < plan.num_shards:
        drop_consolidated_manifest(storage)
    reports = []
    for shard in range(plan.num_shards):
        if shard in done:
            continue
        task = shard_task_for(plan, shard, config)
        reports.append(process_shard(task, storage))
    manifest = load_manifest(storage)
    if not manifest.consolidated_current:
        write_consolidated_manifest(storage, manifest)
    return reports
