"""Eviction notices: SIGTERM -> every rank stops at the next step boundary -> rank 0 commits a checkpoint.

Kubernetes pod eviction, spot/preemptible interruption notices and `ray stop` all send SIGTERM and kill
for good a grace period later. A training worker that catches it finishes its current optimizer step;
at every step boundary the ranks agree (an all-reduce of one flag) whether any of them was told to stop,
so all stop at the same step even when only one node is evicted. Rank 0 then commits a checkpoint, the
loop returns with `preempted` set, and the job exits with EXIT_PREEMPTED: resubmitting it (on any number
of workers) continues from that checkpoint.

The flag is reduced over a gloo group (CPU), so checking it every step never waits for the GPU.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import torch
import torch.distributed as dist

from pipelines.training.runtime import Runtime

log = logging.getLogger(__name__)

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry". The job was preempted and
# its last checkpoint is committed: the same command continues it.
EXIT_PREEMPTED = 75


# Process-wide: the handler is installed from the main thread by a function that may arrive there through
# Ray's serialization (Runtime.on_main_thread), so it and its state are module-level, not captured objects.
_sigterm_at: list[float] = []  # time.monotonic() of the first SIGTERM since install
_previous_handlers: list = []


def _record_sigterm(signum: int, frame: FrameType | None) -> None:
    # no logging here: a signal handler may interrupt a logging call that holds its lock
    if not _sigterm_at:
        _sigterm_at.append(time.monotonic())


def _install_sigterm_handler() -> None:
    _sigterm_at.clear()
    _previous_handlers.append(signal.signal(signal.SIGTERM, _record_sigterm))


def _restore_sigterm_handler() -> None:
    signal.signal(signal.SIGTERM, _previous_handlers.pop())


class StopRequest:
    """Set by SIGTERM on this rank; `agreed` tells every rank whether any rank got one."""

    def __init__(self, runtime: Runtime, *, grace_s: float) -> None:
        self.runtime, self.grace_s = runtime, grace_s
        self.agreed_at: float | None = None  # when the ranks agreed to stop (rank 0: from here to the commit)
        self._group: dist.ProcessGroup | None = None

    @property
    def signalled_at(self) -> float | None:
        """time.monotonic() of this rank's SIGTERM, if it got one."""
        return _sigterm_at[0] if _sigterm_at else None

    @contextmanager
    def catching_sigterm(self) -> Iterator[None]:
        """SIGTERM sets the stop flag while the block runs (the previous handler is restored after)."""
        self.runtime.on_main_thread(_install_sigterm_handler)
        try:
            yield
        finally:
            self.runtime.on_main_thread(_restore_sigterm_handler)

    def agreed(self) -> bool:
        """Whether any rank got SIGTERM (every rank calls this at every step boundary: a collective)."""
        stop = self.signalled_at is not None
        if self.runtime.is_distributed:
            flag = torch.tensor([int(stop)], dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._control_group())
            stop = bool(flag.item())
        if stop and self.agreed_at is None:
            self.agreed_at = time.monotonic()
            where = "this rank" if self.signalled_at is not None else "another rank"
            log.warning("stop requested (SIGTERM on %s): stopping at this step boundary", where)
        return stop

    def seconds_since_notice(self) -> float:
        """From this rank's SIGTERM (or, when another rank got it, from the agreement) until now."""
        since = self.signalled_at if self.signalled_at is not None else self.agreed_at
        return time.monotonic() - since if since is not None else 0.0

    def _control_group(self) -> dist.ProcessGroup | None:
        if self._group is None and dist.get_backend() != "gloo":  # NCCL: a CPU group for the flag
            self._group = dist.new_group(backend="gloo")
        return self._group  # None: the default (gloo) group
