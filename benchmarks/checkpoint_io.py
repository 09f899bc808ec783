"""Checkpoint I/O: save() and restore (latest() + download()) of a ViT-B/32-sized checkpoint, on a
moto S3 server on loopback against a local folder as the baseline, measured in the same run.

    .venv/bin/python benchmarks/checkpoint_io.py [--param-count 151277313] [--repeats 2] [--work-dir DIR]

The checkpoint is what the trainer writes: `model.safetensors` (random fp32 tensors with CLIP
ViT-B/32's shapes, 151,277,313 parameters = 605 MB), `train_state.pt` written by save_train_state
with an AdamW state (exp_avg + exp_avg_sq: 2x the weights), `config.json`, `metrics.json`. save()
includes hashing every file (sha256 for the commit marker), uploading, the marker, latest.json and
pruning (keep_last=1, so from the second repeat on a previous checkpoint is deleted too); restore is
latest() (marker + size check) and download() (streamed, sha256-verified).

Caveats: the local baseline reads from and writes to the page cache (the files were just written),
and moto keeps objects in its own process (spooled to temp files), so the S3 figures measure the
client path and loopback HTTP, not a real object store's disks or network.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from infra.s3_server import LocalS3Server, S3ServerConfig
from pipelines.checkpoint.layout import METRICS_FILE, RUN_CONFIG_FILE, TRAIN_STATE_FILE, WEIGHTS_FILE
from pipelines.checkpoint.store import CheckpointConfig, CheckpointStore
from pipelines.cli import parse_config
from pipelines.storage import S3StorageConfig
from pipelines.training.train_state import DataPosition, capture_rng_state, save_train_state

MB = 1e6


@dataclass(frozen=True, kw_only=True)
class BenchmarkArgs:
    """Time checkpoint save/restore to a loopback S3 server and to a local folder."""

    param_count: int = 151_277_313  # CLIP ViT-B/32 (open_clip "ViT-B-32"), fp32
    repeats: int = 2  # saves + restores per backend; the median is reported
    work_dir: Path | None = None  # where the local checkpoint, the local store and downloads go (temp dir)
    s3_part_size_mib: int = 8  # multipart part size (pipelines.storage's default is 8 MiB)


def vit_b32_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """CLIP ViT-B/32's parameter names and shapes (vision width 768, text width 512, 12+12 layers)."""
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("visual.conv1.weight", (768, 3, 32, 32)),
        ("visual.class_embedding", (768,)),
        ("visual.positional_embedding", (50, 768)),
        ("visual.ln_pre.weight", (768,)),
        ("visual.ln_pre.bias", (768,)),
    ]
    shapes += _transformer_shapes("visual.transformer", width=768, layers=12)
    shapes += [
        ("visual.ln_post.weight", (768,)),
        ("visual.ln_post.bias", (768,)),
        ("visual.proj", (768, 512)),
    ]
    shapes += [("token_embedding.weight", (49408, 512)), ("positional_embedding", (77, 512))]
    shapes += _transformer_shapes("transformer", width=512, layers=12)
    shapes += [("ln_final.weight", (512,)), ("ln_final.bias", (512,)), ("text_projection", (512, 512))]
    return [*shapes, ("logit_scale", ())]


def _transformer_shapes(prefix: str, *, width: int, layers: int) -> list[tuple[str, tuple[int, ...]]]:
    per_layer = {
        "ln_1.weight": (width,),
        "ln_1.bias": (width,),
        "attn.in_proj_weight": (3 * width, width),
        "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width),
        "attn.out_proj.bias": (width,),
        "ln_2.weight": (width,),
        "ln_2.bias": (width,),
        "mlp.c_fc.weight": (4 * width, width),
        "mlp.c_fc.bias": (4 * width,),
        "mlp.c_proj.weight": (width, 4 * width),
        "mlp.c_proj.bias": (width,),
    }
    return [
        (f"{prefix}.resblocks.{i}.{name}", shape) for i in range(layers) for name, shape in per_layer.items()
    ]


def parameter_shapes(param_count: int) -> list[tuple[str, tuple[int, ...]]]:
    """ViT-B/32's shapes if param_count is its count; otherwise its shapes repeated/cut to param_count."""
    layout, shapes, total = vit_b32_shapes(), [], 0
    while total < param_count:
        name, shape = layout[len(shapes) % len(layout)]
        numel = max(1, int(torch.Size(shape).numel()))
        if total + numel > param_count:
            shape, numel = (param_count - total,), param_count - total
        shapes.append((f"{name}.{len(shapes) // len(layout)}" if len(shapes) >= len(layout) else name, shape))
        total += numel
    return shapes


