"""Retrieval fine-tuning (symmetric cross-entropy, CLIP4Clip eq. 9-11) on the shared training loop and Ray Train
scaffolding, then evaluation; or evaluation alone (`zero_shot`).

The init model comes from `--init` (pipelines.checkpoint.init_model); checkpoints of the fine-tuning run go to
`<checkpoints>/<run_name>/` (resubmitting resumes), and the reports to `<checkpoints>/<run_name>/eval/`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch

from model.losses import SymmetricCrossEntropyLoss, symmetric_cross_entropy
from pipelines.checkpoint.init_model import InitConfig, InitModel, load_init_model
from pipelines.checkpoint.read import read_checkpoint
from pipelines.checkpoint.store import CheckpointConfig, CheckpointStore
from pipelines.config_values import PositiveInt
from pipelines.finetuning.data import ClipTensorConfig, RetrievalPairs
from pipelines.finetuning.datasets import read_split
from pipelines.finetuning.evaluate import EvalConfig, evaluate_model, metrics_table, write_report
from pipelines.finetuning.frame_cache import FrameCache, FrameCacheConfig
from pipelines.storage import open_storage
from pipelines.training.loop import LoopConfig, LoopResult, train
from pipelines.training.optim import OptimConfig
from pipelines.training.ray_job import WorkersConfig, run_ray_training
from pipelines.training.runtime import Runtime, single_process_runtime

log = logging.getLogger(__name__)

_DEFAULT_MAX_STEPS = LoopConfig().max_steps  # fine-tuning's length comes from epochs instead


@dataclass(frozen=True, kw_only=True)
class RetrievalDataConfig:
    dataset: str = "msrvtt"  # msrvtt | msvd | lsmdc | activitynet | didemo | generic
    data_root: str = "."  # the dataset folder in its published layout
    split: str = "9k"  # MSR-VTT's training split: 9k or 7k (other datasets have one)
    batch_size: PositiveInt = 128  # global batch (pairs per optimizer step over all workers), as the paper
    loader_workers: int = 2  # DataLoader processes per training worker


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Fine-tune CLIP4Clip for text-video retrieval from a post-pretrained checkpoint, then evaluate."""

    init: InitConfig
    data: RetrievalDataConfig = field(default_factory=RetrievalDataConfig)
    frames: FrameCacheConfig = field(default_factory=FrameCacheConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    checkpoints: str = "finetune-runs"  # root for the run's checkpoints and reports: local folder or s3://
    run_name: str = ""  # "" = <dataset>[-<head>]-finetune; the same name resumes
    zero_shot: bool = False  # evaluate the init model only, no training
    zero_shot_baseline: bool = True  # also evaluate the init model before fine-tuning (the table's first row)
    epochs: PositiveInt = 5  # passes over the training pairs: they set the run's length (not max_steps)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if self.loop.max_steps != _DEFAULT_MAX_STEPS:
            raise ValueError(
                f"fine-tuning runs for --epochs (steps = epochs x batches per epoch / grad_accum); max_steps "
                f"{self.loop.max_steps} does not apply: pass --epochs instead"
            )

    @property
    def resolved_run_name(self) -> str:
        head = f"-{self.init.head}" if self.init.head else ""
        return self.run_name or f"{self.data.dataset}{head}-finetune"

    @property
    def reports_url(self) -> str:
        root = self.checkpoints.rstrip("/")
        return f"{root}/{self.resolved_run_name}/eval"


@dataclass(frozen=True, kw_only=True)
class RetrievalResult:
    reports: list[dict]  # zero-shot and/or fine-tuned
    table: str  # Markdown
    checkpoint: str | None  # the fine-tuned checkpoint


def symmetric_ce_objective(runtime: Runtime):
    """batch -> this rank's share of the symmetric cross-entropy over the global batch (loose heads), or of
    the local batch's cross-encoder scores (tightTransf: scoring all global pairs would cost (B x world)^2)."""
    loss = SymmetricCrossEntropyLoss(rank=runtime.rank, world_size=runtime.world_size)

    def objective(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        out = model(batch["video"], batch["video_mask"], batch["text"])
        if "scores" in out:
            return symmetric_cross_entropy(out["scores"]) / runtime.world_size
        return loss(out["video"], out["text"], out["logit_scale"])

    return objective


def finetune_worker(
    config: FinetuneConfig, runtime: Runtime, report=lambda metrics: None, wrap=lambda m: m
) -> LoopResult:
    """One training worker's job (also runnable without Ray: single_process_runtime(), no wrap)."""
    init = seeded_init_model(config)
    split = read_split(config.data.dataset, config.data.data_root, "train", config.data.split)
    cache = FrameCache(config.frames)
    # Ranks decode disjoint shares first (ranks on one machine share the cache), then pick up the rest.
    cache.fill(split.items[runtime.rank :: runtime.world_size])
    runtime.barrier()
    items, skipped = cache.fill(split.items)
    if skipped:
        log.warning("%d training videos could not be decoded and are skipped", len(skipped))
    model = init.model
    pairs = RetrievalPairs(
        items, cache, model.tokenizer(),
        clip=ClipTensorConfig(max_frames=model.config.max_frames, image_size=model.image_size),
        global_batch_size=config.data.batch_size, rank=runtime.rank, world_size=runtime.world_size,
        seed=config.loop.seed, loader_workers=config.data.loader_workers,
    )  # fmt: skip
    steps = max(1, config.epochs * pairs.batches_per_epoch // config.loop.grad_accum)
    loop = dataclasses.replace(config.loop, max_steps=steps)
    return train(
        model=model,
        objective=symmetric_ce_objective(runtime),
        data=pairs,
        store=CheckpointStore(config.checkpoints, config.resolved_run_name, config=config.checkpoint),
        optim=config.optim,
        loop=loop,
        runtime=runtime,
        run_config=_run_record(config, init, len(items), loop),
        wrap=wrap,
        report=report,
    )


def seeded_init_model(config: FinetuneConfig) -> InitModel:
    """The --init model with any new head's random layers drawn under the run's seed: identical on every rank
    and in the zero-shot evaluation, which therefore scores exactly the model fine-tuning starts from."""
    torch.manual_seed(config.loop.seed)
    return load_init_model(config.init)


def _run_record(config: FinetuneConfig, init: InitModel, train_videos: int, loop: LoopConfig) -> dict:
    job = dataclasses.asdict(config)
    job["loop"] = dataclasses.asdict(loop)  # with the max_steps --epochs came to
    return {
        "run_name": config.resolved_run_name,
        "objective": "symmetric_cross_entropy",
        "model": init.model.config.to_dict(),
        "init": init.identity,
        "job": job,
        "train_videos": train_videos,
    }


def check_dataset(config: FinetuneConfig) -> None:
    """The splits every step reads, read first (ValueError naming --dataset / --data-root): a wrong layout is
    answered in seconds, before a model is built or a worker starts."""
    parts = ("test",) if config.zero_shot else ("train", "test")
    for part in parts:
        try:
            read_split(config.data.dataset, config.data.data_root, part, config.data.split)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"--dataset {config.data.dataset} --data-root {config.data.data_root}: {error}"
            ) from None


def evaluate_init(config: FinetuneConfig) -> dict:
    """The zero-shot report of the --init model on the test split."""
    init = seeded_init_model(config)
    return _evaluate(config, init.model, init.identity, mode="zero-shot")


def _evaluate(config: FinetuneConfig, model, identity: dict, *, mode: str) -> dict:
    split = read_split(config.data.dataset, config.data.data_root, "test", config.data.split)
    device = single_process_runtime().device
    cache = FrameCache(config.frames)
    report = evaluate_model(
        model, split, cache, config.evaluation, identity=identity, mode=mode, device=device
    )
    write_report(report, config.reports_url, mode)
    return report


def evaluate_finetuned(config: FinetuneConfig) -> tuple[dict, str]:
    store = CheckpointStore(config.checkpoints, config.resolved_run_name)
    ref = store.latest()
    if ref is None:
        raise RuntimeError(f"{store.url} holds no committed checkpoint after fine-tuning")
    with read_checkpoint(ref, store=store) as checkpoint:
        model = checkpoint.model()
        started_from = checkpoint.run_config().get("init", {})
    identity = {
        "init": config.init.init,
        **checkpoint.identity,
        "fine_tuned_from": started_from,  # the --init checkpoint's identity, as the run recorded it
    }
    return _evaluate(config, model, identity, mode="fine-tuned"), ref.url


def run_retrieval(
    config: FinetuneConfig, *, storage_path: str | None = None, use_ray: bool = True
) -> RetrievalResult:
    """Zero-shot evaluation, or fine-tuning (on Ray Train, or in this process with use_ray=False) + evaluation."""
    on_gpu = use_ray and config.workers.use_gpu
    check_dataset(config)
    reports = [_run(evaluate_init, config, on_gpu)] if config.zero_shot or config.zero_shot_baseline else []
    checkpoint = None
    if not config.zero_shot:
        CheckpointStore(config.checkpoints, config.resolved_run_name)  # fails fast on an unreachable store
        if use_ray:
            run_ray_training(
                finetune_worker,
                config,
                workers=config.workers,
                run_name=config.resolved_run_name,
                storage_path=storage_path,
            )
        else:
            finetune_worker(config, single_process_runtime())
        finetuned, checkpoint = _run(evaluate_finetuned, config, on_gpu)
        reports.append(finetuned)
    table = metrics_table(reports)
    open_storage(config.reports_url).write_bytes("metrics.md", table.encode())
    return RetrievalResult(reports=reports, table=table, checkpoint=checkpoint)


def _run(evaluation, config: FinetuneConfig, on_gpu: bool):
    """In this process, or (--use-gpu) as a Ray task holding one GPU: the job's driver may have none."""
    if not on_gpu:
        return evaluation(config)
    import ray

    task = ray.remote(num_gpus=1, num_cpus=config.workers.cpus_per_worker)(evaluation)
    return ray.get(task.remote(config))
