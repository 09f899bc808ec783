"""Embedding throughput of jobs/embed.py's video path (decode through the frame cache, frames -> model ->
L2-normalised embedding), in videos/s, per model, cold (decode + encode) and warm (frames cached: encode only).

    PYTHONPATH=. .venv/bin/python benchmarks/embed_throughput.py [--videos 36] [--models debug ViT-B-32]

Runs in this process on the generated MSR-VTT-layout colour videos (4 s, 96x64 H.264; real decoding is
costlier), with random weights (the cost does not depend on their values), 12 frames at 224 px for ViT-B-32
(the paper's setting) and 4 at 64 px for debug. On CUDA when available (then per GPU), else on all CPU
threads. The job adds Parquet writes and, on Ray, one model load per actor.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from infra.sample_msrvtt import generate_sample_msrvtt
from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from pipelines.cli import parse_config
from pipelines.embedding.embedder import embed_video_files
from pipelines.embedding.inputs import folder_items
from pipelines.finetuning.frame_cache import FrameCache, FrameCacheConfig

SETTINGS = {"debug": {"max_frames": 4, "short_side": 64}, "ViT-B-32": {"max_frames": 12, "short_side": 224}}
BenchmarkedModel = Literal["debug", "ViT-B-32"]  # the keys of SETTINGS


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    """Embedding throughput (videos/s) per model, cold and warm frame cache."""

    videos: int = 36  # generated MSR-VTT-layout videos embedded (12 of them from the test split)
    models: tuple[BenchmarkedModel, ...] = ("debug", "ViT-B-32")
    batch_size: int = 32


def measure(
    backbone: BenchmarkedModel, videos: Path, cache_dir: Path, device: torch.device, batch_size: int
) -> dict:
    settings = SETTINGS[backbone]
    torch.manual_seed(0)
    config = CLIP4ClipConfig(
        backbone=backbone, pretrained="", head="meanP", max_frames=settings["max_frames"]
    )
    model = CLIP4Clip.from_config(config).eval().to(device)
    cache = FrameCache(
        FrameCacheConfig(frame_cache=str(cache_dir / backbone), short_side=settings["short_side"])
    )
    items = folder_items(videos)
    result = {"backbone": backbone, "device": str(device), "videos": len(items), **settings}
    for phase in ("cold", "warm"):
        started = time.perf_counter()
        embedded, _ = embed_video_files(model, items, cache, batch_size=batch_size, device=device)
        seconds = time.perf_counter() - started
        assert len(embedded) == len(items)
        result[f"{phase}_videos_per_s"] = round(len(items) / seconds, 2)
    return result


def main() -> None:
    args = parse_config(BenchmarkConfig)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="embed-throughput-") as folder:
        root = Path(folder)
        sample = generate_sample_msrvtt(root / "msrvtt", num_train=args.videos - 12, num_test=12)
        results = [
            measure(name, sample.root / "videos", root / "cache", device, args.batch_size)
            for name in args.models
        ]
    print(json.dumps({"torch_threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
