"""Post-pretraining CLIP4Clip with MIL-NCE on Ray Train (TorchTrainer, DDP: NCCL on GPUs, gloo on CPUs).

The driver starts one training worker per GPU (or CPU slot); each worker streams its share of the
shards, trains, and rank 0 commits checkpoints to object storage. Resubmitting the same job, and
Ray Train's restart of a failed worker group, continue from the last committed checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Literal

import torch

from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.losses import MILNCELoss, milnce_from_pair_scores
from pipelines.checkpoint.layout import METRICS_FILE
from pipelines.checkpoint.store import CheckpointConfig, CheckpointStore
from pipelines.config_values import PositiveInt
from pipelines.sharding.manifest import read_manifest
from pipelines.storage import open_storage
from pipelines.training.clips import ClipConfig
from pipelines.training.loop import LoopConfig, LoopResult, train
from pipelines.training.optim import OptimConfig
from pipelines.training.ray_job import WorkersConfig, run_ray_training
from pipelines.training.runtime import Runtime
from pipelines.training.stream import ClipStream, StreamConfig, usable_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClipDataConfig:
    batch_size: PositiveInt = 32  # clips per rank per micro-batch (when global_batch_size is 0)
    # Clips per micro-batch over all ranks; each rank takes global_batch_size // world_size. Set it when the
    # world size may change (elastic workers, a resubmission with another --num-workers): the batches, the
    # learning-rate schedule and the epoch's clips then stay those of the original run. A world size that
    # does not divide it rounds the global batch down to a multiple of it (a warning says so). 0: batch_size
    # per rank, so the global batch scales with the world size.
    global_batch_size: int = 0
    candidates: PositiveInt = 5  # K captions per clip (MIL-NCE's bag)
    clips_per_video: PositiveInt = 8  # clips cut from each video read
    shuffle_buffer: int = 1000
    loader_workers: int = 2  # DataLoader processes per training worker
    # where JPEGs are decoded: "workers" (PIL in the loader processes) or "device" (nvJPEG on the GPU; for
    # nodes with too few cores per GPU, see benchmarks/train_throughput.py)
    decode_on: Literal["workers", "device"] = "workers"

    def rank_batch_size(self, world_size: int) -> int:
        """Clips per rank per micro-batch on `world_size` ranks."""
        if not self.global_batch_size:
            return self.batch_size
        if self.global_batch_size < world_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is smaller than the {world_size} workers: every "
                "worker needs at least one clip per batch"
            )
        if self.global_batch_size % world_size:
            log.warning(
                "global_batch_size %d is not divisible by %d workers: using %d clips per worker (%d in all)",
                self.global_batch_size, world_size, self.global_batch_size // world_size,
                self.global_batch_size // world_size * world_size,
            )  # fmt: skip
        return self.global_batch_size // world_size


@dataclass(frozen=True, kw_only=True)
class PostPretrainConfig:
    """Post-pretrain CLIP4Clip with MIL-NCE on shards made by jobs/shard_howto100m.py."""

    shards: str  # the sharding job's --out: local folder or s3://bucket/prefix
    checkpoints: str  # root for checkpoints: local folder or s3://bucket/prefix
    run_name: str  # checkpoints go to <checkpoints>/<run_name>/; the same name resumes
    model: CLIP4ClipConfig = field(default_factory=CLIP4ClipConfig)
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)


def milnce_objective(loss: MILNCELoss):
    """batch -> MIL-NCE loss: each clip against its K candidate captions, all else in the global batch negative."""

    def objective(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        clips, candidates, words = batch["text"].shape
        out = model(batch["video"], batch["video_mask"], batch["text"].reshape(clips * candidates, words))
        if "scores" in out:  # tightTransf: a cross-encoder scores every (caption, clip) pair of this rank
            scores = out["scores"].reshape(clips, candidates, clips)
            # local rows only, so this rank's share of the mean is 1 / world_size of it (see loop.Objective)
            return milnce_from_pair_scores(scores, batch["text_mask"].bool()) / loss.world_size
        text = out["text"].reshape(clips, candidates, -1)
        return loss(out["video"], text, out["logit_scale"], batch["text_mask"].bool())

    return objective


def clip_config(config: PostPretrainConfig) -> ClipConfig:
    return ClipConfig(
        max_frames=config.model.max_frames,
        candidates=config.data.candidates,
        clips_per_video=config.data.clips_per_video,
    )


def check_before_start(config: PostPretrainConfig) -> None:
    """What every worker would fail on, found in the driver before any starts (ValueError / StorageError):
    an unreachable store, unusable shards, a global batch some worker count cannot split."""
    CheckpointStore(config.checkpoints, config.run_name)
    check_training_data(config)
    for world_size in config.workers.possible_world_sizes():
        config.data.rank_batch_size(world_size)


def check_training_data(config: PostPretrainConfig) -> None:
    """Every worker's first read, done once in the driver before any starts: a wrong or empty --shards is
    answered at once with what to fix, not by Ray Train restarting workers that can only fail the same way."""
    storage = open_storage(config.shards)
    try:
        usable_shards(read_manifest(storage), clip_config(config), root=storage.url)
    except ValueError as error:
        raise ValueError(f"--shards {config.shards}: {error}") from None


def build_stream(config: PostPretrainConfig, model: CLIP4Clip, runtime: Runtime) -> ClipStream:
    stream_config = StreamConfig(
        shards=config.shards,
        batch_size=config.data.rank_batch_size(runtime.world_size),
        image_size=model.image_size,
        max_words=config.model.max_words,
        shuffle_buffer=config.data.shuffle_buffer,
        train=True,
        seed=config.loop.seed,
        num_workers=config.data.loader_workers,
        pin_memory=runtime.device.type == "cuda",
        video_dtype="uint8" if runtime.device.type == "cuda" else "float32",  # GPU: normalise on the device
        decode_on=config.data.decode_on,
        clip=clip_config(config),
    )
    return ClipStream(stream_config, model.tokenizer(), rank=runtime.rank, world_size=runtime.world_size)


def run_config_record(config: PostPretrainConfig, manifest_digest: str, runtime: Runtime) -> dict:
    """What a checkpoint records about the run that made it (config.json)."""
    return {
        "run_name": config.run_name,
        "objective": "milnce",
        "model": config.model.to_dict(),
        "job": dataclasses.asdict(config),
        "shards": config.shards,
        "manifest_digest": manifest_digest,
        "world_size": runtime.world_size,
        # what defines the epoch's clip sequence, which the data position counts in: a resume needs the same
        # (the world size, loader workers, batch size and shuffle buffer may change)
        "clip_sequence": {
            "manifest_digest": manifest_digest,
            "seed": config.loop.seed,
            "max_frames": config.model.max_frames,
            "candidates": config.data.candidates,
            "clips_per_video": config.data.clips_per_video,
        },
    }


def post_pretrain_worker(
    config: PostPretrainConfig, runtime: Runtime, report=lambda metrics: None, wrap=lambda m: m
) -> LoopResult:
    """One training worker's whole job (also runnable without Ray: world_size 1, no wrap)."""
    torch.manual_seed(config.loop.seed)  # identical initial weights on every rank
    model = CLIP4Clip.from_config(config.model)
    stream = build_stream(config, model, runtime)
    store = CheckpointStore(config.checkpoints, config.run_name, config=config.checkpoint)
    return train(
        model=model,
        objective=milnce_objective(MILNCELoss(rank=runtime.rank, world_size=runtime.world_size)),
        data=stream,
        store=store,
        optim=config.optim,
        loop=config.loop,
        runtime=runtime,
        run_config=run_config_record(config, stream.manifest_digest, runtime),
        wrap=wrap,
        report=report,
    )


