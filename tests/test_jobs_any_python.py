"""`python jobs/<job>.py` from a shell where the project's virtualenv is not active (README commands as a
new user types them): the job re-runs itself under .venv/bin/python instead of `No module named 'pipelines'`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the tests are not running in a virtualenv")
def test_a_job_run_by_a_python_without_the_project_runs_in_the_projects_venv(tmp_path):
    bare = subprocess.run(
        [str(BASE_PYTHON), "-c", "import pipelines"], capture_output=True, text=True, cwd=tmp_path
    )
    assert bare.returncode != 0, "the base interpreter must lack the project for this test to mean anything"
    job = subprocess.run(
        [str(BASE_PYTHON), str(REPO / "jobs" / "plan_capacity.py"), "--help"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-2000:]
    assert "usage:" in job.stdout and "ModuleNotFoundError" not in job.stderr
