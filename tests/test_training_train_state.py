"""pipelines.training.train_state: a resumed run continues bit-for-bit, and the file is pickle-free."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.training.train_state import (
    DataPosition,
    capture_rng_state,
    check_compatible,
    config_fingerprint,
    load_train_state,
    load_train_state_extra,
    pack_served,
    restore_rng_state,
    save_train_state,
    unpack_served,
)

WARMUP_STEPS = 4


def warmup_then_constant(step: int) -> float:
    return min(1.0, (step + 1) / WARMUP_STEPS)


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_training(seed: int) -> tuple[TinyModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = TinyModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_constant)
    return model, optimizer, scheduler


def train_steps(model: TinyModel, optimizer, scheduler, steps: int) -> list[float]:
    """Every RNG the trainer may use draws here: torch (data, dropout), numpy and python `random`."""
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 8)
        noise_scale = float(np.random.uniform(0.0, 0.1)) + random.gauss(0.0, 0.01)
        target = x.sum(dim=1, keepdim=True) + noise_scale * torch.randn(32, 1)
        loss = nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_resume_replays_the_same_steps_bitwise(tmp_path: pathlib.Path) -> None:
    model, optimizer, scheduler = make_training(seed=0)
    train_steps(model, optimizer, scheduler, steps=3)  # mid-warm-up: the scheduler state matters
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    served = np.zeros(21, dtype=bool)
    served[[0, 7, 8, 20]] = True  # world-size-free part: clips served before the layout (2, 1, 8, 1000) began
    position = DataPosition(
        epoch=1,
        batches_in_epoch=3,
        samples_seen=96,
        served_before=pack_served(served),
        layout=(2, 1, 8, 1000),
    )
    assert (unpack_served(position.served_before, 21) == served).all()
    assert position.summary()["served_before_clips"] == 4
    save_train_state(
        tmp_path / "train_state.pt",
        step=3,
        optimizer=optimizer,
        scheduler=scheduler,
        data_position=position,
        rng=capture_rng_state(),
    )
    expected_losses = train_steps(model, optimizer, scheduler, steps=5)
    expected_params = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    model, optimizer, scheduler = make_training(seed=123)  # fresh objects, different init and RNG
    model.load_state_dict(weights)
    step, loaded_position, rng = load_train_state(
        tmp_path / "train_state.pt", optimizer=optimizer, scheduler=scheduler
    )
    restore_rng_state(rng)
    assert (step, loaded_position) == (3, position)
    assert scheduler.last_epoch == 3
    assert train_steps(model, optimizer, scheduler, steps=5) == expected_losses
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected_params[name]), name


def test_the_file_holds_no_pickled_objects(tmp_path: pathlib.Path) -> None:
    model, optimizer, scheduler = make_training(seed=0)
    train_steps(model, optimizer, scheduler, steps=2)
    path = tmp_path / "train_state.pt"
    save_train_state(
        path,
        step=2,
        optimizer=optimizer,
        scheduler=scheduler,
        data_position=DataPosition(epoch=0, batches_in_epoch=2, samples_seen=64),
        rng=capture_rng_state(),
        extra={"best_loss": 0.5, "history": [1, 2, (3, "x")], "note": None},
    )
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    payload = torch.load(path, weights_only=True)  # what DESIGN.md allows for hand-off artefacts
    assert payload["step"] == 2 and payload["data_position"]["samples_seen"] == 64
    assert load_train_state_extra(path) == {"best_loss": 0.5, "history": [1, 2, (3, "x")], "note": None}


@pytest.mark.parametrize(
    "bad_extra",
    [
        {"path": pathlib.Path("/x")},
        {"nested": [{"position": DataPosition(epoch=0, batches_in_epoch=0, samples_seen=0)}]},
    ],
)
def test_extra_values_weights_only_would_refuse_fail_at_save(tmp_path: pathlib.Path, bad_extra: dict) -> None:
    _, optimizer, _ = make_training(seed=0)
    with pytest.raises(ValueError, match="weights_only"):
        save_train_state(
            tmp_path / "train_state.pt",
            step=0,
            optimizer=optimizer,
            data_position=DataPosition(epoch=0, batches_in_epoch=0, samples_seen=0),
            rng=capture_rng_state(),
            extra=bad_extra,
        )
    assert not (tmp_path / "train_state.pt").exists()


def test_a_pickle_with_arbitrary_objects_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "train_state.pt"
    torch.save({"format": "clip4clip-train-state/1", "evil": pathlib.Path("/etc")}, path)
    _, optimizer, _ = make_training(seed=0)
    with pytest.raises(ValueError, match="weights_only"):
        load_train_state(path, optimizer=optimizer)


def test_scheduler_expected_but_not_saved_is_an_error(tmp_path: pathlib.Path) -> None:
    _, optimizer, scheduler = make_training(seed=0)
    path = tmp_path / "train_state.pt"
    position = DataPosition(epoch=0, batches_in_epoch=0, samples_seen=0)
    save_train_state(path, step=0, optimizer=optimizer, data_position=position, rng=capture_rng_state())
    with pytest.raises(ValueError, match="without a scheduler"):
        load_train_state(path, optimizer=optimizer, scheduler=scheduler)


# --------------------------------------------------------------------------------------------------
# RNG state


def _draws() -> tuple:
    return (
        random.random(),
        random.gauss(0.0, 1.0),  # leaves a cached second normal (gauss_next) in the state
        np.random.random(3).tolist(),
        np.random.standard_normal(),  # same for numpy (has_gauss / cached_gaussian)
        torch.rand(3).tolist(),
    )


@pytest.mark.parametrize("pending_gaussian", [False, True])
def test_rng_round_trip_python_numpy_torch(tmp_path: pathlib.Path, pending_gaussian: bool) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    if pending_gaussian:  # both libraries cache the second of a pair of normals: it must survive too
        random.gauss(0.0, 1.0)
        np.random.standard_normal()
    state = capture_rng_state()
    expected = _draws()
    torch.save(state, tmp_path / "rng.pt")
    _draws()  # move every generator on
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_numpy_state_is_the_exact_mt19937_state() -> None:
    np.random.seed(12345)
    np.random.random(10)
    before = np.random.get_state(legacy=True)
    restore_rng_state(capture_rng_state())
    after = np.random.get_state(legacy=True)
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_round_trip() -> None:
    state = capture_rng_state()
    expected = torch.rand(4, device="cuda").cpu()
    torch.rand(4, device="cuda")
    restore_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda").cpu(), expected)


def test_cuda_state_without_cuda_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only path")
    state = {**capture_rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)]}
    with caplog.at_level(logging.WARNING):
        restore_rng_state(state)
    assert "CUDA" in caplog.text


# --------------------------------------------------------------------------------------------------
# Model-config compatibility


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyModelConfig:
    backbone: str = "ViT-B-32"
    head: str = "meanP"
    max_frames: int = 12
    patch_kernel: tuple[int, int, int] = (3, 32, 32)


def test_fingerprint_ignores_key_order_and_tuple_vs_list() -> None:
    config = dataclasses.asdict(ToyModelConfig())
    from_json_file = {key: list(v) if isinstance(v, tuple) else v for key, v in reversed(config.items())}
    assert config_fingerprint(config) == config_fingerprint(from_json_file)
    assert len(config_fingerprint(config)) == 64 and int(config_fingerprint(config), 16) >= 0


@pytest.mark.parametrize("change", [{"head": "seqTransf"}, {"max_frames": 13}, {"patch_kernel": (1, 32, 32)}])
def test_fingerprint_changes_with_any_value(change: dict) -> None:
    config = dataclasses.asdict(ToyModelConfig())
    assert config_fingerprint(config) != config_fingerprint({**config, **change})


def test_check_compatible_names_every_differing_key() -> None:
    saved = dataclasses.asdict(ToyModelConfig(head="seqTransf", max_frames=12))
    wanted = dataclasses.asdict(ToyModelConfig(head="meanP", max_frames=16))
    with pytest.raises(ValueError) as caught:
        check_compatible(saved, wanted)
    message = str(caught.value)
    assert "head=seqTransf" in message and "head=meanP" in message
    assert "max_frames=12" in message and "max_frames=16" in message
    assert "backbone" not in message and "--run-name" in message


def test_check_compatible_accepts_json_round_trip_and_ignored_keys() -> None:
    wanted = {**dataclasses.asdict(ToyModelConfig()), "pretrained": "", "vision": {"layers": 12}}
    saved = {**wanted, "patch_kernel": [3, 32, 32], "pretrained": "openai"}  # as read from config.json
    check_compatible(saved, wanted, ignore=("pretrained",))
    with pytest.raises(ValueError, match="pretrained=openai"):
        check_compatible(saved, wanted)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: {**c, "vision": {"layers": 24}},  # nested value
        lambda c: {k: v for k, v in c.items() if k != "head"},  # key missing in the checkpoint
    ],
)
def test_check_compatible_nested_and_missing_keys(mutate: Callable[[dict], dict]) -> None:
    wanted = {**dataclasses.asdict(ToyModelConfig()), "vision": {"layers": 12}}
    with pytest.raises(ValueError, match=r"vision\.layers|head=<absent>"):
        check_compatible(mutate(wanted), wanted)
