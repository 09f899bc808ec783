"""benchmarks/scale_rehearsal.py --tiny end to end: every stage ran, in its own process, and was measured.

Not timed: the figures depend on the machine; only that each stage reports them is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scale_rehearsal import SCALED_STAGES, STAGE_NAMES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_tiny_rehearsal_measures_every_stage_at_two_sizes(tmp_path):
    results = tmp_path / "scale_rehearsal.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/scale_rehearsal.py", "--tiny", "--work-dir", str(tmp_path / "work"),
         "--results", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(results.read_text())

    assert [size["scale"] for size in report["sizes"]] == [0.001, 0.002]
    for size in report["sizes"]:
        assert set(size["stages"]) == set(STAGE_NAMES)
        for name, stage in size["stages"].items():
            assert stage["seconds"] > 0 and stage["peak_rss_mib"] > 0, name
            assert stage["requests"] == sum(stage["requests_by_operation"].values()) > 0, name
        assert size["stages"]["shards"]["videos_ok"] == 4  # one shard of 4 real videos
        parts = size["stages"]["summary"]["parts"]
        assert parts == size["stages"]["plan"]["shards"] == size["generated"]["selected"] // 4
        assert size["stages"]["summary"]["manifest_rows"] == size["generated"]["selected"]
        assert size["stages"]["summary"]["requests_by_operation"]["GetObject"] >= parts  # every part read
    assert set(report["extrapolation"]) == set(SCALED_STAGES)
    assert "full run (scale 1)" in done.stdout
    assert not (tmp_path / "work" / "scale-0.001").exists()  # each size's sources are removed