def write_checkpoint(folder: Path, param_count: int) -> int:
    """The trainer's files for one checkpoint; returns their total bytes. Peak ~ 3x the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    params = {name: torch.randn(shape, generator=generator) for name, shape in parameter_shapes(param_count)}
    save_file(params, str(folder / WEIGHTS_FILE))
    tensors = [torch.nn.Parameter(tensor) for tensor in params.values()]
    optimizer = torch.optim.AdamW(tensors, lr=1e-5)
    for tensor in tensors:  # what AdamW holds after a step, without spending a step's memory on grads
        optimizer.state[tensor] = {
            "step": torch.tensor(1000.0),
            "exp_avg": torch.randn(tensor.shape, generator=generator),
            "exp_avg_sq": torch.rand(tensor.shape, generator=generator),
        }
    position = DataPosition(epoch=0, batches_in_epoch=1000, samples_seen=1000 * 256)
    save_train_state(
        folder / TRAIN_STATE_FILE,
        step=1000,
        optimizer=optimizer,
        data_position=position,
        rng=capture_rng_state(),
    )
    (folder / RUN_CONFIG_FILE).write_text(
        json.dumps({"model": {"backbone": "ViT-B-32"}, "manifest_digest": "0" * 64})
    )
    (folder / METRICS_FILE).write_text(json.dumps({"loss": 1.0}))
    return sum(p.stat().st_size for p in folder.iterdir())


def time_backend(
    root_url: str, folder: Path, scratch: Path, repeats: int, s3: S3StorageConfig | None = None
) -> tuple[list[float], list[float]]:
    """Seconds of save() and of latest() + download(), `repeats` times (new step each time)."""
    store = CheckpointStore(root_url, "bench", config=CheckpointConfig(keep_last=1), s3=s3)
    save_seconds, restore_seconds = [], []
    for repeat in range(repeats):
        start = time.perf_counter()
        store.save(1000 * (repeat + 1), folder)
        save_seconds.append(time.perf_counter() - start)
        target = scratch / f"restored-{repeat}"
        start = time.perf_counter()
        ref = store.latest()
        assert ref is not None and ref.step == 1000 * (repeat + 1)
        store.download(ref, target)
        restore_seconds.append(time.perf_counter() - start)
        shutil.rmtree(target)
    return save_seconds, restore_seconds


def sha256_seconds(folder: Path) -> float:
    start = time.perf_counter()
    for path in folder.iterdir():
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            while chunk := stream.read(8 * 1024 * 1024):
                digest.update(chunk)
    return time.perf_counter() - start


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory of this process (or of `pid`, from /proc), in MB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def report(name: str, seconds: list[float], total_bytes: int) -> float:
    median = statistics.median(seconds)
    runs = ", ".join(f"{s:.2f}" for s in seconds)
    print(f"  {name:<22} {median:7.2f} s  {total_bytes / MB / median:8.1f} MB/s   (runs: {runs})")
    return median


def run(args: BenchmarkArgs) -> None:
    work_dir = Path(tempfile.mkdtemp(prefix="checkpoint-io-", dir=args.work_dir))
    try:
        folder = work_dir / "checkpoint"
        started = time.perf_counter()
        total_bytes = write_checkpoint(folder, args.param_count)
        write_s = time.perf_counter() - started  # includes making the random tensors: an upper bound
        files = len(os.listdir(folder))
        print(f"checkpoint: {args.param_count:,} parameters, {total_bytes / MB:,.0f} MB in {files} files")
        hash_s = sha256_seconds(folder)
        print(f"peak RSS after writing it: {peak_rss_mb():,.0f} MB; sha256 of all its files: {hash_s:.2f} s")
        local = time_backend(str(work_dir / "local-store"), folder, work_dir, args.repeats)
        with LocalS3Server(S3ServerConfig(bucket="checkpoint-bench")) as server:
            os.environ.update(server.env())
            part_bytes = args.s3_part_size_mib * 1024 * 1024
            s3_config = S3StorageConfig(part_size_bytes=part_bytes, multipart_threshold_bytes=part_bytes)
            s3 = time_backend(f"s3://{server.bucket}/checkpoints", folder, work_dir, args.repeats, s3_config)
            moto_peak = peak_rss_mb(server.pid)
        print(f"median of {args.repeats}, MB/s over the checkpoint's {total_bytes / MB:,.0f} MB:")
        print("local folder (baseline)")
        local_save, local_restore = (
            report("save", local[0], total_bytes),
            report("restore", local[1], total_bytes),
        )
        print(
            f"S3 on loopback (moto, {args.s3_part_size_mib} MiB parts, peak server RSS {moto_peak:,.0f} MB)"
        )
        s3_save, s3_restore = report("save", s3[0], total_bytes), report("restore", s3[1], total_bytes)
        print(
            f"ratio S3 / local: save {s3_save / local_save:.1f}x, restore {s3_restore / local_restore:.1f}x"
        )
        print(
            f"eviction (SIGTERM -> committed): writing the files {write_s:.2f} s (upper bound) + S3 save "
            f"{s3_save:.2f} s = {write_s + s3_save:.2f} s, plus the rest of the step in flight; "
            "post_pretrain --preemption-grace-s defaults to 30 s"
        )
        print(f"peak RSS of this process: {peak_rss_mb():,.0f} MB")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:

    run(parse_config(BenchmarkArgs, argv))


if __name__ == "__main__":
    main()
