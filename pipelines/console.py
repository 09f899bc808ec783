"""What a job prints. The console shows our own steps, progress bars, summaries, and every warning and
error from anyone; library chatter (boto's credential notices, open_clip's model-setup lines, Ray Train's
per-report dumps) goes to a log file whose path is printed once, or is silenced where it starts.

`setup_job_logging` is called once by each job's `main`, `quiet_library_chatter` also in every Ray Train
worker (Ray configures a worker's logging itself, so a job's settings do not reach it).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

OWN_LOGGERS = ("pipelines", "model", "jobs", "infra", "__main__")
LOG_DIR_ENV = "CLIP4CLIP_LOG_DIR"  # where job log files go; default <tmp>/clip4clip-logs
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# INFO lines that only restate what our own lines say, at the loggers that write them.
_CHATTY_LOGGERS = (
    "ray.train.torch.train_loop_utils",  # "Wrapping provided model in DistributedDataParallel."
    "ray.train.v2.torch.train_loop_utils",
)


def setup_job_logging(job: str) -> Path:
    """INFO and up from everyone into a log file; on the console, ours at INFO and others' warnings."""
    log_dir = Path(os.environ.get(LOG_DIR_ENV) or Path(tempfile.gettempdir()) / "clip4clip-logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{job}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(_FORMAT))
    console.addFilter(_ours_or_warning)
    root.addHandler(file_handler)
    root.addHandler(console)
    quiet_library_chatter()
    if not _log_paths:
        atexit.register(_point_to_logs)
    _log_paths.append(path)
    return path


_log_paths: list[Path] = []


def _point_to_logs() -> None:
    for path in _log_paths:
        _point_to_log(path)


def _point_to_log(path: Path) -> None:
    """At exit, and only if something was written there: the last line a user sees names the file."""
    if path.exists() and path.stat().st_size > 0:
        print(f"library log: {path}", file=sys.stderr, flush=True)


def quiet_library_chatter() -> None:
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # "Reporting training result N: TrainingReport(...)" on every report; Ray names this logger by path
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _ours_or_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.startswith(OWN_LOGGERS)
