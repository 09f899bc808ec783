"""How a job joins Ray: the cluster it was submitted to, an address the user gave, or its own local one.

Why not a plain `ray.init()`: run directly (`python jobs/...`, no `ray job submit`), it joins the cluster named
in Ray's `ray_current_cluster` record even when that cluster is gone (a `ray start --head` stopped or killed;
the local heads of infra/local_ray.py keep their record in a temp folder of their own), and then hangs for
minutes printing GCS connection errors. Here a record whose cluster does not answer is ignored (the job
starts its own local Ray), and an address the user typed that does not answer is refused at once with what
to do.
"""

from __future__ import annotations

import logging
import os
import socket

import ray

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 2.0


class RayUnreachable(RuntimeError):
    """The Ray address the user named does not answer."""


def connect_to_ray(address: str = "") -> None:
    """ray.init for a job; `address` "" = the submitting cluster (RAY_ADDRESS) or a live recorded local
    cluster, else a new local one; "auto" or host:port = that cluster, refused fast if it does not answer."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`: the cluster the job was submitted to
        ray.init(log_to_driver=True)
        return
    if address and address != "auto":
        if not gcs_answers(address):
            raise RayUnreachable(
                f"no Ray cluster answers at {address}: start it (ray start --head), or leave --ray-address "
                "empty to run on a new local Ray"
            )
        ray.init(address=address, log_to_driver=True)
        return
    recorded = recorded_cluster()
    if recorded and gcs_answers(recorded):
        ray.init(address=recorded, log_to_driver=True)
        return
    if recorded:
        log.info("Ray's record names %s, which no longer answers: starting a local Ray instead", recorded)
    ray.init(address="local", log_to_driver=True)


def recorded_cluster() -> str:
    """host:port in Ray's `ray_current_cluster` record (left by `ray start` or a local head), or ""."""
    from ray._private.utils import read_ray_address  # Ray's own reader of that record

    return read_ray_address() or ""


def gcs_answers(address: str) -> bool:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False
