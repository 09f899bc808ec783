"""Retrieval evaluation time per similarity head: N videos x N captions (default 1,000 x 1,000) with the debug
model on CPU, through the evaluation's own code (encode_videos, encode_texts, similarity, retrieval_metrics).

    .venv/bin/python benchmarks/eval_retrieval.py [--videos 1000] [--frames 12] [--threads N]

Frames are random tensors already in memory: this measures the model side of evaluation (video + text
encoding, the N x N scoring -- tightTransf's cross-encoder in blocks -- and ranking), not video decoding
(the frame cache's cost, the same for every head). Ratios are to meanP measured in the same run. On a
shared, loaded machine the wall times are noisy; CPU time is reported next to them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from model.clip4clip import CLIP4Clip
from model.config import HEADS, CLIP4ClipConfig, Head
from model.metrics import retrieval_metrics
from pipelines.cli import parse_config
from pipelines.finetuning.evaluate import EvalConfig, Features, encode_texts, encode_videos, similarity


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    """Retrieval evaluation time per similarity head (debug model, CPU, frames already in memory)."""

    videos: int = 1000  # N videos, and N captions (one each)
    frames: int = 12
    batch: int = 64
    threads: int = 0  # torch threads; 0 = torch's default
    heads: tuple[Head, ...] = HEADS


CAPTION_WORDS = ("red", "green", "blue", "a man", "a dog", "cooks", "runs", "then", "screen", "turns")


def video_batches(count: int, frames: int, size: int, batch: int):
    generator = torch.Generator().manual_seed(0)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        yield {
            "video": torch.randn(n, frames, 3, size, size, generator=generator),
            "video_mask": torch.ones(n, frames, dtype=torch.bool),
        }


def captions(count: int) -> list[str]:
    return [
        " ".join(CAPTION_WORDS[(i * k) % len(CAPTION_WORDS)] for k in range(1, 6)) + f" {i}"
        for i in range(count)
    ]


def time_head(head: Head, args: BenchmarkConfig) -> dict[str, float]:
    torch.manual_seed(0)
    model = CLIP4Clip.from_config(
        CLIP4ClipConfig(backbone="debug", pretrained="", head=head, max_frames=args.frames)
    )
    config, cpu = EvalConfig(eval_batch_size=args.batch), torch.device("cpu")
    wall, process = time.perf_counter(), time.process_time()
    video, mask = encode_videos(
        model, video_batches(args.videos, args.frames, model.image_size, args.batch), device=cpu
    )
    text = encode_texts(model, captions(args.videos), batch_size=args.batch, device=cpu)
    encoded = time.perf_counter()
    features = Features(text=text, video=video, mask=mask, text_to_video=torch.arange(args.videos))
    metrics = retrieval_metrics(similarity(model, features, config, device=cpu), features.text_to_video)
    assert len(metrics) == 12
    return {
        "encode_s": encoded - wall,
        "score_rank_s": time.perf_counter() - encoded,
        "total_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - process,
    }


def main() -> None:
    args = parse_config(BenchmarkConfig)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.videos} videos x {args.videos} captions, debug model, {args.frames} frames, CPU, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    time_head("meanP", dataclasses.replace(args, videos=16))  # warm-up: first-call costs
    results = {head: time_head(head, args) for head in args.heads}
    baseline = results.get("meanP", next(iter(results.values())))["total_s"]
    print(f"{'head':<12} {'encode s':>9} {'score+rank s':>13} {'total s':>9} {'cpu s':>8} {'x meanP':>8}")
    for head, r in results.items():
        print(f"{head:<12} {r['encode_s']:9.2f} {r['score_rank_s']:13.2f} {r['total_s']:9.2f} {r['cpu_s']:8.1f} "
              f"{r['total_s'] / baseline:8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
