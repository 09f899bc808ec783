"""Post-pretraining throughput on one device: a straightforward baseline against the project's trainer.

    .venv/bin/python benchmarks/train_throughput.py --model ViT-B-32 --device cuda     # the real measurement
    .venv/bin/python benchmarks/train_throughput.py --model debug --device cpu         # shows it works

One run measures, on the same shards (local disk) and the same model (random init, meanP head, 12 frames,
K=5 captions of 32 tokens, MIL-NCE):
  input pipeline  the ClipStream DataLoader alone (no model): clips/s it can deliver, float32 and uint8 batches
  (a) baseline    fp32, eager, float32 batches normalised in the workers (PIL decode), pageable memory,
                  blocking copies, per-parameter AdamW, a loss.item() sync every step: a plain port of CLIP4Clip
  (b) project     pipelines.training.post_pretrain.post_pretrain_worker as users run it: bf16 autocast and fused
                  AdamW on GPU, torch.compile (--compile), uint8 batches (4x fewer bytes) in pinned memory copied
                  non-blocking and normalised on the GPU, no host sync per step
and prints clips/s, MFU (FLOPs per clip counted with FlopCounterMode on one forward+backward, against a
matmul peak measured in the same run), the fraction of wall time spent waiting for data, peak memory, and
(b)/(a). --profile-steps N adds a torch.profiler summary of N steps of (b): top kernels, optimizer, comms.

Shards: --shards points at an existing sharding-job output; otherwise a sample collection (24-48 s videos,
so clips have all 12 frames) is made and sharded with the real shard task, then hard-linked into as many
copies as the run needs so that no epoch boundary falls inside the measurement.
Results go to benchmarks/results/train_throughput.json (schema train_throughput/v1, read by the capacity plan).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from infra.sample_collection import SampleCollectionSpec, generate_sample_collection
from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.losses import MILNCELoss
from pipelines.checkpoint.store import CheckpointConfig
from pipelines.cli import parse_config
from pipelines.sharding.in_process import shard_in_process
from pipelines.sharding.job import ShardingConfig
from pipelines.sharding.manifest import ManifestRow, manifest_key, manifest_part_bytes, read_manifest
from pipelines.sharding.plan import ShardLayoutConfig, SourceConfig
from pipelines.storage import open_storage
from pipelines.training.loop import LoopConfig, _to_device
from pipelines.training.optim import OptimConfig
from pipelines.training.post_pretrain import (
    ClipDataConfig,
    PostPretrainConfig,
    build_stream,
    milnce_objective,
    post_pretrain_worker,
)
from pipelines.training.runtime import Runtime
from pipelines.training.train_state import DataPosition

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"
ISSUE_FLOPS_PER_CLIP = (
    350e9  # the issue's estimate for ViT-B/32, 12 frames at 224 + 5 captions of 32 tokens, fwd+bwd
)


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    model: Literal["ViT-B-32", "ViT-B-16", "debug"] = "debug"
    device: Literal["cpu", "cuda"] = "cpu"
    steps: int = 20  # measured optimizer steps per run, after the warm-up
    warmup_steps: int = 5  # not measured: loader start, compilation, allocator warm-up
    batch_size: int = 0  # clips per step; 0: 8 on CPU, on GPU the largest of 512/256/128/... that fits
    loader_workers: int = 0  # DataLoader processes; 0: one per core (the shards permitting)
    compile: Literal["auto", "on", "off"] = "auto"  # (b) only; auto: on for cuda, off on CPU
    decode_on: Literal["auto", "workers", "device"] = "auto"  # (b)'s JPEG decoding; auto: the faster measured
    shards: str = ""  # an existing sharding-job output root; "": make sample shards in a temporary folder
    videos: int = 16  # sample videos to generate (before hard-link replication)
    input_batches: int = 20  # batches timed for the input pipeline alone
    profile_steps: int = 0  # > 0: profile this many steps of (b) and print the summary
    repeats: int = 2  # (a) and (b) run alternately this many times; the best run of each counts (noise)
    peak_tflops: float = 0.0  # > 0: MFU against this peak instead of the matmul peak measured here
    out: str = str(RESULTS)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup_steps < 1:
            raise ValueError("--steps and --warmup-steps must be >= 1")


@dataclass(frozen=True, kw_only=True)
class RunFigures:
    clips_per_second: float
    data_wait_fraction: float  # of the measured wall time
    peak_memory_mib: float  # GPU: max allocated; CPU: peak RSS of this process (monotonic over the run)
    mfu: float | None = None


# --------------------------------------------------------------------------------------------------
# Shards


def make_sample_shards(root: Path, videos: int) -> str:
    """A sample collection of 24-48 s videos (every clip gets all 12 frames), sharded in this process."""
    spec = SampleCollectionSpec(
        num_good_videos=videos, min_duration_s=24, max_duration_s=48, include_broken=False, include_fifo=False
    )
    collection = generate_sample_collection(root / "collection", spec)
    source = SourceConfig(
        videos=str(collection.videos_dir),
        metadata=str(collection.metadata_csv),
        captions=str(collection.captions_json),
    )
    out = str(root / "shards")
    shard_in_process(ShardingConfig(source=source, out=out, layout=ShardLayoutConfig(videos_per_shard=2)))
    return out


def replicate_shards(source: str, target: Path, copies: int) -> str:
    """`copies` copies of a local shard root (tars hard-linked, manifest rows re-pointed), as one new root."""
    table = read_manifest(open_storage(source))
    rows = [ManifestRow(**row) for row in table.to_pylist()]
    shard_keys = sorted({row.shard for row in rows})
    (target / "manifest").mkdir(parents=True)
    for copy in range(copies):
        for index, key in enumerate(shard_keys):
            new_key = key.replace(".tar", f"-copy{copy:04d}.tar")
            _link_or_copy(Path(source) / key, target / new_key)
            part = [dataclasses.replace(row, shard=new_key) for row in rows if row.shard == key]
            (target / manifest_key(copy * len(shard_keys) + index)).write_bytes(manifest_part_bytes(part))
    return str(target)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)


def clips_in(shards: str, data: ClipDataConfig, max_frames: int) -> int:
    from pipelines.training.clips import ClipConfig
    from pipelines.training.stream import usable_shards

    clip = ClipConfig(max_frames=max_frames, candidates=data.candidates, clips_per_video=data.clips_per_video)
    return sum(shard.clips for shard in usable_shards(read_manifest(open_storage(shards)), clip, root=shards))


# --------------------------------------------------------------------------------------------------
# FLOPs and peak


def count_flops_per_clip(model: CLIP4Clip, batch: dict, device: torch.device) -> float:
    """Forward + backward FLOPs of the MIL-NCE step for one clip (matmuls and convolutions, as
    FlopCounterMode counts them: 2 per multiply-add), from a batch of 2 clips."""
    two = {key: value[:2] if isinstance(value, torch.Tensor) else value[:2] for key, value in batch.items()}
    two = _to_device(two, device)
    objective = milnce_objective(MILNCELoss(rank=0, world_size=1))
    with FlopCounterMode(display=False) as counter:
        objective(model, two).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def measure_matmul_peak(device: torch.device, trials: int = 5) -> tuple[float, str]:
    """FLOP/s of a large square matmul in the precision the project trains in (bf16 on GPU, fp32 on CPU):
    the best of `trials` timings, since other jobs on a shared machine only ever make it look slower."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    repeats, best = (20 if device.type == "cuda" else 5), 0.0
    for _ in range(trials + 1):  # the first trial warms up
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started))
    return best, f"{size}x{size} {dtype} matmul, best of {trials}"


