"""Joining Ray from a job run directly, and what `quickstart.sh stop` leaves behind (issue 13 "Also",
issue 17 item 5): nothing that misleads the next run, no process left, in seconds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

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


def test_stop_leaves_no_process_and_no_record_and_a_direct_run_then_starts_its_own_ray(private_ray_tmp):
    head = LocalRayHead(LocalRayConfig(dashboard_port=0)).start()
    assert recorded_cluster().endswith(f":{head.port}")
    started = time.monotonic()
    head.stop()
    assert time.monotonic() - started < 15
    left = processes_using(head.session_dir) + client_servers_of(head.port)
    assert not [pid for pid in left if _alive(pid)]
    assert recorded_cluster() == ""
    joined = _connect_in_a_fresh_process()
    assert joined.returncode == 0 and "joined" in joined.stdout, joined.stderr[-2000:]
    assert f":{head.port}" not in joined.stdout


def test_a_killed_heads_stale_record_is_ignored(private_ray_tmp):
    head = LocalRayHead(LocalRayConfig(dashboard_port=0)).start()
    for pid in processes_using(head.session_dir) + client_servers_of(head.port):
        os.kill(pid, signal.SIGKILL)  # as a crash would: the record stays behind
    time.sleep(1)
    assert recorded_cluster().endswith(f":{head.port}")
    started = time.monotonic()
    joined = _connect_in_a_fresh_process()
    assert joined.returncode == 0 and "joined" in joined.stdout, joined.stderr[-2000:]
    assert time.monotonic() - started < 120  # it used to hang for minutes on the dead GCS


def test_an_address_that_does_not_answer_is_refused_at_once(private_ray_tmp):
    started = time.monotonic()
    with pytest.raises(RayUnreachable, match="--ray-address"):
        connect_to_ray("127.0.0.1:9")  # discard port: nothing listens
    assert time.monotonic() - started < 10
