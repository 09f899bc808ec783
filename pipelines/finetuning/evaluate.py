"""Text<->video retrieval evaluation over a test split: R@1/5/10, MdR, MnR both ways (model.metrics), written as
JSON and as a readable table with the checkpoint identity and the data evaluated on.

Loose heads (meanP, seqLSTM, seqTransf) score by cosine similarity of text and video features. tightTransf
is a cross-encoder: every (caption, video) pair needs its own forward pass, so the N_text x N_video matrix
is filled block by block (`text_block` x `video_block` pairs at a time) to bound memory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from model.clip4clip import CLIP4Clip
from model.metrics import retrieval_metrics
from pipelines.finetuning.data import ClipTensorConfig, video_batches
from pipelines.finetuning.datasets.base import RetrievalItem, RetrievalSplit
from pipelines.finetuning.frame_cache import FrameCache
from pipelines.storage import open_storage

log = logging.getLogger(__name__)

METRIC_ORDER = ("R@1", "R@5", "R@10", "MdR", "MnR")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    eval_batch_size: int = 32  # videos (or captions) encoded at once
    text_block: int = 64  # tightTransf: captions x videos scored per cross-encoder pass
    video_block: int = 16


@dataclass(frozen=True, kw_only=True)
class Features:
    text: torch.Tensor  # (N_text, D): normalised, or raw for tightTransf
    video: torch.Tensor  # (N_video, D) normalised; tightTransf: raw frames (N_video, T, D)
    mask: torch.Tensor  # (N_video, T) frame mask
    text_to_video: torch.Tensor  # (N_text,) each caption's video index


@torch.no_grad()
def encode_split(
    model: CLIP4Clip,
    items: Sequence[RetrievalItem],
    cache: FrameCache,
    config: EvalConfig,
    *,
    device: torch.device,
    loader_workers: int = 0,
) -> Features:
    clip = ClipTensorConfig(max_frames=model.config.max_frames, image_size=model.image_size)
    batches = video_batches(
        items, cache, clip, batch_size=config.eval_batch_size, loader_workers=loader_workers
    )
    video, mask = encode_videos(model, batches, device=device)
    captions = [caption for item in items for caption in item.captions]
    text_to_video = torch.tensor([i for i, item in enumerate(items) for _ in item.captions])
    text = encode_texts(model, captions, batch_size=config.eval_batch_size, device=device)
    return Features(text=text, video=video, mask=mask, text_to_video=text_to_video)


@torch.no_grad()
def encode_videos(
    model: CLIP4Clip, batches: Iterable[dict], *, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """{"video" (B, T, 3, S, S), "video_mask" (B, T)} batches -> video features (N, D) (tightTransf: frame
    features (N, T, D)) and masks (N, T), on the CPU."""
    model.eval()
    videos, masks = [], []
    for batch in batches:
        mask = batch["video_mask"].to(device)
        videos.append(model.encode_video(batch["video"].to(device), mask).float().cpu())
        masks.append(mask.cpu())
    return torch.cat(videos), torch.cat(masks)


@torch.no_grad()
def encode_texts(
    model: CLIP4Clip, captions: Sequence[str], *, batch_size: int, device: torch.device
) -> torch.Tensor:
    """(N_text, D): normalised features, raw ones for tightTransf (its cross-encoder takes them)."""
    model.eval()
    tokenizer, texts = model.tokenizer(), []
    for start in range(0, len(captions), batch_size):
        tokens = tokenizer(list(captions[start : start + batch_size])).to(device)
        texts.append(model.encode_text(tokens, normalize=not model.is_tight).float().cpu())
    return torch.cat(texts)


@torch.no_grad()
def similarity(
    model: CLIP4Clip, features: Features, config: EvalConfig, *, device: torch.device
) -> torch.Tensor:
    """(N_text, N_video) scores; tightTransf in (text_block x video_block) cross-encoder passes."""
    if not model.is_tight:
        return features.text @ features.video.T
    rows = []
    for t in range(0, features.text.shape[0], config.text_block):
        text = features.text[t : t + config.text_block].to(device)
        row = [
            model.score_pairs(
                text,
                features.video[v : v + config.video_block].to(device),
                features.mask[v : v + config.video_block].to(device),
            )
            .float()
            .cpu()
            for v in range(0, features.video.shape[0], config.video_block)
        ]
        rows.append(torch.cat(row, dim=1))
    return torch.cat(rows)


def evaluate_model(
    model: CLIP4Clip,
    split: RetrievalSplit,
    cache: FrameCache,
    config: EvalConfig,
    *,
    identity: dict,
    mode: str,
    device: torch.device | None = None,
) -> dict:
    """The report: metrics, timings, what was evaluated (model identity, data, counts, completeness)."""
    device = device or next(model.parameters()).device
    items, decode_skipped = cache.fill(split.items)
    started = time.monotonic()
    features = encode_split(model.to(device), items, cache, config, device=device)
    encoded = time.monotonic()
    metrics = retrieval_metrics(similarity(model, features, config, device=device), features.text_to_video)
    evaluated = len(items)
    report: dict = {
        "mode": mode,
        "metrics": metrics,
        "model": {**identity, "config": model.config.to_dict()},
        "data": {
            "dataset": split.dataset,
            "split": split.split,
            "source": split.source,
            "videos_in_split": split.expected_videos,
            "videos_evaluated": evaluated,
            "captions_evaluated": int(features.text.shape[0]),
            "skipped": [s.video_id + ": " + s.reason for s in (*split.skipped, *decode_skipped)],
            "complete": evaluated == split.expected_videos,
        },
        "seconds": {"encode": encoded - started, "score_and_rank": time.monotonic() - encoded},
    }
    if evaluated != split.expected_videos:
        log.warning("%s", incomplete_warning(report))
    return report


def incomplete_warning(report: dict) -> str:
    data = report["data"]
    return (
        f"WARNING: evaluated on {data['videos_evaluated']} of the {data['videos_in_split']} videos the "
        f"{data['dataset']} {data['split']} split declares ({len(data['skipped'])} skipped): these numbers are "
        "NOT comparable with published ones"
    )


def metrics_table(reports: Sequence[dict]) -> str:
    """A Markdown table, one row per report (e.g. zero-shot and fine-tuned)."""
    columns = [f"{d}_{m}" for d in ("t2v", "v2t") for m in METRIC_ORDER]
    header = "| mode | head | " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for report in reports:
        values = " | ".join(f"{report['metrics'][c]:.1f}" for c in columns)
        lines.append(f"| {report['mode']} | {report['model']['config']['head']} | {values} |")
    first = reports[0]
    data = first["data"]
    lines += [
        "",
        f"data: {data['dataset']} {data['split']} ({data['source']}): {data['videos_evaluated']} videos, "
        f"{data['captions_evaluated']} captions",
        f"model: {first['model'].get('checkpoint') or first['model'].get('init')}",
    ]
    lines += [incomplete_warning(r) for r in reports[:1] if not r["data"]["complete"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict, url: str, name: str) -> str:
    """<url>/<name>.json and <name>.md (local folder or s3://); returns the JSON's URI."""
    storage = open_storage(url)
    storage.write_bytes(f"{name}.json", (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    storage.write_bytes(f"{name}.md", metrics_table([report]).encode())
    return storage.uri(f"{name}.json")
