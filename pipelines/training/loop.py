"""The training loop shared by post-pretraining (MIL-NCE) and retrieval fine-tuning (symmetric CE).

What varies between the two is the objective (batch -> loss) and the data; everything else is
here once: optimizer + schedule, bf16 autocast on GPU, gradient accumulation under DDP, clipping,
logging, committed checkpoints every N steps, and resume from the last committed checkpoint
(same step, optimizer, scheduler, RNG and data position).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import resource
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model.clip4clip import CLIP4Clip
from model.formats import save_model
from pipelines.checkpoint.layout import LOSS_CURVE_FILE, METRICS_FILE, RUN_CONFIG_FILE, TRAIN_STATE_FILE
from pipelines.checkpoint.read import read_checkpoint
from pipelines.checkpoint.store import CheckpointRef, CheckpointStore
from pipelines.config_values import PositiveFloat, PositiveInt
from pipelines.failpoints import failpoint
from pipelines.training.batch_log import BatchLog
from pipelines.training.curves import plot_loss_curve
from pipelines.training.frames import decode_clips_on_device, normalise_video
from pipelines.training.optim import OptimConfig, build_optimizer, warmup_cosine
from pipelines.training.preemption import StopRequest
from pipelines.training.runtime import Runtime
from pipelines.training.train_state import (
    DataPosition,
    capture_rng_state,
    check_compatible,
    load_train_state,
    restore_rng_state,
    save_train_state,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    max_steps: PositiveInt = 1000  # optimizer steps in total (a resumed run continues towards the same total)
    grad_accum: PositiveInt = 1  # micro-batches per optimizer step
    log_every: PositiveInt = 10
    seed: int = 0
    """Seeds the model's new layers, data order and every RNG: same seed, config and workers, same bytes."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False  # torch.compile the (wrapped) model: fused kernels on GPU; the first steps compile
    # SIGTERM (pod eviction, spot notice) -> every rank stops at the next step boundary and rank 0 commits a
    # checkpoint, within this many seconds (a warning says when it took longer). Keep the platform's kill
    # delay (Kubernetes terminationGracePeriodSeconds) above it.
    preemption_grace_s: PositiveFloat = 30.0
    # a local folder: each rank appends every micro-batch's step and clip ids (batch_log.py), to audit what a
    # run trained on across kills and resizes; "" = off
    batch_log: str = ""

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.grad_accum < 1 or self.log_every < 1:
            raise ValueError("max_steps, grad_accum and log_every must be >= 1")
        if self.preemption_grace_s <= 0:
            raise ValueError(f"preemption_grace_s must be > 0, got {self.preemption_grace_s}")


class BatchSource(Protocol):
    batches_per_epoch: int

    # `position` (from a checkpoint, maybe of another world size) in this source's layout; loader(position) then
    # yields the rest of its epoch, and the loop counts batches_in_epoch on the position it returned.
    def continue_from(self, position: DataPosition) -> DataPosition: ...

    def loader(self, position: DataPosition) -> Iterable[dict]: ...


