"""Preemptible post-pretraining on a real Ray head on 127.0.0.1 (gloo DDP on CPU workers), checkpoints on
the loopback S3 server: runs killed at random steps and resumed on other numbers of workers serve every clip
of the epoch exactly once, and SIGTERM stops a run with a committed checkpoint and exit status 75."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from model.clip4clip import CLIP4Clip
from pipelines.checkpoint.layout import TRAIN_STATE_FILE
from pipelines.checkpoint.store import CheckpointStore
from pipelines.sharding.job import run_sharding_job
from pipelines.training.batch_log import read_batch_logs
from pipelines.training.post_pretrain import PostPretrainConfig, build_stream, post_pretrain_worker
from pipelines.training.preemption import EXIT_PREEMPTED
from pipelines.training.runtime import Runtime, single_process_runtime
from tests.test_post_pretrain import _wait_until, capture_training, debug_config, train_worker_actors
from tests.test_sharding_job import REPO, sharding_config

pytestmark = pytest.mark.slow

GLOBAL_BATCH = 6  # clips per step over all ranks: 1, 2 and 3 workers split it evenly
TRIALS = 5
EPOCHS = 5  # the runs end at an epoch boundary, where the clips served must equal an uninterrupted run's


def resilient_config(shards: str, checkpoints: str, run_name: str, *, workers: int, batch_log: str, **loop):
    base = debug_config(shards, checkpoints, run_name, **loop)
    return replace(
        base,
        data=replace(base.data, global_batch_size=GLOBAL_BATCH),
        loop=replace(base.loop, batch_log=batch_log),
        # a kill ends the run; 3 workers share the test head's 2 CPUs
        workers=replace(base.workers, num_workers=workers, max_failures=0, cpus_per_worker=0.5),
    )


@pytest.fixture(scope="module")
def shards(sample_collection, ray_head, tmp_path_factory) -> str:
    """Shards made by the sharding job itself, on the test Ray head."""
    out = tmp_path_factory.mktemp("resilient") / "shards"
    ray.init(address=ray_head.address, log_to_driver=False)
    try:
        run_sharding_job(sharding_config(sample_collection, str(out), videos_per_shard=2))
    finally:
        ray.shutdown()
    return str(out)


@pytest.fixture(scope="module")
def steps(shards, tmp_path_factory) -> int:
    """EPOCHS whole epochs of global batches."""
    config = resilient_config(shards, "unused", "epoch", workers=1, batch_log="")
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    return EPOCHS * build_stream(config, CLIP4Clip.from_config(config.model), runtime).batches_per_epoch


@pytest.fixture(scope="module")
def uninterrupted(shards, steps, tmp_path_factory) -> collections.Counter:
    """The clips one uninterrupted 1-worker run trains on (the same code, without Ray)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = resilient_config(
        shards, str(folder / "ckpt"), "whole", workers=1, batch_log=str(folder / "log"),
        max_steps=steps, every_steps=1000, log_every=1000,
    )  # fmt: skip
    assert post_pretrain_worker(config, single_process_runtime()).step == steps
    return served_clips(read_batch_logs(folder / "log"), after_step=0, up_to_step=steps)


def served_clips(lines: list[dict], *, after_step: int, up_to_step: int) -> collections.Counter:
    """Clip ids (epoch, video id, clip start, index in the epoch) of the logged batches of steps in
    (after_step, up_to_step]."""
    return collections.Counter(
        (line["epoch"], *clip)
        for line in lines
        if after_step < line["step"] <= up_to_step
        for clip in zip(line["video_id"], line["clip_start_s"], line["clip_index"], strict=True)
    )


