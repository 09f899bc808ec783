"""Elastic post-pretraining (Ray Train V2, `--min-workers`) on a multi-node Ray cluster on one machine
(`ray.cluster_utils.Cluster`: a CPU-less head and two 1-CPU worker nodes, one training worker each): a node
removed mid-training and not replaced, and the run finishes on the worker left, from its last committed
checkpoint, with the rest of the epoch resharded over one worker."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
import ray
from ray.cluster_utils import Cluster

from pipelines.checkpoint.store import CheckpointStore
from pipelines.storage import open_storage
from pipelines.training.batch_log import read_batch_logs
from tests.test_post_pretrain import _wait_until, capture_training, debug_config, train_worker_actors
from tests.test_training_stream import UNEVEN, publish

pytestmark = pytest.mark.slow

GLOBAL_BATCH = 4  # 2 workers x 2 clips, or 1 x 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # No CPU on the head: both training workers run on worker nodes, so removing one loses a worker.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_port": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_node_removed_elastic_run_finishes_on_the_worker_left(cluster, tmp_path):
    shards = tmp_path / "shards"
    publish(
        open_storage(str(shards)), tmp_path / "scratch", UNEVEN
    )  # tiny tars + manifest, every node reads them
    base = debug_config(
        str(shards), str(tmp_path / "ckpt"), "elastic", max_steps=40, every_steps=4, log_every=1000
    )
    config = replace(
        base,
        data=replace(base.data, global_batch_size=GLOBAL_BATCH),
        loop=replace(base.loop, batch_log=str(tmp_path / "batches")),
        workers=replace(base.workers, num_workers=2, min_workers=1, max_failures=2, resize_check_s=3600),
    )
    store = CheckpointStore(config.checkpoints, config.run_name)
    outcome: dict = {}
    run = threading.Thread(target=capture_training, args=(outcome, config, str(tmp_path / "ray")))
    run.start()
    try:
        _wait_until(lambda: store.committed() or "error" in outcome, timeout_s=300)
        assert "error" not in outcome, outcome["error"]
        committed_before = max(ref.step for ref in store.committed())
        assert committed_before < config.loop.max_steps, "training ended before a node could be removed"
        worker_nodes = {actor.node_id for actor in train_worker_actors(cluster.address)}
        assert len(worker_nodes) == 2, worker_nodes  # one worker per node
        cluster.remove_node(next(node for node in cluster.worker_nodes if node.node_id in worker_nodes))
    finally:
        run.join(timeout=600)
    assert not run.is_alive() and "result" in outcome, outcome.get("error", "training did not finish in time")
    result = outcome["result"]
    assert result.step == 40
    resumed = result.metrics["resumed"]["resumed_from_step"]
    assert resumed >= committed_before and resumed % 4 == 0
    lines = read_batch_logs(tmp_path / "batches")
    first_step: dict[str, int] = {}
    for line in lines:
        first_step[line["log"]] = min(first_step.get(line["log"], line["step"]), line["step"])
    assert 1 in first_step.values()  # the first group's logs; the new group's start after the checkpoint:
    restarted = [line for line in lines if first_step[line["log"]] == resumed + 1]
    ranks_per_step = collections.Counter(line["step"] for line in restarted)
    assert set(ranks_per_step.values()) == {1}  # one worker ...
    assert {len(line["video_id"]) for line in restarted} == {
        GLOBAL_BATCH
    }  # ... taking the whole global batch
    assert sorted(ranks_per_step) == list(range(resumed + 1, 41))
