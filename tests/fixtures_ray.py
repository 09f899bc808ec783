"""Real Ray clusters on 127.0.0.1: a `ray start --head` node for job tests and in-process drivers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import ray

from infra.local_ray import LocalRayConfig, LocalRayHead

# Drivers in these tests (ray.init, subprocess jobs, cluster_utils) talk to loopback clusters
# started without token auth, whatever ~/.ray holds on the machine.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_head(s3_server) -> Iterator[LocalRayHead]:
    """A 2-CPU head whose workers can reach the loopback S3 server (they inherit the head's env)."""
    head = LocalRayHead(LocalRayConfig(num_cpus=2, dashboard_port=0), env=s3_server.env())
    head.start()
    yield head
    head.stop()


@pytest.fixture
def ray_driver(ray_head: LocalRayHead) -> Iterator[LocalRayHead]:
    """This test process connected to the head as a driver; disconnected afterwards."""
    ray.init(address=ray_head.address, log_to_driver=False)
    yield ray_head
    ray.shutdown()