# --------------------------------------------------------------------------------------------------
# The runs


# The data paths compared with no model: StreamConfig overrides. The baseline's path, the project's worker path
# (uint8 batches, pinned on GPU), and nvJPEG decoding on the GPU (measured only there).
DATA_PATHS = {
    "workers_float32": {"video_dtype": "float32", "pin_memory": False, "decode_on": "workers"},
    "workers_uint8": {"video_dtype": "uint8", "decode_on": "workers"},
    "device_nvjpeg": {"decode_on": "device"},
}


def measure_input_pipeline(config: PostPretrainConfig, runtime: Runtime, model: CLIP4Clip, batches: int,
                           overrides: dict) -> float:  # fmt: skip
    """Clips/s the stream delivers to the device as the model's float32 input, with no model (timed from its
    first batch: worker start-up excluded)."""
    stream = build_stream(config, model, runtime)
    stream.config = dataclasses.replace(stream.config, **overrides)
    loader = iter(stream.loader(DataPosition(epoch=0, batches_in_epoch=0, samples_seen=0)))
    _to_device(next(loader), runtime.device)
    _sync(runtime.device)
    started, served = time.perf_counter(), 0
    for batch in _take(loader, min(batches, stream.batches_per_epoch - 1)):
        served += int(_to_device(batch, runtime.device)["video"].shape[0])
    _sync(runtime.device)
    del loader
    return served / (time.perf_counter() - started)


