"""Embed videos and texts with a CLIP4Clip model, on Ray; search the result with a text query.

The driver builds the plan (items -> parts) and holds nothing else per item; a pool of Ray actors (one GPU
each with use_gpu, else `cpus_per_worker` CPUs), each holding the model once, embeds the parts not yet
committed and commits each (embeddings, then the manifest part: output.py). A rerun with the same settings
resumes; other settings are refused. Failed videos are manifest rows with the decoder's reason.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipelines.checkpoint.init_model import InitConfig
from pipelines.config_values import PositiveInt
from pipelines.embedding.embedder import embed_part, load_embedding_model
from pipelines.embedding.inputs import Part, chunk, dataset_items, folder_items, shard_parts, text_items
from pipelines.embedding.output import (
    PLAN_KEY,
    commit_part,
    completed_parts,
    read_embeddings,
    read_outcomes,
    read_plan,
    write_or_check_settings,
    write_plan,
)
from pipelines.finetuning.evaluate import encode_texts
from pipelines.finetuning.frame_cache import FrameCache, FrameCacheConfig
from pipelines.storage import open_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EmbedInputsConfig:
    videos: str = ""  # a folder of videos (any depth)
    dataset: str = ""  # or a fine-tuning dataset's name (msrvtt, msvd, ...) with --data-root
    data_root: str = ""
    split: str = "9k"  # MSR-VTT's training split variant
    shards: str = ""  # or the sharding job's --out (local or s3://)
    texts: str = ""  # a text file of queries, one per line (with or without videos)


@dataclass(frozen=True, kw_only=True)
class EmbedConfig:
    """Embed videos and/or texts with a CLIP4Clip checkpoint or export (Parquet out); or --query an output."""

    init: InitConfig = field(
        default_factory=lambda: InitConfig(init="")
    )  # "" with --query: the output's model
    inputs: EmbedInputsConfig = field(default_factory=EmbedInputsConfig)
    frames: FrameCacheConfig = field(default_factory=FrameCacheConfig)
    out: str  # the embeddings folder: local or s3://
    query: str = ""  # search --out's video embeddings for this text instead of embedding
    top_k: PositiveInt = 10
    videos_per_part: PositiveInt = 256  # videos per unit of work and commit
    batch_size: PositiveInt = 32  # videos (or texts) encoded at once
    num_workers: PositiveInt = 2  # Ray actors, each holding the model
    cpus_per_worker: PositiveInt = 1
    use_gpu: bool = False  # one GPU per actor


@dataclass(frozen=True, kw_only=True)
class EmbedSummary:
    parts: int
    parts_done_before: int
    ok: int
    failed: int
    seconds: float

    @property
    def videos_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def plan_parts(config: EmbedConfig) -> list[Part]:
    inputs, size = config.inputs, config.videos_per_part
    parts: list[Part] = []
    if inputs.videos:
        parts += chunk(folder_items(inputs.videos), "videos", size)
    if inputs.dataset:
        parts += chunk(dataset_items(inputs.dataset, inputs.data_root, inputs.split), "dataset", size)
    if inputs.shards:
        parts += shard_parts(inputs.shards)
    if inputs.texts:
        parts += chunk(text_items(inputs.texts), "texts", max(size, 1024))
    if not parts:
        raise ValueError("nothing to embed: pass --videos, --dataset/--data-root, --shards and/or --texts")
    return parts


class EmbedWorker:
    """Holds the model; embeds and commits whole parts."""

    def __init__(self, config: EmbedConfig, identity: dict) -> None:
        self.config, self.identity = config, identity
        self.device = torch.device("cuda" if config.use_gpu and torch.cuda.is_available() else "cpu")
        self.model = load_embedding_model(config.init)[0].to(self.device)
        self.cache = FrameCache(config.frames)
        self.out = open_storage(config.out)
        self.shards = open_storage(config.inputs.shards) if config.inputs.shards else None

    def embed(self, part: Part) -> tuple[int, int]:
        embedded, outcomes = embed_part(
            self.model,
            part,
            cache=self.cache,
            shards=self.shards,
            batch_size=self.config.batch_size,
            device=self.device,
        )
        commit_part(self.out, part, embedded, outcomes, model=self.identity)
        return len(embedded), len(outcomes) - len(embedded)


def run_embedding(config: EmbedConfig, *, use_ray: bool = True) -> EmbedSummary:
    started = time.monotonic()
    if not config.init.init:
        raise ValueError(
            "--init is required to embed (a checkpoint, openai, a CLIP weights file or an export)"
        )
    _, identity = load_embedding_model(config.init)  # refuses tightTransf before any worker starts
    storage = open_storage(config.out)
    write_or_check_settings(storage, _settings(config, identity))
    if storage.exists(PLAN_KEY):
        parts = read_plan(storage)  # the first run's items: a resume never mixes in new files
    else:
        parts = plan_parts(config)
        write_plan(storage, parts)
    done = completed_parts(storage)
    todo = [part for part in parts if part.name not in done]
    log.info("%d parts, %d already committed, %d to embed", len(parts), len(parts) - len(todo), len(todo))
    counts = _run_ray(config, identity, todo) if use_ray else _run_here(config, identity, todo)
    ok, failed = (sum(c[0] for c in counts), sum(c[1] for c in counts))
    return EmbedSummary(
        parts=len(parts),
        parts_done_before=len(parts) - len(todo),
        ok=ok,
        failed=failed,
        seconds=time.monotonic() - started,
    )


def _run_here(config: EmbedConfig, identity: dict, todo: list[Part]) -> list[tuple[int, int]]:
    worker = EmbedWorker(config, identity) if todo else None
    return [worker.embed(part) for part in todo] if worker else []


def _run_ray(config: EmbedConfig, identity: dict, todo: list[Part]) -> list[tuple[int, int]]:
    if not todo:
        return []
    import ray
    from ray.util import ActorPool

    actor = ray.remote(EmbedWorker).options(
        num_cpus=config.cpus_per_worker, num_gpus=1 if config.use_gpu else 0, max_restarts=1
    )
    actors: list[Any] = [actor.remote(config, identity) for _ in range(min(config.num_workers, len(todo)))]
    pool = ActorPool(actors)
    counts = list(pool.map_unordered(lambda worker, part: worker.embed.remote(part), todo))
    for worker in actors:
        ray.kill(worker)
    return counts


def search(config: EmbedConfig) -> list[tuple[str, float]]:
    """The top_k video ids of --out for --query, best first, with their cosine similarity."""
    storage = open_storage(config.out)
    ids, embeddings, identity = read_embeddings(storage, kind="video")
    if not ids:
        raise ValueError(f"{config.out} holds no committed video embeddings")
    saved = (
        dataclasses.replace(config.init, **identity_init(identity)) if not config.init.init else config.init
    )
    model, current = load_embedding_model(saved)
    if {k: current[k] for k in ("config", "weights_sha256") if k in current} != {
        k: identity[k] for k in ("config", "weights_sha256") if k in identity
    }:
        raise ValueError(f"--init gives another model than the one that embedded {config.out}")
    query = encode_texts(model, [config.query], batch_size=1, device=torch.device("cpu"))[0].numpy()
    scores = embeddings @ query
    best = np.argsort(-scores, kind="stable")[: config.top_k]
    return [(ids[i], float(scores[i])) for i in best]


def identity_init(identity: dict) -> dict:
    """The InitConfig fields that rebuild the model an output's identity describes."""
    model = identity["config"]
    # the resolved checkpoint (step-N), not "<run>/latest", which may have moved on since
    return {"init": identity.get("checkpoint") or identity["init"], "backbone": model["backbone"], "head": model["head"],
            "max_frames": model["max_frames"], "max_words": model["max_words"]}  # fmt: skip


def failed_items(config: EmbedConfig) -> list[dict]:
    table = read_outcomes(open_storage(config.out))
    return [row for row in table.to_pylist() if row["status"] != "ok"]


def _settings(config: EmbedConfig, identity: dict) -> dict:
    return {
        "inputs": dataclasses.asdict(config.inputs),
        "model": identity,
        "frames": {"short_side": config.frames.short_side, "max_frames": config.init.max_frames},
        "videos_per_part": config.videos_per_part,
    }