@dataclass(frozen=True, kw_only=True)
class PostPretrainResult:
    checkpoint: str  # URL of the run's last committed checkpoint
    step: int
    metrics: dict  # that checkpoint's metrics.json: loss history, data position, where it resumed

    @property
    def preempted(self) -> bool:
        """Stopped by SIGTERM before max_steps: submitting the job again continues from `checkpoint`."""
        return bool(self.metrics.get("preempted"))


def run_post_pretraining(config: PostPretrainConfig, *, storage_path: str | None = None):
    """Runs the Ray Train job on the current Ray cluster (ray.init() first, or inside `ray job submit`)."""
    check_before_start(config)
    run_ray_training(
        post_pretrain_worker,
        config,
        workers=config.workers,
        run_name=config.run_name,
        storage_path=storage_path,
    )  # raises ray.train.TrainingFailedError once max_failures restarts are spent
    return read_run_result(config)


def read_run_result(config: PostPretrainConfig) -> PostPretrainResult:
    """The run's outcome as its checkpoints record it (Ray Train's Result holds only Ray-managed checkpoints)."""
    store = CheckpointStore(config.checkpoints, config.run_name)
    latest = store.latest()
    if latest is None:
        raise RuntimeError(f"{store.url} holds no committed checkpoint after training")
    metrics = json.loads(store.read_file(latest, METRICS_FILE))
    return PostPretrainResult(checkpoint=latest.url, step=latest.step, metrics=metrics)
