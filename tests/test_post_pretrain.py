"""Post-pretraining on Ray Train with real components: shards made by the sharding job, a Ray head
on 127.0.0.1 (gloo DDP on CPU workers), checkpoints on the loopback S3 server, a real worker kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import ray
from ray.util.state import list_actors

from model.config import CLIP4ClipConfig
from pipelines.checkpoint.store import CheckpointConfig, CheckpointStore
from pipelines.sharding.job import run_sharding_job
from pipelines.training.loop import LoopConfig
from pipelines.training.optim import OptimConfig
from pipelines.training.post_pretrain import (
    ClipDataConfig,
    PostPretrainConfig,
    WorkersConfig,
    post_pretrain_worker,
    run_post_pretraining,
)
from pipelines.training.runtime import single_process_runtime
from tests.test_sharding_job import REPO, sharding_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(sample_collection, ray_head, tmp_path_factory) -> str:
    """Shards made by the sharding job itself, on the test Ray head."""
    out = tmp_path_factory.mktemp("training") / "shards"
    ray.init(address=ray_head.address, log_to_driver=False)
    try:
        run_sharding_job(sharding_config(sample_collection, str(out), videos_per_shard=2))
    finally:
        ray.shutdown()
    return str(out)


def debug_config(shards: str, checkpoints: str, run_name: str, **loop) -> PostPretrainConfig:
    # A random-init debug model learns from scratch: every weight trains at lr (coef_lr 1).
    return PostPretrainConfig(
        shards=shards,
        checkpoints=checkpoints,
        run_name=run_name,
        model=CLIP4ClipConfig(backbone="debug", pretrained="", head="meanP", max_frames=6),
        data=ClipDataConfig(
            batch_size=4, candidates=3, clips_per_video=4, shuffle_buffer=32, loader_workers=0
        ),
        optim=OptimConfig(lr=1e-3, coef_lr=1.0, warmup_proportion=0.05),
        loop=LoopConfig(
            max_steps=loop.pop("max_steps", 30), log_every=loop.pop("log_every", 3), seed=loop.pop("seed", 0)
        ),
        checkpoint=CheckpointConfig(every_steps=loop.pop("every_steps", 10), keep_last=10),
        workers=WorkersConfig(num_workers=2, max_failures=2),
    )


def test_two_gloo_workers_learn(shards, ray_driver, tmp_path):
    result = run_post_pretraining(
        debug_config(shards, str(tmp_path / "ckpt"), "learn"), storage_path=str(tmp_path / "ray")
    )
    losses = [loss for _, loss in result.metrics["loss_history"]]
    assert result.step == 30 and len(losses) == 10
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    assert (Path(result.checkpoint) / "loss_curve.png").stat().st_size > 0


def test_same_seed_same_loss_curve(shards, tmp_path):
    def losses(name: str) -> list[float]:
        config = debug_config(shards, str(tmp_path / name), "det", max_steps=8, log_every=1, every_steps=100)
        return [loss for _, loss in post_pretrain_worker(config, single_process_runtime()).history]

    first, second = losses("a"), losses("b")
    assert first == second and len(first) == 8


def test_killed_worker_resumes_from_last_committed_checkpoint(shards, ray_driver, s3_url, tmp_path):
    config = debug_config(shards, s3_url, "kill-worker", max_steps=40, every_steps=8)
    store = CheckpointStore(s3_url, "kill-worker")
    outcome: dict = {}
    run = threading.Thread(target=capture_training, args=(outcome, config, str(tmp_path / "ray")))
    run.start()
    try:
        _wait_until(lambda: store.committed(), timeout_s=300)
        committed_before_kill = max(ref.step for ref in store.committed())
        victim = max(actor.pid for actor in train_worker_actors(ray_driver.address))
        os.kill(victim, signal.SIGKILL)
    finally:
        run.join(timeout=600)  # never leave training running into the fixture's ray.shutdown()
    assert not run.is_alive() and "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.step == 40
    assert "resumed" in result.metrics, result.metrics
    resumed = result.metrics["resumed"]
    assert resumed["resumed_from_step"] >= committed_before_kill and resumed["resumed_from_step"] % 8 == 0
    # optimizer state and data position came back from that checkpoint, not from zero
    assert resumed["resumed_optimizer_steps"] == resumed["resumed_from_step"]
    saved = json.loads(store.storage.read_bytes(f"step-{resumed['resumed_from_step']:08d}/metrics.json"))
    assert (resumed["resumed_epoch"], resumed["resumed_batches_in_epoch"]) == (
        saved["data_position"]["epoch"], saved["data_position"]["batches_in_epoch"],
    )  # fmt: skip


def test_job_killed_between_checkpoint_upload_and_commit_resumes_from_previous(
    shards, ray_head, s3_url, tmp_path
):
    args = [
        "--shards", shards, "--checkpoints", s3_url, "--run-name", "half-written", "--model", "debug",
        "--pretrained", "", "--max-frames", "6", "--batch-size", "4", "--candidates", "3",
        "--clips-per-video", "4", "--loader-workers", "0", "--lr", "1e-3", "--coef-lr", "1.0",
        "--every-steps", "5", "--num-workers", "2", "--log-every", "5",
    ]  # fmt: skip
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_head.address,
        "PIPELINE_FAILPOINTS": "checkpoint_before_marker=600@2",
    }
    command = [sys.executable, "jobs/post_pretrain.py", *args, "--max-steps", "15"]
    log = tmp_path / "job.log"
    with open(log, "wb") as sink:
        job = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=sink,
        )
    store = CheckpointStore(s3_url, "half-written")
    try:
        # step 10's files are uploaded and its marker is not: the second save is paused there
        _wait_until(lambda: store.storage.list("step-00000010/"), timeout_s=300, what=log)
        assert [ref.step for ref in store.committed()] == [5]
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    time.sleep(2.0)
    env.pop("PIPELINE_FAILPOINTS")
    again = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from" in again.stdout + again.stderr and "step-00000005" in again.stdout + again.stderr
    assert [ref.step for ref in store.committed()][-1] == 15


def test_changed_model_is_refused(shards, tmp_path):
    config = debug_config(shards, str(tmp_path / "ckpt"), "refuse", max_steps=2, every_steps=1)
    post_pretrain_worker(config, single_process_runtime())
    changed = replace(
        config, model=replace(config.model, head="seqTransf"), loop=replace(config.loop, max_steps=4)
    )
    with pytest.raises(ValueError, match="head=meanP.*head=seqTransf"):
        post_pretrain_worker(changed, single_process_runtime())


def test_tight_objective_returns_this_ranks_share_of_the_loss():
    # loop.Objective: a rank returns its share of the global mean; the loop multiplies by world size.
    import torch

    from model.losses import MILNCELoss, milnce_from_pair_scores
    from pipelines.training.post_pretrain import milnce_objective

    scores = torch.randn(3 * 2, 3)  # (clips x candidates, clips), as the tight head returns them
    batch = {"video": None, "video_mask": None, "text": torch.zeros(3, 2, 4, dtype=torch.long),
             "text_mask": torch.ones(3, 2, dtype=torch.bool)}  # fmt: skip
    model = lambda video, mask, tokens: {"scores": scores}  # noqa: E731
    local_mean = milnce_from_pair_scores(scores.reshape(3, 2, 3), batch["text_mask"])
    assert torch.allclose(milnce_objective(MILNCELoss(rank=0, world_size=1))(model, batch), local_mean)
    assert torch.allclose(milnce_objective(MILNCELoss(rank=1, world_size=2))(model, batch), local_mean / 2)


def capture_training(outcome: dict, config, storage_path: str) -> None:
    """Thread target: run the Ray Train job, leaving its result (or its error) in `outcome`."""
    try:
        outcome["result"] = run_post_pretraining(config, storage_path=storage_path)
    except BaseException as error:  # reported by the test thread
        outcome["error"] = error


def train_worker_actors(address: str) -> list:
    """The live Ray Train workers of the cluster at `address` (with no address, the state API may pick
    another cluster running on the machine)."""
    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True)
    workers = [actor for actor in actors if "TrainWorker" in (actor.class_name or "")]
    assert workers, [actor.class_name for actor in actors]
    return workers


def _wait_until(condition, *, timeout_s: float, what: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise TimeoutError(
        f"condition not met in {timeout_s} s" + (f"; log tail: {what.read_text()[-3000:]}" if what else "")
    )