# (model as wrapped for training, batch on device) -> this rank's SHARE of the global loss (the sum of
# its rows over the global batch size, as open_clip's local_loss): shares add up over ranks to the
# single-process loss. DDP averages gradients over ranks, so the loop multiplies by world_size
# before backward to get the single-process gradient; the logged loss is then the mean over ranks.
Objective = Callable[[nn.Module, dict], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class Resumed:
    from_step: int
    data_position: DataPosition
    optimizer_steps: int  # AdamW's own step count after loading: proves the optimizer state came back
    checkpoint: str


@dataclass(frozen=True, kw_only=True)
class LoopResult:
    step: int
    data_position: DataPosition
    history: list[tuple[int, float]]  # (step, loss) at each log
    resumed: Resumed | None
    final_checkpoint: CheckpointRef | None
    samples_per_second: float
    # stopped by SIGTERM before max_steps, with a committed checkpoint to continue from
    preempted: bool = False


def train(
    *,
    model: CLIP4Clip,
    objective: Objective,
    data: BatchSource,
    store: CheckpointStore,
    optim: OptimConfig,
    loop: LoopConfig,
    runtime: Runtime,
    run_config: Mapping[str, Any],
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    report: Callable[[dict], None] = lambda metrics: None,
) -> LoopResult:
    """Train `model` (unwrapped, built identically on every rank) to loop.max_steps; see the module doc."""
    if data.batches_per_epoch < 1:
        raise ValueError(
            "the data stream yields no batch per epoch: more clips or a smaller batch size are needed"
        )
    seed_host_rngs(loop.seed)  # a resume then restores the saved state over it
    session = _Session(
        model=model, objective=objective, data=data, store=store, optim=optim, loop=loop, runtime=runtime,
        run_config=run_config, report=report,
    )  # fmt: skip
    session.resume()
    trained = wrap(model)
    # compile after DDP wrapping: TorchDynamo then splits the graph at DDP's bucket boundaries
    session.trained = cast(nn.Module, torch.compile(trained)) if loop.compile else trained
    with session.stop.catching_sigterm():
        return session.run()


def seed_host_rngs(seed: int) -> None:
    """Seed Python's and numpy's global RNGs. Nothing in training draws from them (the data stream has its
    own seeded Generators), but the train state records them: unseeded, they came from OS entropy and made
    the same run's train_state.pt differ byte for byte."""
    random.seed(seed)
    np.random.seed(seed)


@dataclass
class _Progress:
    step: int = 0
    position: DataPosition = dataclasses.field(
        default_factory=lambda: DataPosition(epoch=0, batches_in_epoch=0, samples_seen=0)
    )
    history: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    last_saved_step: int = -1
    micro_batches: int = 0
    preempted: bool = False
    last_log: dict = dataclasses.field(default_factory=dict)
    # the current logging window
    window_loss: float | torch.Tensor = 0.0  # a device tensor while accumulating: no host sync per step
    window_data_wait_s: float = 0.0  # host time blocked on the next batch (and its copy to the device)
    window_batches: int = 0
    window_samples: int = 0
    window_started: float = dataclasses.field(default_factory=time.monotonic)


class _Session:
    """One training run on one rank: the collaborators, fixed for the run, and the progress."""

    def __init__(
        self,
        *,
        model: CLIP4Clip,
        objective: Objective,
        data: BatchSource,
        store: CheckpointStore,
        optim: OptimConfig,
        loop: LoopConfig,
        runtime: Runtime,
        run_config: Mapping[str, Any],
        report: Callable[[dict], None],
    ) -> None:
        self.model, self.objective, self.data, self.store = model, objective, data, store
        self.optim, self.loop, self.runtime = optim, loop, runtime
        self.run_config, self.report = run_config, report
        model.to(runtime.device)
        self.optimizer = build_optimizer(
            model.param_groups(optim.lr, optim.coef_lr, optim.weight_decay), optim, runtime.device
        )
        self.scheduler = warmup_cosine(self.optimizer, loop.max_steps, optim.warmup_proportion)
        self.trained: nn.Module = model
        self.progress = _Progress()
        self.resumed: Resumed | None = None
        self.stop = StopRequest(runtime, grace_s=loop.preemption_grace_s)
        self.batch_log = BatchLog(loop.batch_log, rank=runtime.rank) if loop.batch_log else None

    def run(self) -> LoopResult:
        started, samples_at_start = time.monotonic(), self.progress.position.samples_seen
        while self.progress.step < self.loop.max_steps and not self.progress.preempted:
            self.run_epoch()
        final = (
            self.save_checkpoint(final=True) if self.progress.last_saved_step != self.progress.step else None
        )
        if final is None and self.runtime.is_main:
            final = self.store.latest()
        return LoopResult(
            step=self.progress.step,
            data_position=self.progress.position,
            history=self.progress.history,
            resumed=self.resumed,
            final_checkpoint=final,
            samples_per_second=(self.progress.position.samples_seen - samples_at_start)
            / max(time.monotonic() - started, 1e-9),
            preempted=self.progress.preempted,
        )

    def run_epoch(self) -> None:
        progress = self.progress
        progress.position = self.data.continue_from(progress.position)
        if progress.position.batches_in_epoch < self.data.batches_per_epoch:  # else: the epoch is done
            for batch in self.timed_batches(self.data.loader(progress.position)):
                self.train_micro_batch(batch)
                if progress.micro_batches % self.loop.grad_accum == 0:
                    self.finish_step()
                    if progress.step >= self.loop.max_steps or progress.preempted:
                        return
        progress.position = DataPosition(
            epoch=progress.position.epoch + 1, batches_in_epoch=0, samples_seen=progress.position.samples_seen
        )

    def timed_batches(self, loader: Iterable[dict]) -> Iterator[dict]:
        """The loader's batches on the device; the time spent waiting for each goes to the logging window."""
        batches = iter(loader)
        while True:
            waiting_since = time.monotonic()
            batch = next(batches, None)
            if batch is None:
                return
            batch = _to_device(batch, self.runtime.device)
            self.progress.window_data_wait_s += time.monotonic() - waiting_since
            yield batch

    def train_micro_batch(self, batch: dict) -> None:
        progress, world = self.progress, self.runtime.world_size
        progress.micro_batches += 1
        sync_now = progress.micro_batches % self.loop.grad_accum == 0
        with _no_sync_unless(self.trained, sync_now), _autocast(self.loop.precision, self.runtime.device):
            loss = self.objective(self.trained, batch) * world  # see `Objective`
        (loss / self.loop.grad_accum).backward()
        if self.batch_log is not None:
            self.batch_log.write(step=progress.step + 1, epoch=progress.position.epoch, batch=batch)
        samples = _batch_size(batch) * world
        progress.position = dataclasses.replace(
            progress.position,
            batches_in_epoch=progress.position.batches_in_epoch + 1,
            samples_seen=progress.position.samples_seen + samples,
        )
        # float64 on the device: the same sum as adding Python floats, without a host sync per micro-batch
        progress.window_loss = progress.window_loss + loss.detach().to(torch.float64)
        progress.window_batches += 1
        progress.window_samples += samples

    def finish_step(self) -> None:
        if self.optim.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.clamp_logit_scale()
        self.progress.step += 1
        step, last = self.progress.step, self.progress.step == self.loop.max_steps
        if step % self.loop.log_every == 0 or last:
            self.log_window()
        self.progress.preempted = not last and self.stop.agreed()  # a collective: every rank, every step
        if self.store.config.is_due(step) or last or self.progress.preempted:
            self.save_checkpoint(final=last)
        if self.progress.preempted and self.runtime.is_main:
            seconds = self.stop.seconds_since_notice()
            (log.warning if seconds > self.loop.preemption_grace_s else log.info)(
                "preempted: the checkpoint of step %d was committed %.1f s after the stop notice (grace %.0f s); "
                "submit the job again to continue",
                step, seconds, self.loop.preemption_grace_s,
            )  # fmt: skip
        failpoint("train_step_end")  # tests hold a run here to kill it at a chosen step

    def log_window(self) -> None:
        progress = self.progress
        loss = self.runtime.mean(float(progress.window_loss) / max(1, progress.window_batches))
        elapsed = max(time.monotonic() - progress.window_started, 1e-9)
        metrics = {
            "step": progress.step,
            "loss": loss,
            "lr": max(group["lr"] for group in self.optimizer.param_groups),
            "samples_per_second": progress.window_samples / elapsed,
            "step_time_s": elapsed * self.loop.grad_accum / max(1, progress.window_batches),
            # host time blocked on data (next batch + copy), as a share of the window's wall time
            "data_wait_fraction": min(1.0, progress.window_data_wait_s / elapsed),
            "epoch": progress.position.epoch,
            "batches_in_epoch": progress.position.batches_in_epoch,
            "samples_seen": progress.position.samples_seen,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024,  # this rank (Linux: KiB)
            **resumed_metrics(self.resumed),
        }
        progress.history.append((progress.step, loss))
        progress.last_log = metrics
        if self.runtime.is_main:
            log.info(
                "step %d loss %.4f lr %.2e %.1f samples/s %.3f s/step",
                progress.step, loss, metrics["lr"], metrics["samples_per_second"], metrics["step_time_s"],
            )  # fmt: skip
        self.report(metrics)
        progress.window_loss, progress.window_batches, progress.window_samples = 0.0, 0, 0
        progress.window_data_wait_s = 0.0
        progress.window_started = time.monotonic()

    def save_checkpoint(self, *, final: bool) -> CheckpointRef | None:
        """Rank 0 writes and commits; every rank waits, so no rank runs ahead of a checkpoint."""
        ref = None
        if self.runtime.is_main:
            started = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="checkpoint-") as folder:
                self.write_checkpoint_files(Path(folder), final=final)
                ref = self.store.save(self.progress.step, folder)
            log.info(
                "checkpoint step %d committed at %s in %.1f s", ref.step, ref.url, time.monotonic() - started
            )
        self.progress.last_saved_step = self.progress.step
        self.runtime.barrier()
        return ref

    def write_checkpoint_files(self, folder: Path, *, final: bool) -> None:
        progress = self.progress
        save_model(self.model, folder)  # model.safetensors + model_config.json
        save_train_state(
            folder / TRAIN_STATE_FILE,
            step=progress.step,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            data_position=progress.position,
            rng=capture_rng_state(),
        )
        (folder / RUN_CONFIG_FILE).write_text(
            json.dumps(self.run_config, indent=2, sort_keys=True, default=str) + "\n"
        )
        metrics = {
            "step": progress.step,
            "loss_history": progress.history,
            "data_position": progress.position.summary(),
            "resumed": resumed_metrics(self.resumed),
            "preempted": progress.preempted,  # stopped by SIGTERM: the run continues when submitted again
            "last_log": progress.last_log,  # samples/s, step time, peak RSS of rank 0 at the last log
        }
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        if final and progress.history:
            steps, losses = zip(*progress.history, strict=True)
            title = f"{self.run_config.get('run_name', 'run')}: loss"
            plot_loss_curve(list(steps), list(losses), folder / LOSS_CURVE_FILE, title=title)

    def resume(self) -> None:
        ref = self.store.latest()  # only committed checkpoints; a corrupt one is skipped with a warning
        if ref is None:
            return
        with read_checkpoint(ref, store=self.store) as checkpoint:
            # The same model is required; the weights come from the checkpoint, so where the initial
            # weights came from ("pretrained") may differ.
            check_compatible(
                checkpoint.model_config_dict(), self.model.config.to_dict(), ignore=("pretrained",)
            )
            _check_same_clip_sequence(checkpoint.run_config(), self.run_config)
            self.model.load_state_dict(checkpoint.weights(device=str(self.runtime.device)))
            step, position, rng = load_train_state(
                checkpoint.train_state_path, optimizer=self.optimizer, scheduler=self.scheduler
            )
            history = checkpoint.metrics().get("loss_history", [])
        restore_rng_state(rng)
        self.progress = _Progress(
            step=step, position=position, history=[tuple(h) for h in history], last_saved_step=step
        )
        self.resumed = Resumed(
            from_step=step,
            data_position=position,
            optimizer_steps=_adam_steps(self.optimizer),
            checkpoint=ref.url,
        )
        if self.runtime.is_main:
            log.info("resumed from %s: step %d, %s", ref.url, step, position)


