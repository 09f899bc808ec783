"""Named points where a test can make a process pause, so it can be killed in a chosen state.

Crash-safety claims ("killed between the tar upload and its manifest part, nothing is lost")
are only testable if the test can reach that state on purpose. `PIPELINE_FAILPOINTS` holds
`name=seconds` pairs (comma-separated); unset, every failpoint is a no-op.
"""

from __future__ import annotations

import os
import time

ENV_VAR = "PIPELINE_FAILPOINTS"


def failpoint(name: str) -> None:
    for item in os.environ.get(ENV_VAR, "").split(","):
        point, _, seconds = item.partition("=")
        if point.strip() == name:
            time.sleep(float(seconds or 3600))
