"""Crash safety of the sharding job: a node removed mid-job, and the driver killed at random
points (and on purpose between a tar upload and its manifest part), then resumed. Afterwards
the manifest holds every planned video exactly once and the shards hold no duplicate key."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import ray
from ray.cluster_utils import Cluster

from pipelines.sharding.job import run_sharding_job
from pipelines.sharding.plan import SourceConfig
from tests.sharding_checks import assert_complete_output, expected_reasons, read_manifest_rows
from tests.test_sharding_job import REPO, download_prefix, job_args, sharding_config

pytestmark = pytest.mark.slow


def start_driver(
    collection,
    out: str,
    address: str,
    log_path: Path,
    extra_env: dict | None = None,
    *,
    source: SourceConfig | None = None,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen:
    """The job's driver as its own process (so it can be SIGKILLed), on `collection`'s local files or `source`."""
    command = [
        sys.executable,
        "jobs/shard_howto100m.py",
        *job_args(collection, out, videos_per_shard=2, source=source),
        "--ray-address",
        address,
        *extra_args,
    ]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **(extra_env or {})}, stdout=log, stderr=log
        )


def kill_hard(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_driver_killed_at_random_points_then_resumed(sample_collection, ray_head, tmp_path):
    out, log = tmp_path / "out", tmp_path / "driver.log"
    rng = random.Random(20261125)
    # An early kill: before, while or just after the plan is written.
    kill_hard_after(start_driver(sample_collection, str(out), ray_head.address, log), rng.uniform(0.5, 2.5))
    # Then kills right after a random number of shards committed, with other shards in flight:
    # the state at each kill does not depend on how fast this machine is.
    for committed in sorted(rng.sample(range(1, num_shards(sample_collection, 2)), 3)):
        driver = start_driver(sample_collection, str(out), ray_head.address, log)
        _wait_for_files(out / "manifest", count=committed, timeout_s=300)
        kill_hard(driver)
        time.sleep(1.0)  # let Ray reap the dead driver's tasks
    resumed = start_driver(sample_collection, str(out), ray_head.address, log)
    assert resumed.wait(timeout=600) == 0, log.read_text()[-4000:]
    assert_complete_output(out, sample_collection)
    assert max(row["attempts"] for row in read_manifest_rows(out)) > 1  # some shards were redone whole


def test_a_killed_run_leaves_a_manifest_parquet_of_committed_parts_that_the_resume_builds_on(
    sample_collection, ray_head, tmp_path
):
    out, log = tmp_path / "out", tmp_path / "driver.log"
    every_shard = ("--consolidate-every-s", "0")  # rewritten after each shard instead of every 10 minutes
    driver = start_driver(sample_collection, str(out), ray_head.address, log, extra_args=every_shard)
    _wait_for_files(out / "manifest", count=4, timeout_s=300)
    _wait_for_files(out, count=1, timeout_s=120, pattern="manifest.parquet")
    kill_hard(driver)
    time.sleep(1.0)
    committed = {int(path.stem) for path in (out / "manifest").glob("*.parquet")}
    consolidated = pq.read_table(out / "manifest.parquet")  # read with plain pyarrow
    covered = set(json.loads(consolidated.schema.metadata[b"manifest_parts"]))
    assert covered and covered <= committed  # written by the dead run, naming only committed parts
    parts = [pq.read_table(out / "manifest" / f"{shard:06d}.parquet") for shard in sorted(covered)]
    assert consolidated.replace_schema_metadata(None).to_pylist() == [r for t in parts for r in t.to_pylist()]

    resumed = start_driver(sample_collection, str(out), ray_head.address, log)
    assert resumed.wait(timeout=600) == 0, log.read_text()[-4000:]
    assert_complete_output(out, sample_collection)
    final = pq.read_table(out / "manifest.parquet")
    assert set(json.loads(final.schema.metadata[b"manifest_parts"])) == {
        int(path.stem) for path in (out / "manifest").glob("*.parquet")
    }
    assert sorted(map(str, final.replace_schema_metadata(None).to_pylist())) == sorted(
        map(str, read_manifest_rows(out))
    )


def kill_hard_after(process: subprocess.Popen, seconds: float) -> None:
    time.sleep(seconds)
    kill_hard(process)
    time.sleep(1.0)


def num_shards(collection, videos_per_shard: int) -> int:
    planned = len(collection.good_ids) + len(expected_reasons(collection))
    return -(-planned // videos_per_shard)


def test_killed_between_tar_upload_and_manifest_part_on_s3(sample_collection, ray_head, s3_url, tmp_path):
    bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
    driver = start_driver(
        sample_collection, s3_url, ray_head.address, tmp_path / "driver.log",
        extra_env={"PIPELINE_FAILPOINTS": "after_tar_upload=30"},  # tasks pause after the upload
    )  # fmt: skip
    try:
        uploaded = wait_for_keys(bucket, f"{prefix}/shards/", timeout_s=240)
        assert uploaded, (tmp_path / "driver.log").read_text()[-4000:]
        assert not keys_under(bucket, f"{prefix}/manifest/")  # the window: tar visible, shard not committed
    finally:
        kill_hard(driver)
    time.sleep(1.0)
    ray.init(address=ray_head.address, log_to_driver=False)
    try:
        run_sharding_job(sharding_config(sample_collection, s3_url, videos_per_shard=2))
    finally:
        ray.shutdown()
    assert_complete_output(download_prefix(s3_url, tmp_path / "out"), sample_collection)


def test_node_removed_mid_job(sample_collection, tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    out = tmp_path / "out"
    errors: list[BaseException] = []
    job = threading.Thread(
        target=_run_catching, args=(sharding_config(sample_collection, str(out), videos_per_shard=1), errors)
    )
    try:
        job.start()
        _wait_for_files(out / "manifest", count=2, timeout_s=240)
        cluster.remove_node(workers[0])  # kills its raylet and workers, tasks in flight included
        job.join(timeout=600)
        assert not job.is_alive() and not errors, errors
        assert_complete_output(out, sample_collection)
        # the removed node's task in flight was retried elsewhere (its shard was started twice)
        assert max(row["attempts"] for row in read_manifest_rows(out)) > 1
    finally:
        ray.shutdown()
        cluster.shutdown()


def _run_catching(config, errors: list) -> None:
    try:
        run_sharding_job(config)
    except BaseException as error:  # surfaced by the test thread
        errors.append(error)


def keys_under(bucket: str, prefix: str) -> list[str]:
    response = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for obj in response.get("Contents", [])]


def wait_for_keys(bucket: str, prefix: str, timeout_s: float, count: int = 1) -> list[str]:
    """The keys under `prefix` once there are `count` of them; fewer (maybe none) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    keys = keys_under(bucket, prefix)
    while len(keys) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        keys = keys_under(bucket, prefix)
    return keys


def _wait_for_files(folder: Path, count: int, timeout_s: float, pattern: str = "*.parquet") -> None:
    """Until `folder` holds `count` files matching `pattern` (by default: manifest parts)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if folder.exists() and len(list(folder.glob(pattern))) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {count} {pattern} in {folder} after {timeout_s} s")