def _check_same_clip_sequence(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    """A data position counts clips of one epoch sequence (manifest, seed, clip config): resume only on it."""
    try:
        check_compatible(saved.get("clip_sequence", {}), wanted.get("clip_sequence", {}))
    except ValueError as error:
        raise ValueError(
            f"the checkpoint's data position is a position in another clip sequence: {error}"
        ) from None


def resumed_metrics(resumed: Resumed | None) -> dict:
    """Where a resumed run picked up (reported with every log, so a restart is visible in the metrics)."""
    if resumed is None:
        return {"resumed_from_step": -1}
    return {
        "resumed_from_step": resumed.from_step,
        "resumed_optimizer_steps": resumed.optimizer_steps,
        "resumed_epoch": resumed.data_position.epoch,
        "resumed_batches_in_epoch": resumed.data_position.batches_in_epoch,
    }


def _adam_steps(optimizer: torch.optim.Optimizer) -> int:
    for param_state in optimizer.state.values():
        if "step" in param_state:
            return int(param_state["step"])
    return 0


def _autocast(precision: str, device: torch.device):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def _no_sync_unless(trained: nn.Module, sync_now: bool):
    # Under DDP, skip the gradient all-reduce on accumulation micro-steps; reduce on the last one.
    if sync_now or not isinstance(trained, DistributedDataParallel):
        return nullcontext()
    return trained.no_sync()


def _to_device(batch: dict, device: torch.device) -> dict:
    """Tensors to `device` (non-blocking: overlaps with compute when the loader pins memory). uint8 video
    (StreamConfig.video_dtype="uint8") is normalised there and JPEG video (decode_on="device") decoded there,
    so the objective always sees float32 video (B, T, 3, S, S)."""
    moved: dict[str, Any] = {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }
    if "video_jpegs" in moved:  # StreamConfig.decode_on="device": nvJPEG on this device
        mask = moved["video_mask"]
        pixels = decode_clips_on_device(
            moved.pop("video_jpegs"), moved.pop("video_crops"), size=moved.pop("video_size"),
            frames=mask.shape[1], device=device,
        )  # fmt: skip
        moved["video"] = normalise_video(pixels, mask)
    elif "video" in moved and moved["video"].dtype == torch.uint8:
        moved["video"] = normalise_video(moved["video"], moved["video_mask"])
    return moved


def _batch_size(batch: dict) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise ValueError("a batch needs at least one tensor")
