"""Capacity plan for a HowTo100M subset: cores x hours to shard it, GPU-hours to post-pretrain on it, the
shards' size, and the cluster shape that finishes each within a target wall time.

Every throughput comes from the benchmarks' result files (benchmarks/results/*.json), never typed in:
- sharding: `shard_throughput/v1`, the whole job's video seconds per CPU second (decode + JPEG + tar +
  upload + manifest, one video per core), and the output bytes per video second;
- training: `train_throughput/v1`, the project loop's clips per second on one device. Only a GPU
  measurement of the default backbone (ViT-B-32) plans GPU-hours; anything else (a CPU run of the debug
  model) is reported as "not measured", unless a planning figure is given with
  --assume-train-clips-per-second-per-gpu, which the plan labels as an assumption.

Clips per epoch = videos x clips_per_video (ClipDataConfig's default, 8): the stream cuts
min(clips_per_video, captions, frames // span) clips per video read, and a HowTo100M video of ~400 s at
1 fps with dozens of ASR captions reaches the cap (pipelines/training/clips.py). Scaling over GPUs and
nodes is taken as linear times --ddp-efficiency.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipelines.config_values import PositiveFloat, PositiveInt
from pipelines.training.post_pretrain import ClipDataConfig

SHARD_SCHEMA = "shard_throughput/v1"
TRAIN_SCHEMA = "train_throughput/v1"
PLANNED_BACKBONE = "ViT-B-32"
MEASURE_SHARDING = "python benchmarks/shard_throughput.py"
MEASURE_TRAINING = f"python benchmarks/train_throughput.py --model {PLANNED_BACKBONE} --device cuda"


@dataclass(frozen=True, kw_only=True)
class CapacityConfig:
    """Plan cores x hours, GPU-hours, storage and cluster shape for sharding + post-pretraining a subset."""

    # written by benchmarks/shard_throughput.py
    shard_results: str = "benchmarks/results/shard_throughput.json"
    # written by benchmarks/train_throughput.py
    train_results: str = "benchmarks/results/train_throughput.json"
    videos: PositiveInt = 380_000  # subset size (HowTo100M-380k)
    mean_duration_s: PositiveFloat = 400.0  # average video length; 380k x 400 s ~ 152 million video seconds
    epochs: PositiveFloat = 1.0  # passes over the subset's clips
    clips_per_video: PositiveInt = ClipDataConfig().clips_per_video  # clips cut from each video read
    sharding_hours: PositiveFloat = 24.0  # target wall time for the sharding job
    training_hours: PositiveFloat = 72.0  # target wall time for post-pretraining
    cores_per_cpu_node: PositiveInt = 32  # vCPUs of one sharding worker node
    gpus_per_gpu_node: PositiveInt = 8  # GPUs of one training worker node
    ddp_efficiency: PositiveFloat = 1.0  # per-GPU throughput kept at scale (1.0 = linear scaling)
    assume_train_clips_per_second_per_gpu: float = 0.0  # >0: plan training with this figure (an assumption)

    def __post_init__(self) -> None:
        positive = (
            "videos",
            "mean_duration_s",
            "epochs",
            "clips_per_video",
            "sharding_hours",
            "training_hours",
        )
        for name in (*positive, "cores_per_cpu_node", "gpus_per_gpu_node"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not 0 < self.ddp_efficiency <= 1:
            raise ValueError(f"--ddp-efficiency must be in (0, 1], got {self.ddp_efficiency}")
        if self.assume_train_clips_per_second_per_gpu < 0:
            raise ValueError("--assume-train-clips-per-second-per-gpu must be >= 0 (0 = use the measurement)")


@dataclass(frozen=True, kw_only=True)
class ShardingPlan:
    video_seconds: float  # total video to decode
    video_seconds_per_core_second: float  # measured, whole job
    core_hours: float
    cores: int  # cores that finish within the target wall time
    nodes: int  # worker nodes of cores_per_cpu_node
    wall_hours: float  # with nodes x cores_per_cpu_node cores
    memory_gib_per_node: float  # one task per core x measured peak RSS per task
    storage_bytes: float  # shards: output bytes per video second x video seconds
    measured: str  # where the figures come from


@dataclass(frozen=True, kw_only=True)
class TrainingPlan:
    clips_per_epoch: int  # videos x clips_per_video
    clips: float  # clips_per_epoch x epochs
    clips_per_second_per_gpu: float
    assumed: bool  # True: the per-GPU figure was given, not measured
    gpu_hours: float
    gpus: int  # GPUs that finish within the target wall time (whole nodes)
    nodes: int
    wall_hours: float
    measured: str


@dataclass(frozen=True, kw_only=True)
class CapacityPlan:
    config: CapacityConfig
    sharding: ShardingPlan
    training: TrainingPlan | None  # None: training throughput not measured on a GPU yet
    training_missing: str  # why training is not planned and what to run; "" when it is


def read_result(path: str, schema: str, how_to_measure: str) -> dict:
    file = Path(path)
    if not file.exists():
        raise ValueError(f"{path} not found: measure it first with `{how_to_measure}`")
    result = json.loads(file.read_text())
    if result.get("schema") != schema:
        raise ValueError(f"{path} has schema {result.get('schema')!r}, expected {schema!r}")
    return result


def plan_sharding(config: CapacityConfig, measured: dict) -> ShardingPlan:
    rate = float(measured["cpu"]["job"]["video_seconds_per_cpu_second"])
    if rate <= 0:
        raise ValueError(f"{config.shard_results}: the job's video_seconds_per_cpu_second must be > 0")
    video_seconds = config.videos * config.mean_duration_s
    core_hours = video_seconds / rate / 3600
    nodes, cores = _nodes_within(core_hours, config.sharding_hours, config.cores_per_cpu_node)
    return ShardingPlan(
        video_seconds=video_seconds,
        video_seconds_per_core_second=rate,
        core_hours=core_hours,
        cores=cores,
        nodes=nodes,
        wall_hours=core_hours / cores,
        memory_gib_per_node=config.cores_per_cpu_node * float(measured["peak_rss_mib_per_task"]) / 1024,
        storage_bytes=float(measured["output_bytes_per_video_second"]) * video_seconds,
        measured=f"{measured.get('measured_utc', '?')} on {measured.get('machine', '?')}",
    )


def measured_gpu_rate(measured: dict) -> tuple[float, str]:
    """(clips/s on one GPU, "") from a GPU run of ViT-B-32, else (0, why it cannot be used)."""
    device, backbone = str(measured.get("device", "")), measured.get("backbone")
    if not device.startswith("cuda") or backbone != PLANNED_BACKBONE:
        return 0.0, (
            f"training throughput not measured on a GPU yet (the result file holds {backbone} on {device}): "
            f"run `{MEASURE_TRAINING}`, or plan with --assume-train-clips-per-second-per-gpu X"
        )
    return float(measured["project"]["clips_per_second"]), ""


def plan_training(config: CapacityConfig, measured: dict | None) -> tuple[TrainingPlan | None, str]:
    rate, missing = (
        measured_gpu_rate(measured) if measured else (0.0, f"no training result: run `{MEASURE_TRAINING}`")
    )
    assumed = config.assume_train_clips_per_second_per_gpu > 0
    if assumed:
        rate, missing = config.assume_train_clips_per_second_per_gpu, ""
    if not rate:
        return None, missing
    clips_per_epoch = config.videos * config.clips_per_video
    clips = clips_per_epoch * config.epochs
    gpu_hours = clips / (rate * config.ddp_efficiency) / 3600
    nodes, gpus = _nodes_within(gpu_hours, config.training_hours, config.gpus_per_gpu_node)
    source = "ASSUMED (--assume-train-clips-per-second-per-gpu)" if assumed else _train_source(measured or {})
    plan = TrainingPlan(
        clips_per_epoch=clips_per_epoch,
        clips=clips,
        clips_per_second_per_gpu=rate,
        assumed=assumed,
        gpu_hours=gpu_hours,
        gpus=gpus,
        nodes=nodes,
        wall_hours=gpu_hours / gpus,
        measured=source,
    )
    return plan, ""


def _train_source(measured: dict) -> str:
    return (
        f"measured {measured.get('measured_utc', '?')} on {measured.get('gpu_name') or measured.get('device')}, "
        f"{measured.get('backbone')}, {measured.get('max_frames')} frames x {measured.get('candidates')} "
        f"captions, batch {measured.get('batch_size')}"
    )


def plan_capacity(config: CapacityConfig) -> CapacityPlan:
    sharding = plan_sharding(config, read_result(config.shard_results, SHARD_SCHEMA, MEASURE_SHARDING))
    train_file = Path(config.train_results)
    measured = (
        read_result(config.train_results, TRAIN_SCHEMA, MEASURE_TRAINING) if train_file.exists() else None
    )
    training, missing = plan_training(config, measured)
    return CapacityPlan(config=config, sharding=sharding, training=training, training_missing=missing)


def render(plan: CapacityPlan) -> str:
    config, shard = plan.config, plan.sharding
    lines = [
        f"subset: {config.videos:,} videos x {config.mean_duration_s:g} s = {shard.video_seconds / 1e6:,.1f} "
        f"million video seconds",
        "",
        f"sharding ({config.shard_results}: {shard.measured})",
        f"  throughput      {shard.video_seconds_per_core_second:g} video-s per core-s (whole job)",
        f"  compute         {shard.core_hours:,.0f} core-hours",
        f"  cluster         {shard.nodes} x {config.cores_per_cpu_node}-core nodes = {shard.cores:,} cores "
        f"-> {shard.wall_hours:.1f} h (target {config.sharding_hours:g} h)",
        f"  memory          {shard.memory_gib_per_node:.1f} GiB per node (one task per core)",
        f"  shards          {shard.storage_bytes / 1e12:,.2f} TB ({shard.storage_bytes / 2**40:,.2f} TiB)",
        "",
        f"post-pretraining ({config.train_results})",
    ]
    return "\n".join(lines + _training_lines(plan))


def _training_lines(plan: CapacityPlan) -> list[str]:
    config, train = plan.config, plan.training
    if train is None:
        return [f"  NOT PLANNED: {plan.training_missing}"]
    label = "ASSUMED, not measured" if train.assumed else "measured"
    return [
        f"  source          {train.measured}",
        f"  clips           {train.clips_per_epoch:,} per epoch ({config.videos:,} videos x "
        f"{config.clips_per_video} clips) x {config.epochs:g} epoch(s) = {train.clips:,.0f}",
        f"  throughput      {train.clips_per_second_per_gpu:g} clips/s per GPU ({label}), "
        f"DDP efficiency {config.ddp_efficiency:g}",
        f"  compute         {train.gpu_hours:,.1f} GPU-hours",
        f"  cluster         {train.nodes} x {config.gpus_per_gpu_node}-GPU nodes = {train.gpus} GPUs "
        f"-> {train.wall_hours:.1f} h (target {config.training_hours:g} h)",
    ]


def _nodes_within(work_hours: float, target_hours: float, units_per_node: int) -> tuple[int, int]:
    """Whole nodes (and their cores or GPUs) that do `work_hours` of one core's / GPU's work within `target_hours`."""
    nodes = math.ceil(work_hours / target_hours / units_per_node)
    return nodes, nodes * units_per_node
