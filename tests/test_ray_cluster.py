"""Joining Ray from a job run directly, what `quickstart.sh stop` leaves behind (issue 13 "Also",
issue 17 item 5): nothing that misleads the next run, no process left, in seconds; and two local heads
at once (the quick start's and the test suite's) each running the jobs submitted to it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from ray._private.utils import read_ray_address, write_ray_address

from infra.local_ray import LocalRayConfig, LocalRayHead, _alive, client_servers_of, processes_using
from pipelines.ray_cluster import RayUnreachable, connect_to_ray, recorded_cluster


@pytest.fixture
def private_ray_tmp(monkeypatch):
    """A Ray temp folder of this test's own, so its `ray_current_cluster` record is this test's alone
    (short: Ray's socket paths under it must stay within 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", folder)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _connect_in_a_fresh_process(address: str = "") -> subprocess.CompletedProcess:
    code = (
        "from pipelines.ray_cluster import connect_to_ray; import ray; "
        f"connect_to_ray({address!r}); print('joined', ray.get_runtime_context().gcs_address); ray.shutdown()"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)


def test_stop_leaves_no_process_record_or_folder_and_a_direct_run_then_starts_its_own_ray(private_ray_tmp):
    head = LocalRayHead(LocalRayConfig(dashboard_port=0)).start()
    assert read_ray_address(head.temp_dir).endswith(f":{head.port}")  # its record is in its own folder,
    assert recorded_cluster() == ""  # not in Ray's shared one
    started = time.monotonic()
    LocalRayHead(LocalRayConfig(port=head.port)).stop()  # as `quickstart.sh stop` does: found by its port
    assert time.monotonic() - started < 15
    left = processes_using(head.session_dir) + client_servers_of(head.port)
    assert not [pid for pid in left if _alive(pid)]
    assert not os.path.exists(head.temp_dir) and recorded_cluster() == ""
    joined = _connect_in_a_fresh_process()
    assert joined.returncode == 0 and "joined" in joined.stdout, joined.stderr[-2000:]
    assert f":{head.port}" not in joined.stdout


def test_a_killed_heads_stale_record_is_ignored(private_ray_tmp):
    head = LocalRayHead(LocalRayConfig(dashboard_port=0)).start()
    for pid in processes_using(head.session_dir) + client_servers_of(head.port):
        os.kill(pid, signal.SIGKILL)  # as a crash would
    time.sleep(1)
    # The record a plain `ray start --head` leaves in Ray's shared folder (ours keep theirs in their own).
    os.makedirs(os.path.join(private_ray_tmp, "ray"))
    write_ray_address(head.address)
    started = time.monotonic()
    joined = _connect_in_a_fresh_process()
    assert joined.returncode == 0 and "joined" in joined.stdout, joined.stderr[-2000:]
    assert time.monotonic() - started < 120  # it used to hang for minutes on the dead GCS


def test_an_address_that_does_not_answer_is_refused_at_once(private_ray_tmp):
    started = time.monotonic()
    with pytest.raises(RayUnreachable, match="--ray-address"):
        connect_to_ray("127.0.0.1:9")  # discard port: nothing listens
    assert time.monotonic() - started < 10


# A submitted job's driver gets RAY_ADDRESS from Ray's job supervisor on the head it was submitted to.
_PRINT_CLUSTER = "import ray; ray.init(); print('ran on', ray.get_runtime_context().gcs_address)"


def _cluster_ran_on(job_output: str) -> str:
    """The GCS address the job printed (Ray writes the node's IP there, not 127.0.0.1: compare ports)."""
    found = re.search(r"^ran on (\S+)$", job_output, re.MULTILINE)
    return found.group(1) if found else ""


def test_two_local_heads_at_once_each_run_the_jobs_submitted_to_them(private_ray_tmp, tmp_path):
    """The job supervisor names the cluster by reading `ray_current_cluster` in its head's temp folder: in
    one shared by both heads, the second head's record sent the jobs submitted to the first to the second."""
    config = LocalRayConfig(num_cpus=1, object_store_mib=100, dashboard_port=0)
    heads = [LocalRayHead(config), LocalRayHead(config)]
    try:
        for head in heads:
            head.start()
        for head in heads:
            job = head.submit_job(
                [sys.executable, "-c", _PRINT_CLUSTER], working_dir=tmp_path, capture=True, timeout_s=300
            )
            assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
            assert _cluster_ran_on(job.stdout).endswith(f":{head.port}"), job.stdout[-2000:]
    finally:
        for head in heads:
            head.stop()
    assert heads[0].temp_dir != heads[1].temp_dir
    assert not [head.temp_dir for head in heads if os.path.exists(head.temp_dir)]
