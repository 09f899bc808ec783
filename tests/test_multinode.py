"""Both jobs on a multi-node Ray cluster on one machine (`ray.cluster_utils.Cluster`: a CPU-less head,
three 1-CPU worker nodes, each its own raylet and object store), and a worker node removed mid-training.

A node removed mid-sharding is tests/test_sharding_resilience.py::test_node_removed_mid_job; a training
worker process killed on one node is tests/test_post_pretrain.py; here Ray Train V2 loses a whole node,
restarts the worker group on the nodes left (FailureConfig) and the loop resumes from the last committed
checkpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_tasks

from pipelines.checkpoint.store import CheckpointStore
from pipelines.sharding.job import run_sharding_job
from tests.sharding_checks import assert_complete_output
from tests.test_post_pretrain import _wait_until, capture_training, debug_config, train_worker_actors
from tests.test_sharding_job import sharding_config

pytestmark = pytest.mark.slow

WORKER_NODES = 3  # 2 training workers (1 CPU each, one per node) + 1 spare node to restart on
SLOW_MACHINE_TIMEOUT_S = 20.0  # per-video decode limit


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # No CPU on the head: every task and training worker runs on a worker node, so removing one loses work.
    # Dashboard on a free port: other Ray clusters may run on this machine at the same time.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_port": 0})
    for _ in range(WORKER_NODES):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def cluster_shards(cluster, sample_collection, tmp_path_factory) -> str:
    """The sharding job run on the multi-node cluster (local output: every node is on this machine)."""
    out = tmp_path_factory.mktemp("multinode") / "shards"
    config = sharding_config(sample_collection, str(out), videos_per_shard=2)
    # 3 one-CPU nodes on a shared 2-core machine: a good video must not hit the short test timeout (the
    # sample's hanging input still times out, after this longer limit)
    run_sharding_job(replace(config, decoding=replace(config.decoding, timeout_s=SLOW_MACHINE_TIMEOUT_S)))
    return str(out)


def test_sharding_runs_on_several_nodes(cluster, cluster_shards, sample_collection):
    assert_complete_output(Path(cluster_shards), sample_collection)
    tasks = list_tasks(
        address=cluster.address,
        filters=[("func_or_class_name", "=", "_process_shard_remote")],
        detail=True,
        limit=1000,
    )
    nodes = {task.node_id for task in tasks if task.node_id}
    assert len(nodes) >= 2, nodes  # shard tasks spread over the worker nodes


def test_training_survives_a_worker_node_removed(cluster, cluster_shards, tmp_path):
    # 2 gloo workers, up to 2 worker-group restarts (debug_config)
    config = debug_config(cluster_shards, str(tmp_path / "ckpt"), "node-loss", max_steps=30, every_steps=6)
    store = CheckpointStore(config.checkpoints, config.run_name)
    outcome: dict = {}
    run = threading.Thread(target=capture_training, args=(outcome, config, str(tmp_path / "ray")))
    run.start()
    _wait_until(lambda: store.committed() or "error" in outcome, timeout_s=300)
    assert "error" not in outcome, outcome["error"]
    committed_before = max(ref.step for ref in store.committed())
    assert committed_before < config.loop.max_steps, "training ended before a node could be removed"
    worker_nodes = {actor.node_id for actor in train_worker_actors(cluster.address)}
    assert len(worker_nodes) == 2, worker_nodes  # one worker per 1-CPU node: DDP really spans nodes
    victim = next(node for node in cluster.worker_nodes if node.node_id in worker_nodes)
    cluster.remove_node(victim)  # its raylet, object store and the training worker on it die
    run.join(timeout=600)
    assert not run.is_alive() and "result" in outcome, outcome.get("error", "training did not finish in time")
    result = outcome["result"]
    assert result.step == 30
    resumed = result.metrics["resumed"]  # the restarted group continued from a committed checkpoint
    assert resumed["resumed_from_step"] >= committed_before and resumed["resumed_from_step"] % 6 == 0
    assert resumed["resumed_optimizer_steps"] == resumed["resumed_from_step"]
    assert victim.node_id not in _alive_node_ids()


def _alive_node_ids() -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}
