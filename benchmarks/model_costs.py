"""Model costs: parameters per similarity head on ViT-B/32, and CPU forward+backward time of the debug model.

    .venv/bin/python benchmarks/model_costs.py [--repeats 5] [--batch 8] [--frames 12] [--threads N]

Parameter counts use a randomly initialised ViT-B-32 (same shapes as the OpenAI weights). Timings are
medians over `repeats` training steps (forward, loss, backward) after one warm-up -- wall time and the
process's CPU time -- with the CPU-time ratio to meanP/2d measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from model.backbone import create_clip
from model.clip4clip import CLIP4Clip
from model.config import HEADS, CLIP4ClipConfig
from model.losses import SymmetricCrossEntropyLoss, symmetric_cross_entropy
from pipelines.cli import parse_config


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    """Model costs: parameters per similarity head on ViT-B/32, and CPU forward+backward time of the debug model."""

    repeats: int = 5  # timed training steps per head and patch (after one warm-up); the median is reported
    batch: int = 8
    frames: int = 12
    threads: int = 0  # torch intra-op threads (0: torch's default)


def count(parameters) -> int:
    return sum(p.numel() for p in parameters)


def vit_b32_parameter_table() -> list[tuple[str, str, int, int]]:
    """(head, patch, new parameters, total parameters); 'new' = everything not in open_clip's CLIP."""
    clip = create_clip("ViT-B-32", "", quick_gelu=True)
    rows = []
    for head in HEADS:
        for patch in ("2d", "3d"):
            model = CLIP4Clip(
                CLIP4ClipConfig(backbone="ViT-B-32", pretrained="", head=head, patch=patch), clip
            )
            new = count(model.head.parameters()) + (count(model.patch3d.parameters()) if model.patch3d else 0)
            rows.append((head, patch, new, count(model.parameters())))
    return rows


def train_step_seconds(head: str, patch: str, batch: int, frames: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one forward + loss + backward, medians. CPU time (all threads of this
    process) is the robust number on a shared machine: other processes inflate wall time, not it."""
    torch.manual_seed(0)
    config = CLIP4ClipConfig(backbone="debug", pretrained="", head=head, patch=patch, max_frames=frames)
    model = CLIP4Clip.from_config(config).train()
    video = torch.randn(batch, frames, 3, model.image_size, model.image_size)
    mask = torch.ones(batch, frames, dtype=torch.bool)
    tokens = model.tokenizer()([f"caption number {i}" for i in range(batch)])
    wall, cpu = [], []
    for _ in range(repeats + 1):  # the first run warms up allocators and kernels
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        out = model(video, mask, tokens)
        if model.is_tight:
            loss = symmetric_cross_entropy(out["scores"])
        else:
            loss = SymmetricCrossEntropyLoss()(out["video"], out["text"], out["logit_scale"])
        loss.backward()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
        model.zero_grad(set_to_none=True)
    return statistics.median(wall[1:]), statistics.median(cpu[1:])


def main() -> None:
    args = parse_config(BenchmarkConfig)
    if args.threads:
        torch.set_num_threads(args.threads)  # 1 thread: CPU time is pure compute, no idle-spinning workers

    print("ViT-B-32 parameters (random init; new = head + 3D patch embedding)")
    print(f"{'head':<12}{'patch':<7}{'new':>14}{'total':>16}")
    for head, patch, new, total in vit_b32_parameter_table():
        print(f"{head:<12}{patch:<7}{new:>14,}{total:>16,}")

    print(
        f"\ndebug model, CPU ({torch.get_num_threads()} threads), batch {args.batch} x {args.frames} frames, "
        f"forward+backward, median of {args.repeats}"
    )
    print(f"{'head':<12}{'patch':<7}{'wall ms':>9}{'CPU ms':>9}  CPU vs meanP/2d")
    baseline = None
    for head in HEADS:
        for patch in ("2d", "3d"):
            wall, cpu = train_step_seconds(head, patch, args.batch, args.frames, args.repeats)
            baseline = baseline or cpu
            print(f"{head:<12}{patch:<7}{1000 * wall:>9.1f}{1000 * cpu:>9.1f}  x{cpu / baseline:.2f}")


if __name__ == "__main__":
    main()
