"""The train state of a checkpoint (`train_state.pt`): step, optimizer, scheduler, RNG, data position.

Model-agnostic and pickle-free: the file holds only tensors, numbers, strings, lists, tuples and
dicts, so it loads with `torch.load(..., weights_only=True)` (DESIGN.md: no pickles in hand-off
artefacts). Model weights live next to it in safetensors; this module never touches them.

Also the guard against resuming with a different model: `config_fingerprint` / `check_compatible`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.checkpoint.layout import MODEL_CONFIG_FILE

logger = logging.getLogger(__name__)

TRAIN_STATE_FORMAT = "clip4clip-train-state/1"
# What weights_only loading accepts (besides torch dtypes/devices, which no caller needs here).
_PLAIN_VALUES = (type(None), bool, int, float, str, bytes, torch.Tensor)


@dataclass(frozen=True, kw_only=True)
class DataPosition:
    """Where the data stream was when the checkpoint was taken, so a resume serves exactly what is left.

    `batches_in_epoch` counts the batches each rank consumed under `layout`. A source whose batches are
    already independent of the world size (fine-tuning's global batches) leaves `layout` and
    `served_before` empty. The clip stream fills them: `served_before` marks the clips of the epoch's
    world-size-free clip sequence that were served before `layout` (world size, readers per rank, clips
    per rank per batch, shuffle buffer) began, so any other layout can work out exactly which clips are left
    (pipelines/training/stream.py, "Resuming on another layout").
    """

    epoch: int  # 0-based epoch the next batch belongs to
    batches_in_epoch: int  # batches consumed per rank under `layout` (since it began serving this epoch)
    samples_seen: int  # samples consumed since the start of training (all ranks together)
    served_before: bytes = b""  # pack_served bitmap over the epoch's clips; b"": none
    layout: tuple[int, ...] = ()  # (world_size, readers/rank, clips/rank/batch, shuffle buffer); (): none

    def __post_init__(self) -> None:
        for name in ("epoch", "batches_in_epoch", "samples_seen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"DataPosition.{name} must be a non-negative int, got {value!r}")
        if not isinstance(self.served_before, bytes):
            raise ValueError(
                f"DataPosition.served_before must be bytes, got {type(self.served_before).__name__}"
            )
        if not all(isinstance(v, int) and v > 0 for v in self.layout) or len(self.layout) not in (0, 4):
            raise ValueError(f"DataPosition.layout must be () or 4 positive ints, got {self.layout!r}")

    def to_state(self) -> dict[str, Any]:
        """As stored in the train state: the bitmap as a uint8 tensor (weights_only loading refuses bytes)."""
        served = torch.from_numpy(np.frombuffer(self.served_before, np.uint8).copy())
        return {**asdict(self), "served_before": served, "layout": list(self.layout)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DataPosition:
        """Inverse of to_state (older states have no served_before / layout)."""
        served = state.get("served_before")
        return cls(
            **{
                **state,
                "served_before": b"" if served is None else served.numpy().tobytes(),
                "layout": tuple(state.get("layout", ())),
            }
        )

    def summary(self) -> dict[str, Any]:
        """JSON-safe description (metrics.json): the bitmap as the number of clips it marks."""
        return {
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "samples_seen": self.samples_seen,
            "layout": list(self.layout),
            "served_before_clips": int(np.unpackbits(np.frombuffer(self.served_before, np.uint8)).sum()),
        }


def pack_served(mask: np.ndarray) -> bytes:
    """A bool mask over an epoch's clips as DataPosition.served_before (1 bit per clip)."""
    return np.packbits(mask.astype(bool), bitorder="little").tobytes() if mask.any() else b""


def unpack_served(served: bytes, clips: int) -> np.ndarray:
    """DataPosition.served_before as a bool mask over the epoch's `clips` clips."""
    if not served:
        return np.zeros(clips, dtype=bool)
    if len(served) != (clips + 7) // 8:
        raise ValueError(
            f"the checkpoint's data position covers {len(served) * 8} clips, the data has {clips}: "
            "was it made on another manifest or clip config?"
        )
    return np.unpackbits(np.frombuffer(served, np.uint8), count=clips, bitorder="little").astype(bool)


# --------------------------------------------------------------------------------------------------
# RNG state


def capture_rng_state() -> dict[str, Any]:
    """Python `random`, numpy's global RNG, torch CPU and (if available) every visible CUDA device,
    as tensors, ints, floats and strings only (weights_only-loadable)."""
    version, mt_words, gauss_next = random.getstate()  # mt_words: 624 MT19937 words + position
    bit_generator, np_keys, np_pos, np_has_gauss, np_cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(mt_words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": bit_generator,
            "keys": torch.from_numpy(
                np.asarray(np_keys, dtype=np.int64)
            ),  # uint32 words; int64 holds them exactly
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()  # one ByteTensor per visible device
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of capture_rng_state; the CUDA part only where CUDA is available (warns otherwise)."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    _restore_cuda_rng_state(state.get("cuda"))


def _restore_cuda_rng_state(cuda_states: list[torch.Tensor] | None) -> None:
    if cuda_states is None:
        return
    if not torch.cuda.is_available():
        logger.warning("the checkpoint has CUDA RNG states but CUDA is not available: not restoring them")
        return
    if len(cuda_states) != torch.cuda.device_count():
        logger.warning(
            "the checkpoint has CUDA RNG states of %d devices, this process sees %d: restoring the first %d",
            len(cuda_states),
            torch.cuda.device_count(),
            min(len(cuda_states), torch.cuda.device_count()),
        )
    for device, device_state in enumerate(cuda_states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(device_state, device)


# --------------------------------------------------------------------------------------------------
# The train-state file


def save_train_state(
    path: str | os.PathLike[str],
    *,
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    data_position: DataPosition,
    rng: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the train state to a local `path` atomically (temp file + rename).

    `extra` is for small trainer bookkeeping (best metric, wall time, ...): plain values only, checked
    here so that a value weights_only loading would refuse fails now rather than at resume time.
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    _check_plain_values(dict(rng), "rng")
    _check_plain_values(dict(extra or {}), "extra")
    payload = {
        "format": TRAIN_STATE_FORMAT,
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "data_position": data_position.to_state(),
        "rng": dict(rng),
        "extra": dict(extra or {}),
    }
    _torch_save_atomically(payload, Path(path))


def load_train_state(
    path: str | os.PathLike[str],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> tuple[int, DataPosition, dict[str, Any]]:
    """Load optimizer (and scheduler) state in place; return (step, data position, rng state).

    The RNG state is returned, not applied: call restore_rng_state(rng) once everything that draws
    random numbers at construction time (model init, data pipeline set-up) has been built.
    """
    payload = _load_payload(Path(path))
    optimizer.load_state_dict(payload["optimizer"])  # moves the state to the params' devices
    _load_scheduler_state(path, scheduler, payload["scheduler"])
    return payload["step"], DataPosition.from_state(payload["data_position"]), payload["rng"]


def load_train_state_extra(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `extra` dict saved with the train state (memory-mapped: the optimizer tensors are not read)."""
    return _load_payload(Path(path), mmap=True)["extra"]


def _load_scheduler_state(
    path: str | os.PathLike[str], scheduler: torch.optim.lr_scheduler.LRScheduler | None, state: Any
) -> None:
    if scheduler is not None and state is None:
        raise ValueError(f"{path} was saved without a scheduler state, but a scheduler was passed to load it")
    if scheduler is None and state is not None:
        logger.warning("%s holds a scheduler state but no scheduler was passed: ignoring it", path)
    if scheduler is not None:
        scheduler.load_state_dict(state)


def _load_payload(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as err:  # weights_only refuses pickled objects with an UnpicklingError
        raise ValueError(
            f"{path} is not a loadable train state ({type(err).__name__}: {err}); "
            "it must be written by save_train_state and load with torch.load(weights_only=True)"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != TRAIN_STATE_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a train state of format {TRAIN_STATE_FORMAT!r} (found {found!r})")
    return payload


def _torch_save_atomically(payload: dict[str, Any], path: Path) -> None:
    temp_path = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        torch.save(payload, temp_path)
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)


def _check_plain_values(value: Any, where: str) -> None:
    """Raise ValueError naming the first value weights_only loading would refuse (e.g. a Path, a class)."""
    if isinstance(value, _PLAIN_VALUES):
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain_values(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise ValueError(
                    f"{where} has a key {key!r} of type {type(key).__name__}: use str or int keys"
                )
            _check_plain_values(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which "
        "torch.load(weights_only=True) refuses: store plain values (numbers, strings, lists, dicts, "
        "tensors) instead"
    )


# --------------------------------------------------------------------------------------------------
# Model-config compatibility


def config_fingerprint(model_config: Mapping[str, Any]) -> str:
    """sha256 (hex) of the config's canonical JSON: key order and tuple-vs-list do not matter."""
    return hashlib.sha256(_canonical_json(model_config).encode()).hexdigest()


def check_compatible(
    saved_model_config: Mapping[str, Any],
    wanted_model_config: Mapping[str, Any],
    *,
    ignore: Collection[str] = (),
) -> None:
    """Raise ValueError listing every differing key (dotted for nested dicts) unless the configs match.

    `ignore` names keys that may differ on resume (e.g. "pretrained": the weights come from the
    checkpoint anyway).
    """
    saved = _flatten(json.loads(_canonical_json(saved_model_config)))
    wanted = _flatten(json.loads(_canonical_json(wanted_model_config)))
    differing = sorted(
        key
        for key in saved.keys() | wanted.keys()
        if key not in ignore and saved.get(key, _ABSENT) != wanted.get(key, _ABSENT)
    )
    if not differing:
        return
    trained = ", ".join(f"{key}={_show(saved.get(key, _ABSENT))}" for key in differing)
    asked = ", ".join(f"{key}={_show(wanted.get(key, _ABSENT))}" for key in differing)
    raise ValueError(
        f"checkpoint was trained with {trained}, this run asks for {asked}; use a new --run-name to start "
        f"a fresh run, or set the model config to the checkpoint's (its {MODEL_CONFIG_FILE}) to resume it"
    )


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    if value is _ABSENT or isinstance(value, str):
        return str(value)
    return json.dumps(value)


def _canonical_json(config: Mapping[str, Any]) -> str:
    if not isinstance(config, Mapping):
        raise ValueError(
            f"a model config must be a dict (e.g. dataclasses.asdict(config)), got {type(config).__name__}"
        )
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"the model config must hold JSON values only (str, numbers, lists, dicts): {err}"
        ) from err


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