@pytest.mark.parametrize("trial", range(TRIALS))
def test_killed_at_random_steps_and_resumed_on_2_1_3_workers_serves_each_clip_once(
    shards, ray_driver, s3_url, tmp_path, monkeypatch, steps, uninterrupted, trial
):
    rng = np.random.default_rng(trial)
    store = CheckpointStore(s3_url, f"trial-{trial}")
    served: collections.Counter = collections.Counter()
    resumed_from = 0
    for run, workers in enumerate((2, 1, 3)):
        config = resilient_config(
            shards, s3_url, f"trial-{trial}", workers=workers, batch_log=str(tmp_path / f"log-{run}"),
            max_steps=steps, every_steps=2, log_every=1000,
        )  # fmt: skip
        if run < 2:  # held at a random step of this run, then every worker is killed
            kill_at = int(rng.integers(1, (steps - resumed_from) // 2))  # leaves the next run steps to kill
            monkeypatch.setenv("PIPELINE_FAILPOINTS", f"train_step_end=600@{kill_at}")
            run_killed_at(
                config, resumed_from + kill_at, workers, ray_driver.address, tmp_path / f"ray-{run}"
            )
            latest = store.latest()
            committed = latest.step if latest else 0
        else:
            monkeypatch.delenv("PIPELINE_FAILPOINTS")
            outcome: dict = {}
            capture_training(outcome, config, str(tmp_path / f"ray-{run}"))
            assert "result" in outcome, outcome.get("error")
            result = outcome["result"]
            assert result.step == steps
            assert result.metrics["resumed"]["resumed_from_step"] == resumed_from
            assert result.metrics["resumed"]["resumed_optimizer_steps"] == resumed_from
            committed = steps
        lines = read_batch_logs(tmp_path / f"log-{run}")
        assert min(line["step"] for line in lines) == resumed_from + 1  # continues from the checkpoint
        assert {len(line["video_id"]) for line in lines} == {GLOBAL_BATCH // workers}
        served += served_clips(lines, after_step=resumed_from, up_to_step=committed)
        resumed_from = committed
    assert served == uninterrupted  # nothing twice, nothing missing
    assert max(served.values()) == 1 and sum(served.values()) == steps * GLOBAL_BATCH
    assert_schedule_continued(store, steps, tmp_path)


def run_killed_at(
    config: PostPretrainConfig, step: int, workers: int, address: str, storage_path: Path
) -> None:
    """Run the job until every rank has trained step `step` (the failpoint then holds them), kill all workers."""
    outcome: dict = {}
    run = threading.Thread(target=capture_training, args=(outcome, config, str(storage_path)))
    run.start()
    try:
        _wait_until(
            lambda: (
                sum(line["step"] == step for line in read_batch_logs(config.loop.batch_log)) == workers
                or "error" in outcome
            ),
            timeout_s=300,
        )
        assert "error" not in outcome, outcome["error"]
        time.sleep(0.5)  # rank 0 may still be committing a checkpoint of this step: either way is a kill
        for actor in train_worker_actors(address):
            os.kill(actor.pid, signal.SIGKILL)
    finally:
        run.join(timeout=300)
    assert not run.is_alive() and "error" in outcome, "the killed run should have failed (max_failures=0)"


def assert_schedule_continued(store: CheckpointStore, steps: int, tmp_path: Path) -> None:
    """Optimizer and scheduler counted every step across the kills (a restart from 0 would count fewer)."""
    local = store.download(store.latest(), tmp_path / "final")
    state = torch.load(local / TRAIN_STATE_FILE, weights_only=True)
    assert state["step"] == steps and state["scheduler"]["last_epoch"] == steps
    adam_steps = {int(param["step"]) for param in state["optimizer"]["state"].values()}
    assert adam_steps == {steps}


def test_sigterm_commits_a_checkpoint_exits_preempted_and_resubmission_continues(
    shards, ray_head, s3_url, tmp_path
):
    args = [
        "--shards", shards, "--checkpoints", s3_url, "--run-name", "evicted", "--model", "debug",
        "--pretrained", "", "--max-frames", "6", "--global-batch-size", str(GLOBAL_BATCH), "--candidates", "3",
        "--clips-per-video", "4", "--loader-workers", "0", "--lr", "1e-3", "--coef-lr", "1.0",
        "--every-steps", "1000", "--log-every", "1000", "--max-steps", "30",
    ]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray_head.address}
    env.pop("PIPELINE_FAILPOINTS", None)
    command = [sys.executable, "jobs/post_pretrain.py", *args]
    log = tmp_path / "job.log"
    store = CheckpointStore(s3_url, "evicted")
    batch_log = tmp_path / "batches"
    with open(log, "wb") as sink:
        job = subprocess.Popen(
            [*command, "--num-workers", "2", "--batch-log", str(batch_log)],
            cwd=REPO, env=env, stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        _wait_until(
            lambda: len(read_batch_logs(batch_log)) >= 2 * 3 or job.poll() is not None,
            timeout_s=300,
            what=log,
        )
        assert job.poll() is None and store.latest() is None
        victim = train_worker_actors(ray_head.address)[0]  # one rank gets the notice; all must stop
        signalled = time.monotonic()
        os.kill(victim.pid, signal.SIGTERM)
        _wait_until(lambda: store.latest() or job.poll() is not None, timeout_s=120, what=log)
        sigterm_to_commit_s = time.monotonic() - signalled
        returncode = job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    output = log.read_text()
    print(f"SIGTERM -> committed checkpoint: {sigterm_to_commit_s:.2f} s")
    assert returncode == EXIT_PREEMPTED, output[-3000:]
    assert "preempted, resumable" in output
    assert sigterm_to_commit_s <= 30.0
    preempted_step = store.latest().step
    assert 3 <= preempted_step < 30
    steps_trained = {line["step"] for line in read_batch_logs(batch_log)}
    assert max(steps_trained) == preempted_step  # both ranks stopped at the same step boundary
    again = subprocess.run(
        [*command, "--num-workers", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"step-{preempted_step:08d}" in again.stdout + again.stderr  # "resumed from .../step-000000NN"
    assert store.latest().step == 30


def test_sigterm_in_a_single_process_run_stops_at_a_step_boundary_with_a_checkpoint(shards, tmp_path):
    config = resilient_config(
        shards, str(tmp_path / "ckpt"), "solo", workers=1, batch_log=str(tmp_path / "log"),
        max_steps=500, every_steps=1000, log_every=1000,
    )  # fmt: skip

    def evict_after_two_steps() -> None:
        _wait_until(lambda: len(read_batch_logs(tmp_path / "log")) >= 2, timeout_s=300)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler only records it; the step in flight finishes

    handler_before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=evict_after_two_steps, daemon=True).start()
    result = post_pretrain_worker(config, single_process_runtime())
    assert result.preempted and 2 <= result.step < 500
    assert result.final_checkpoint is not None and result.final_checkpoint.step == result.step
    assert max(line["step"] for line in read_batch_logs(tmp_path / "log")) == result.step
    assert signal.getsignal(signal.SIGTERM) == handler_before  # restored when training returns


def test_resume_with_another_clip_sequence_is_refused(shards, tmp_path):
    config = resilient_config(
        shards, str(tmp_path / "ckpt"), "sequence", workers=1, batch_log="", max_steps=2, every_steps=1
    )
    post_pretrain_worker(config, single_process_runtime())
    other_clips = replace(
        config, data=replace(config.data, clips_per_video=2), loop=replace(config.loop, max_steps=4)
    )
    with pytest.raises(ValueError, match="another clip sequence.*clips_per_video=4.*clips_per_video=2"):
        post_pretrain_worker(other_clips, single_process_runtime())
    other_batching = replace(config, data=replace(config.data, shuffle_buffer=3, global_batch_size=3))
    other_batching = replace(other_batching, loop=replace(config.loop, max_steps=4))
    assert post_pretrain_worker(other_batching, single_process_runtime()).step == 4  # layout changes are fine
