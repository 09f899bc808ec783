"""Text<->video retrieval evaluation over a test split: R@1/5/10/50, MdR, MnR both ways (model.metrics) under a
named protocol (CLIP4Clip's by default), written as JSON and as a readable table with the protocol, the
checkpoint identity and the data evaluated on. An opt-in re-ranking (dual / inverted softmax over the whole
test gallery) is reported next to the plain metrics, never instead of them, and labelled transductive.

Loose heads (meanP, seqLSTM, seqTransf) score by CLIP4Clip's logits: logit_scale x cosine similarity of
text and video features (rankings equal the cosine's; softmax re-ranking depends on the scale). tightTransf
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
from model.metrics import PROTOCOLS, Protocol, Rerank, reranked_metrics, retrieval_metrics
from pipelines.config_values import PositiveFloat, PositiveInt
from pipelines.finetuning.data import ClipTensorConfig, video_batches
from pipelines.finetuning.datasets.base import RetrievalItem, RetrievalSplit, SkippedItem
from pipelines.finetuning.frame_cache import FrameCache
from pipelines.storage import open_storage

log = logging.getLogger(__name__)

METRIC_ORDER = ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")
TRANSDUCTIVE_NOTE = (
    "(*) transductive: re-ranked over the whole test gallery at once (each query's result depends on the other "
    "test queries); not comparable with the plain rows"
)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    eval_batch_size: PositiveInt = 32  # videos (or captions) encoded at once
    text_block: PositiveInt = 64  # tightTransf: captions x videos scored per cross-encoder pass
    video_block: PositiveInt = 16
    protocol: Protocol = "clip4clip"  # clip4clip = the published tables' code; all-captions = ours before
    rerank: Rerank = "none"  # also report dual-softmax / inverted-softmax re-ranked metrics (transductive)
    rerank_temperature: PositiveFloat = 1.0  # multiplies the logits inside the re-ranking softmax


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
    """(N_text, N_video) logits; tightTransf in (text_block x video_block) cross-encoder passes."""
    if not model.is_tight:
        return model.clip.logit_scale.detach().exp().float().cpu() * (features.text @ features.video.T)
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
    scores = similarity(model, features, config, device=device)
    evaluated = len(items)
    report: dict = {
        "mode": mode,
        "protocol": config.protocol,
        "metrics": retrieval_metrics(scores, features.text_to_video, config.protocol),
        "metrics_other_protocols": {
            name: retrieval_metrics(scores, features.text_to_video, name)
            for name in PROTOCOLS
            if name != config.protocol
        },
        "model": {**identity, "config": model.config.to_dict()},
        "data": _data_report(split, evaluated, int(features.text.shape[0]), decode_skipped),
        "seconds": {"encode": encoded - started, "score_and_rank": time.monotonic() - encoded},
    }
    if config.rerank != "none":
        report["reranked"] = rerank_report(scores, features.text_to_video, config)
    if evaluated != split.expected_videos:
        log.warning("%s", incomplete_warning(report))
    return report


def _data_report(
    split: RetrievalSplit, evaluated: int, captions: int, decode_skipped: Sequence[SkippedItem]
) -> dict:
    """What the metrics were computed on, and whether that is the whole split."""
    return {
        "dataset": split.dataset,
        "split": split.split,
        "source": split.source,
        "videos_in_split": split.expected_videos,
        "videos_evaluated": evaluated,
        "captions_evaluated": captions,
        "skipped": [s.video_id + ": " + s.reason for s in (*split.skipped, *decode_skipped)],
        "complete": evaluated == split.expected_videos,
    }


def rerank_report(scores: torch.Tensor, text_to_video: torch.Tensor, config: EvalConfig) -> dict:
    metrics = reranked_metrics(
        scores,
        text_to_video,
        method=config.rerank,
        protocol=config.protocol,
        temperature=config.rerank_temperature,
    )
    return {
        "method": config.rerank,
        "temperature": config.rerank_temperature,
        "transductive": True,
        "metrics": metrics,
    }


def incomplete_warning(report: dict) -> str:
    data = report["data"]
    return (
        f"WARNING: evaluated on {data['videos_evaluated']} of the {data['videos_in_split']} videos the "
        f"{data['dataset']} {data['split']} split declares ({len(data['skipped'])} skipped): these numbers are "
        "NOT comparable with published ones"
    )


def metrics_table(reports: Sequence[dict]) -> str:
    """A Markdown table, one row per report (e.g. zero-shot and fine-tuned), plus a row per re-ranking."""
    columns = [f"{d}_{m}" for d in ("t2v", "v2t") for m in METRIC_ORDER]
    header = "| mode | head | " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for report in reports:
        head = report["model"]["config"]["head"]
        lines.append(_table_row(report["mode"], head, report["metrics"], columns))
        if "reranked" in report:
            mode = f"{report['mode']} + {report['reranked']['method']} (*)"
            lines.append(_table_row(mode, head, report["reranked"]["metrics"], columns))
    first = reports[0]
    data = first["data"]
    lines += [
        "",
        f"protocol: {first.get('protocol', 'all-captions')} (model/metrics.py)",
        f"data: {data['dataset']} {data['split']} ({data['source']}): {data['videos_evaluated']} videos, "
        f"{data['captions_evaluated']} captions",
        f"model: {first['model'].get('checkpoint') or first['model'].get('init')}",
    ]
    lines += [TRANSDUCTIVE_NOTE] if any("reranked" in r for r in reports) else []
    lines += [incomplete_warning(r) for r in reports[:1] if not r["data"]["complete"]]
    return "\n".join(lines) + "\n"


def _table_row(mode: str, head: str, metrics: dict, columns: Sequence[str]) -> str:
    values = " | ".join(f"{metrics[c]:.1f}" if c in metrics else "-" for c in columns)
    return f"| {mode} | {head} | {values} |"


def write_report(report: dict, url: str, name: str) -> str:
    """<url>/<name>.json and <name>.md (local folder or s3://); returns the JSON's URI."""
    storage = open_storage(url)
    storage.write_bytes(f"{name}.json", (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    storage.write_bytes(f"{name}.md", metrics_table([report]).encode())
    return storage.uri(f"{name}.json")
