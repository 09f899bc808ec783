"""benchmarks/scale_rehearsal.py --tiny --sources s3 end to end: every stage ran, in its own process, and was measured.

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
        [sys.executable, "benchmarks/scale_rehearsal.py", "--tiny", "--sources", "s3",
         "--work-dir", str(tmp_path / "work"), "--results", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(results.read_text())

    assert [size["scale"] for size in report["sizes"]] == [0.001, 0.002]
    for size in report["sizes"]:
        assert set(size["stages"]) == {*STAGE_NAMES, "shards_local_sources"}
        for name, stage in size["stages"].items():
            assert stage["seconds"] > 0 and stage["peak_rss_mib"] > 0, name
            assert stage["requests"] == sum(stage["requests_by_operation"].values()) > 0, name
        stages = size["stages"]
        assert stages["shards"]["videos_ok"] == stages["shards_local_sources"]["videos_ok"] == 4  # 1 shard
        ratio = stages["shards"]["video_s_per_cpu_s"] / stages["shards_local_sources"]["video_s_per_cpu_s"]
        assert stages["shards"]["s3_vs_local_per_cpu_s"] == pytest.approx(ratio, abs=1e-3)
        parts = stages["summary"]["parts"]
        assert parts == stages["plan"]["shards"] == size["generated"]["selected"] // 4
        assert (
            stages["summary"]["manifest_rows"]
            == stages["resume_read"]["manifest_rows"]
            == size["generated"]["selected"]
        )
        assert stages["resume_read"]["requests_by_operation"]["GetObject"] >= parts  # every part read
        assert "GetObject" not in stages["summary"]["requests_by_operation"]  # the job's end reads none back
    assert set(report["extrapolation"]) == set(SCALED_STAGES)
    assert "full run (scale 1)" in done.stdout
    assert not (tmp_path / "work" / "scale-0.001").exists()  # each size's sources are removed
