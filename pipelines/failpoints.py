"""Named points where a test can make a process pause, so it can be killed in a chosen state.

Crash-safety claims ("killed between the tar upload and its manifest part, nothing is lost")
are only testable if the test can reach that state on purpose. `PIPELINE_FAILPOINTS` holds
comma-separated `name=seconds` or `name=seconds@hit` (pause only on the hit-th time this process
reaches it); unset, every failpoint is a no-op.
"""

from __future__ import annotations

import os
import time
from collections import Counter

ENV_VAR = "PIPELINE_FAILPOINTS"
_hits: Counter[str] = Counter()


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV_VAR, "")
    if not spec:
        return
    _hits[name] += 1
    for item in spec.split(","):
        point, _, pause = item.partition("=")
        seconds, _, hit = pause.partition("@")
        if point.strip() == name and (not hit or int(hit) == _hits[name]):
            time.sleep(float(seconds or 3600))


def failpoint_runtime_env() -> dict:
    """Ray runtime_env that hands this driver's failpoints to its tasks and workers.

    They run in processes the raylet starts, which do not inherit the driver's environment. Empty
    (so no new worker pool is made) in normal runs."""
    value = os.environ.get(ENV_VAR)
    return {"env_vars": {ENV_VAR: value}} if value else {}
