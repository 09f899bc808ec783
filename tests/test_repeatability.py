"""Bit-for-bit repeatable runs on CPU: the same short post-pretraining (seed, config, world size 2 on Ray
workers) twice gives checkpoints with identical bytes (the commit markers' sha256), and the zero-shot model
of a fine-tuning whose head differs from the checkpoint's is the same model every time."""

from __future__ import annotations

import pytest
import torch

from pipelines.checkpoint.init_model import InitConfig
from pipelines.checkpoint.store import CheckpointStore
from pipelines.finetuning.finetune import FinetuneConfig, seeded_init_model
from pipelines.training.post_pretrain import run_post_pretraining
from tests.test_post_pretrain import debug_config, shards  # noqa: F401  (shards: the sharding job's output)

pytestmark = pytest.mark.slow

# Files whose bytes are the run's outcome (config.json and metrics.json also hold paths and timings).
OUTCOME_FILES = ("model.safetensors", "model_config.json", "train_state.pt")


def checkpoint_digests(root: str, run_name: str) -> dict[int, dict[str, str]]:
    refs = CheckpointStore(root, run_name).committed()
    return {ref.step: {name: ref.sha256[name] for name in OUTCOME_FILES} for ref in refs}


def test_same_post_pretraining_twice_gives_identical_checkpoints(shards, ray_driver, tmp_path):  # noqa: F811
    runs = []
    for name in ("first", "second"):
        config = debug_config(shards, str(tmp_path / name), "repeat", max_steps=6, log_every=1, every_steps=3)
        result = run_post_pretraining(config, storage_path=str(tmp_path / f"ray-{name}"))
        runs.append((checkpoint_digests(str(tmp_path / name), "repeat"), result.metrics["loss_history"]))
    (first, first_losses), (second, second_losses) = runs
    assert sorted(first) == [3, 6]
    assert first == second
    assert first_losses == second_losses and len(first_losses) == 6


def test_zero_shot_model_with_a_new_head_is_the_same_every_time(shards, tmp_path):  # noqa: F811
    from pipelines.training.post_pretrain import post_pretrain_worker
    from pipelines.training.runtime import single_process_runtime

    config = debug_config(shards, str(tmp_path), "pp", max_steps=2, every_steps=2)
    post_pretrain_worker(config, single_process_runtime())  # a meanP checkpoint
    finetune = FinetuneConfig(init=InitConfig(init=str(tmp_path / "pp"), head="seqTransf", max_frames=6))
    first, second = seeded_init_model(finetune).model, seeded_init_model(finetune).model
    assert first.head.state_dict().keys() == second.head.state_dict().keys()
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
