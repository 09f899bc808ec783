"""Makes `python jobs/<job>.py` work from any shell, not only one where `.venv` is active.

Why: the project and its packages live in the virtualenv `infra/install.sh` made; another `python` finds
neither, and used to fail with `ModuleNotFoundError: No module named 'pipelines'`. Every job imports this
module first when it runs as a script: if this interpreter lacks the project and `.venv` exists, the job
is re-run under `.venv/bin/python` with the same arguments; if there is no `.venv`, it stops with one
line that says what to do. Under `ray job submit` (the head's Python) or an active `.venv` it does nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

_VENV = Path(__file__).resolve().parents[1] / ".venv"


def _run_in_project_venv() -> None:
    if importlib.util.find_spec("pipelines") is not None:
        return
    python = _VENV / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != _VENV.resolve():
        os.execv(python, [str(python), *sys.argv])
    sys.exit(
        f"error: this Python ({sys.executable}) does not have the project installed; run "
        f"`bash infra/install.sh`, then run the job with .venv/bin/python (or after `source .venv/bin/activate`)"
    )


_run_in_project_venv()
