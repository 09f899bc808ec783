"""The capacity plan's arithmetic on known inputs, read from result files in the benchmarks' schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.plan_capacity import main
from pipelines.capacity import CapacityConfig, plan_capacity, render

SHARD_RESULT = {
    "schema": "shard_throughput/v1", "measured_utc": "2026-11-25T08:30:00Z", "machine": "test", "cores": 2,
    "cpu": {"naive": {"video_seconds_per_cpu_second": 37.0}, "decode": {"video_seconds_per_cpu_second": 80.0},
            "job": {"video_seconds_per_cpu_second": 50.0}},
    "per_kind": {}, "peak_rss_mib_per_task": 256.0, "output_bytes_per_video_second": 12000.0, "gpu": None,
}  # fmt: skip
GPU_TRAIN_RESULT = {
    "schema": "train_throughput/v1", "measured_utc": "2026-11-25T08:40:00Z", "device": "cuda",
    "gpu_name": "NVIDIA H100 80GB HBM3", "backbone": "ViT-B-32", "max_frames": 12, "candidates": 5,
    "batch_size": 32, "baseline": {"clips_per_second": 50.0},
    "project": {"clips_per_second": 100.0, "data_wait_fraction": 0.05, "mfu": 0.3},
    "input_pipeline_clips_per_second": 400.0,
}  # fmt: skip
CPU_DEBUG_TRAIN_RESULT = {**GPU_TRAIN_RESULT, "device": "cpu", "gpu_name": None, "backbone": "debug"}


def write_results(folder: Path, train: dict | None) -> dict[str, str]:
    shard_file, train_file = folder / "shard.json", folder / "train.json"
    shard_file.write_text(json.dumps(SHARD_RESULT))
    if train is not None:
        train_file.write_text(json.dumps(train))
    return {"shard_results": str(shard_file), "train_results": str(train_file)}


def small_config(files: dict[str, str], **overrides) -> CapacityConfig:
    # 1000 videos x 360 s = 360,000 video seconds; at 50 video-s per core-s: 7200 core-s = 2 core-hours.
    settings = {
        "videos": 1000, "mean_duration_s": 360.0, "epochs": 2.0, "clips_per_video": 8,
        "sharding_hours": 0.25, "training_hours": 0.01, "cores_per_cpu_node": 4, "gpus_per_gpu_node": 2,
    }  # fmt: skip
    return CapacityConfig(**files, **{**settings, **overrides})


def test_sharding_cores_hours_storage_and_shape(tmp_path):
    plan = plan_capacity(small_config(write_results(tmp_path, GPU_TRAIN_RESULT))).sharding
    assert plan.video_seconds == 360_000
    assert plan.core_hours == pytest.approx(2.0)
    # 2 core-hours in 0.25 h needs 8 cores = 2 nodes of 4; they finish in exactly 0.25 h
    assert (plan.cores, plan.nodes, plan.wall_hours) == (8, 2, pytest.approx(0.25))
    assert plan.storage_bytes == pytest.approx(12000.0 * 360_000)
    assert plan.memory_gib_per_node == pytest.approx(4 * 256 / 1024)


def test_shape_rounds_up_to_whole_nodes(tmp_path):
    plan = plan_capacity(small_config(write_results(tmp_path, None), sharding_hours=0.3)).sharding
    # 2 / 0.3 = 6.67 cores -> 2 nodes of 4 = 8 cores -> 2 / 8 = 0.25 h, within the 0.3 h target
    assert (plan.nodes, plan.cores, plan.wall_hours) == (2, 8, pytest.approx(0.25))


def test_training_gpu_hours_from_a_gpu_measurement(tmp_path):
    plan = plan_capacity(small_config(write_results(tmp_path, GPU_TRAIN_RESULT)))
    train = plan.training
    assert train is not None and not train.assumed and plan.training_missing == ""
    # 1000 videos x 8 clips = 8000 clips per epoch, x 2 epochs = 16000 clips at 100 clips/s = 160 GPU-s
    assert (train.clips_per_epoch, train.clips) == (8000, 16000)
    assert train.gpu_hours == pytest.approx(160 / 3600)
    # 0.0444 GPU-h in 0.01 h needs 4.44 GPUs -> 3 nodes of 2 = 6 GPUs
    assert (train.nodes, train.gpus) == (3, 6)
    assert train.wall_hours == pytest.approx(160 / 3600 / 6)


def test_ddp_efficiency_scales_gpu_hours(tmp_path):
    files = write_results(tmp_path, GPU_TRAIN_RESULT)
    full = plan_capacity(small_config(files)).training
    half = plan_capacity(small_config(files, ddp_efficiency=0.5)).training
    assert full is not None and half is not None
    assert half.gpu_hours == pytest.approx(2 * full.gpu_hours)


def test_cpu_debug_measurement_is_not_used_for_gpu_hours(tmp_path):
    plan = plan_capacity(small_config(write_results(tmp_path, CPU_DEBUG_TRAIN_RESULT)))
    assert plan.training is None
    assert "not measured on a GPU" in plan.training_missing
    assert "benchmarks/train_throughput.py" in plan.training_missing
    assert "NOT PLANNED" in render(plan)


def test_assumed_figure_is_used_and_labelled(tmp_path):
    files = write_results(tmp_path, CPU_DEBUG_TRAIN_RESULT)
    plan = plan_capacity(small_config(files, assume_train_clips_per_second_per_gpu=50.0))
    assert plan.training is not None and plan.training.assumed
    assert plan.training.gpu_hours == pytest.approx(16000 / 50 / 3600)
    assert "ASSUMED" in render(plan)


def test_missing_shard_result_says_what_to_run(tmp_path):
    with pytest.raises(ValueError, match="benchmarks/shard_throughput.py"):
        plan_capacity(CapacityConfig(shard_results=str(tmp_path / "nope.json")))


def test_wrong_schema_is_refused(tmp_path):
    files = write_results(tmp_path, GPU_TRAIN_RESULT)
    Path(files["train_results"]).write_text(json.dumps({**GPU_TRAIN_RESULT, "schema": "other/v9"}))
    with pytest.raises(ValueError, match="train_throughput/v1"):
        plan_capacity(small_config(files))


def test_command_prints_the_plan(tmp_path, capsys):
    files = write_results(tmp_path, GPU_TRAIN_RESULT)
    argv = ["--shard-results", files["shard_results"], "--train-results", files["train_results"]]
    assert main([*argv, "--videos", "380000", "--mean-duration-s", "400"]) == 0
    out = capsys.readouterr().out
    assert "152.0 million video seconds" in out
    # 152e6 s / 50 video-s per core-s / 3600 = 844 core-hours; 3.04e6 clips / 100 / 3600 = 8.4 GPU-hours
    assert "844 core-hours" in out and "8.4 GPU-hours" in out
    with pytest.raises(SystemExit) as refused:  # the config's own check, reported by the parser
        main([*argv, "--videos", "0"])
    assert refused.value.code == 2