def run_baseline(config: PostPretrainConfig, runtime: Runtime, bench: BenchmarkConfig) -> RunFigures:
    """(a): fp32 eager, float32 batches from pageable memory, blocking copies, a sync every step."""
    device = runtime.device
    torch.manual_seed(config.loop.seed)
    model = CLIP4Clip.from_config(config.model).to(device)
    stream = build_stream(config, model, runtime)
    stream.config = dataclasses.replace(stream.config, **DATA_PATHS["workers_float32"])
    optimizer = torch.optim.AdamW(
        model.param_groups(config.optim.lr, config.optim.coef_lr, config.optim.weight_decay),
        betas=(config.optim.beta1, config.optim.beta2), eps=config.optim.eps, foreach=False,
    )  # fmt: skip
    objective = milnce_objective(MILNCELoss(rank=0, world_size=1))
    _reset_peak_memory(device)
    wait, started, clips = 0.0, 0.0, 0
    batches = iter(stream.loader(DataPosition(epoch=0, batches_in_epoch=0, samples_seen=0)))
    for step in range(bench.warmup_steps + bench.steps):
        if step == bench.warmup_steps:
            wait, started, clips = 0.0, time.perf_counter(), 0
        waiting_since = time.perf_counter()
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in next(batches).items()}
        wait += time.perf_counter() - waiting_since
        loss = objective(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale()
        loss.item()  # a plain loop logs every step: one host sync per step
        clips += int(batch["video"].shape[0])
    elapsed = time.perf_counter() - started
    return RunFigures(
        clips_per_second=clips / elapsed,
        data_wait_fraction=wait / elapsed,
        peak_memory_mib=_peak_memory(device),
    )


def run_project(config: PostPretrainConfig, runtime: Runtime, bench: BenchmarkConfig) -> RunFigures:
    """(b): the project's worker function, timed by the loop's own logging windows after the warm-up."""
    reports: list[dict] = []
    _reset_peak_memory(runtime.device)
    post_pretrain_worker(config, runtime, report=reports.append)
    measured = [r for r in reports if r["step"] > bench.warmup_steps]
    clips = sum(r["samples_per_second"] * _window_seconds(r, reports) for r in measured)
    seconds = sum(_window_seconds(r, reports) for r in measured)
    wait = sum(r["data_wait_fraction"] * _window_seconds(r, reports) for r in measured)
    return RunFigures(
        clips_per_second=clips / seconds, data_wait_fraction=wait / seconds, peak_memory_mib=_peak_memory(runtime.device)
    )  # fmt: skip


def measure_both(
    config: PostPretrainConfig, runtime: Runtime, bench: BenchmarkConfig
) -> tuple[RunFigures, RunFigures]:
    """(a) and (b) alternately, `repeats` times, so load drifting on a shared machine hits both alike."""
    baselines, projects = [], []
    for repeat in range(max(1, bench.repeats)):
        baselines.append(run_baseline(config, runtime, bench))
        projects.append(run_project(dataclasses.replace(config, run_name=f"bench-{repeat}"), runtime, bench))
    return max(baselines, key=_clips_per_second), max(projects, key=_clips_per_second)


def _clips_per_second(run: RunFigures) -> float:
    return run.clips_per_second


def _window_seconds(report: dict, reports: list[dict]) -> float:
    """Wall time of a logging window: its optimizer steps x the loop's step_time_s."""
    previous = max((r["step"] for r in reports if r["step"] < report["step"]), default=0)
    return (report["step"] - previous) * report["step_time_s"]


def profile_project(config: PostPretrainConfig, runtime: Runtime, steps: int) -> str:
    """torch.profiler over `steps` steps of (b): top kernels by device (or CPU) time, optimizer and comms."""
    from torch.profiler import ProfilerActivity, profile

    config = dataclasses.replace(
        config, run_name="profile", loop=dataclasses.replace(config.loop, max_steps=steps, log_every=steps)
    )
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runtime.device.type == "cuda" else [])
    reports: list[dict] = []
    with profile(activities=activities) as profiler:
        post_pretrain_worker(config, runtime, report=reports.append)
    events = profiler.key_averages()
    on_gpu = runtime.device.type == "cuda"
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in events) or 1.0
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    comms = sum(getattr(e, key) for e in events if "nccl" in e.key.lower() or "all_reduce" in e.key.lower())
    lines = [events.table(sort_by=key, row_limit=15)]
    lines.append(
        f"profile of {steps} steps: data wait {reports[-1]['data_wait_fraction']:.1%} of wall time; "
        f"optimizer.step {optimizer / 1e3:.1f} ms host time in total; "
        f"communication {comms / total:.1%} of {'device' if on_gpu else 'CPU'} self time"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Helpers


def _take(iterator: Iterator[dict], count: int) -> Iterator[dict]:
    for _ in range(max(0, count)):
        yield next(iterator)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def choose_batch_size(bench: BenchmarkConfig, model_config: CLIP4ClipConfig, device: torch.device) -> int:
    """8 on CPU; on GPU the largest of 512, 256, ... whose bf16 forward+backward fits (synthetic batch)."""
    if bench.batch_size > 0:
        return bench.batch_size
    if device.type != "cuda":
        return 8
    model = CLIP4Clip.from_config(model_config).to(device)
    objective = milnce_objective(MILNCELoss(rank=0, world_size=1))
    for batch_size in (512, 256, 128, 64, 32, 16, 8):
        try:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                objective(model, synthetic_batch(model, batch_size, 5, device)).backward()
            torch.cuda.synchronize(device)
            return batch_size
        except torch.cuda.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        finally:
            model.zero_grad(set_to_none=True)
    return 4


def synthetic_batch(model: CLIP4Clip, clips: int, candidates: int, device: torch.device) -> dict:
    frames, size, words = model.config.max_frames, model.image_size, model.config.max_words
    return {
        "video": torch.randn(clips, frames, 3, size, size, device=device),
        "video_mask": torch.ones(clips, frames, dtype=torch.bool, device=device),
        "text": torch.randint(1, 1000, (clips, candidates, words), device=device),
        "text_mask": torch.ones(clips, candidates, dtype=torch.bool, device=device),
    }


# --------------------------------------------------------------------------------------------------
# Main


def job_config(
    bench: BenchmarkConfig, shards: str, root: Path, batch_size: int, workers: int
) -> PostPretrainConfig:
    compile_model = bench.compile == "on" or (bench.compile == "auto" and bench.device == "cuda")
    return PostPretrainConfig(
        shards=shards, checkpoints=str(root / "ckpt"), run_name="bench",
        model=CLIP4ClipConfig(backbone=bench.model, pretrained="", max_frames=12, head="meanP"),
        data=ClipDataConfig(batch_size=batch_size, candidates=5, clips_per_video=8, shuffle_buffer=64,
                            loader_workers=workers),
        optim=OptimConfig(lr=1e-4, coef_lr=1e-3),
        loop=LoopConfig(max_steps=bench.warmup_steps + bench.steps, log_every=bench.warmup_steps,
                        compile=compile_model),
        checkpoint=CheckpointConfig(every_steps=100 * (bench.warmup_steps + bench.steps)),
    )  # fmt: skip


def choose_decode(bench: BenchmarkConfig, inputs: dict[str, float]) -> str:
    """Where (b) decodes JPEGs: as asked, or (auto) nvJPEG if it delivered more clips/s than the workers."""
    if bench.decode_on != "auto":
        return bench.decode_on
    return "device" if inputs.get("device_nvjpeg", 0.0) > inputs["workers_uint8"] else "workers"


def prepare_shards(bench: BenchmarkConfig, root: Path, clips_needed: int, data: ClipDataConfig) -> str:
    source = bench.shards or make_sample_shards(root / "sample", bench.videos)
    per_copy = clips_in(source, data, max_frames=12)
    copies = max(1, math.ceil(clips_needed / per_copy))
    if bench.shards and copies == 1:
        return source
    return replicate_shards(source, root / "replicated", copies)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    bench = parse_config(BenchmarkConfig)
    if bench.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no GPU: run on a GPU machine or pass --device cpu")
    device = torch.device(bench.device)
    runtime = Runtime(rank=0, world_size=1, device=device)
    root = Path(tempfile.mkdtemp(prefix="bench-train-throughput-"))
    try:
        results = measure(bench, runtime, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_results(results)
    Path(bench.out).parent.mkdir(parents=True, exist_ok=True)
    Path(bench.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {bench.out}")


def measure(bench: BenchmarkConfig, runtime: Runtime, root: Path) -> dict:
    device = runtime.device
    workers = bench.loader_workers or (os.cpu_count() or 1)
    probe = job_config(bench, "", root, 1, workers)
    batch_size = choose_batch_size(bench, probe.model, device)
    clips_needed = batch_size * (
        bench.warmup_steps + bench.steps + max(bench.profile_steps, bench.input_batches) + 2
    )
    shards = prepare_shards(bench, root, clips_needed, probe.data)
    config = job_config(bench, shards, root, batch_size, workers)
    torch.manual_seed(0)
    model = CLIP4Clip.from_config(config.model).to(device)
    stream = build_stream(config, model, runtime)
    first = next(iter(stream.loader(DataPosition(epoch=0, batches_in_epoch=0, samples_seen=0))))
    flops_per_clip = count_flops_per_clip(model, first, device)
    peak, peak_what = (
        (bench.peak_tflops * 1e12, "given") if bench.peak_tflops else measure_matmul_peak(device)
    )
    paths = [name for name in DATA_PATHS if device.type == "cuda" or name != "device_nvjpeg"]
    inputs = {name: measure_input_pipeline(config, runtime, model, bench.input_batches, DATA_PATHS[name])
              for name in paths}  # fmt: skip
    decode_on = choose_decode(bench, inputs)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, decode_on=decode_on))
    project_path = "device_nvjpeg" if decode_on == "device" else ("workers_uint8" if device.type == "cuda"
                                                                   else "workers_float32")  # fmt: skip
    del model
    baseline, project = measure_both(config, runtime, bench)
    profile = profile_project(config, runtime, bench.profile_steps) if bench.profile_steps else ""
    if not bench.peak_tflops:  # measured again after the runs: a load spike at the start would inflate MFU
        peak = max(peak, measure_matmul_peak(device)[0])
    mfu = {
        name: run.clips_per_second * flops_per_clip / peak for name, run in (("a", baseline), ("b", project))
    }
    return {
        "schema": "train_throughput/v1",
        "measured_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "backbone": bench.model,
        "max_frames": 12,
        "candidates": 5,
        "batch_size": batch_size,
        "baseline": {**dataclasses.asdict(dataclasses.replace(baseline, mfu=mfu["a"]))},
        "project": {**dataclasses.asdict(dataclasses.replace(project, mfu=mfu["b"]))},
        "input_pipeline_clips_per_second": inputs[project_path],
        "details": {
            "machine": f"{os.cpu_count()}-core {platform.machine()} (shared, noisy)",
            "loader_workers": stream.readers_per_rank,
            "compile": config.loop.compile,
            "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
            "flops_per_clip": flops_per_clip,
            "flops_per_clip_issue_estimate_vit_b32": ISSUE_FLOPS_PER_CLIP,
            "peak_flops": peak,
            "peak_flops_from": peak_what,
            "input_pipeline_clips_per_second": inputs,
            "project_data_path": project_path,
            "speedup_b_over_a": project.clips_per_second / baseline.clips_per_second,
            "steps": bench.steps,
            "repeats": bench.repeats,
            "warmup_steps": bench.warmup_steps,
            "shard_clips": clips_in(shards, config.data, max_frames=12),
            "profile": profile,
        },
    }


def print_results(results: dict) -> None:
    details = results["details"]
    print(
        f"\n{results['backbone']} on {results['gpu_name'] or results['device']} ({details['machine']}), "
        f"{results['max_frames']} frames x K={results['candidates']}, batch {results['batch_size']}, "
        f"{details['loader_workers']} loader workers, compile={details['compile']}"
    )
    print(
        f"FLOPs per clip (fwd+bwd, FlopCounterMode): {details['flops_per_clip'] / 1e9:.2f} GFLOP "
        f"(issue's ViT-B/32 estimate: {ISSUE_FLOPS_PER_CLIP / 1e9:.0f}); peak {details['peak_flops'] / 1e12:.2f} "
        f"TFLOP/s ({details['peak_flops_from']})"
    )
    inputs = ", ".join(
        f"{name} {rate:.1f}" for name, rate in details["input_pipeline_clips_per_second"].items()
    )
    print(f"input pipeline alone, clips/s: {inputs}; (b) uses {details['project_data_path']}")
    print(f"{'run':>14} {'clips/s':>9} {'MFU':>8} {'data wait':>10} {'peak MiB':>9} {'vs (a)':>7}")
    for name, key in (("(a) baseline", "baseline"), ("(b) project", "project")):
        run = results[key]
        print(
            f"{name:>14} {run['clips_per_second']:>9.1f} {run['mfu']:>8.2%} {run['data_wait_fraction']:>10.1%} "
            f"{run['peak_memory_mib']:>9.0f} {run['clips_per_second'] / results['baseline']['clips_per_second']:>6.2f}x"
        )
    if details["profile"]:
        print("\n" + details["profile"])


if __name__ == "__main__":
    main()
