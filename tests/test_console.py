"""What a job prints: ours and every warning on the console, library INFO chatter only in the log file;
`ray job submit`'s own banners sorted into a log by the quick start."""

from __future__ import annotations

import logging

from infra.local_ray import _RAY_CHATTER
from pipelines.console import LOG_DIR_ENV, setup_job_logging


def test_console_keeps_ours_and_warnings_and_the_file_keeps_everything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path))
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        path = setup_job_logging("unit")
        logging.getLogger("pipelines.sharding.job").info("our step")
        logging.getLogger("somelibrary.module").info("library chatter")
        logging.getLogger("otherlibrary").warning("a library warning")
        for handler in root.handlers:
            handler.flush()
        console = capsys.readouterr().err
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved[0])
        for handler in saved[1]:
            root.addHandler(handler)
    assert "our step" in console and "a library warning" in console
    assert "library chatter" not in console
    logged = path.read_text()

    assert all(text in logged for text in ("our step", "library chatter", "a library warning"))


def test_ray_submit_chatter_is_told_from_job_output_and_problems():
    chatter = [
        "2026-12-03 17:06:41,436\tINFO cli.py:42 -- Job submission server address: http://127.0.0.1:8265",
        "2026-12-03 17:06:42,990\tSUCC cli.py:67 -- Job 'raysubmit_1' submitted successfully",
        "2026-12-03 17:06:41,436\tWARNING working_dir.py:101 -- Directory '.git' is now ignored by default "
        "when packaging the working directory.",
        "Running entrypoint for job raysubmit_1: python jobs/shard_howto100m.py",
        "(TrainController pid=1) [2026 E 1 2] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' "
        "and ID: '02' has constructor arguments in the object store",
    ]
    kept = [
        "2026-12-03 17:06:45,907 INFO pipelines.sharding.plan: indexing caption.json",
        "2026-12-03 17:06:41,436\tERROR cli.py:70 -- Job 'raysubmit_1' failed",
        "2026-12-03 17:06:41,436\tWARNING packaging.py:1 -- something else Ray warns about",
        "== sharding summary: s3://bucket/out",
    ]
    assert all(_RAY_CHATTER.search(line) for line in chatter)
    assert not any(_RAY_CHATTER.search(line) for line in kept)
