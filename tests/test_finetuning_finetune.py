"""Fine-tuning pieces: the pair sampler every rank agrees on, and the symmetric cross-entropy objective."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.losses import symmetric_cross_entropy
from pipelines.finetuning.data import ClipTensorConfig, RetrievalPairs
from pipelines.finetuning.datasets.base import RetrievalItem
from pipelines.finetuning.finetune import symmetric_ce_objective
from pipelines.training.runtime import Runtime

ITEMS = [
    RetrievalItem(
        video_id=f"v{i}",
        path=Path(f"/nowhere/v{i}.mp4"),
        captions=tuple(f"c{i}.{c}" for c in range(i % 3 + 1)),
    )
    for i in range(10)
]  # 1+2+3+1+2+3+1+2+3+1 = 19 pairs


def sampler(rank: int, world: int, batch: int = 8, seed: int = 0) -> RetrievalPairs:
    clip = ClipTensorConfig(max_frames=2, image_size=64)
    return RetrievalPairs(ITEMS, None, None, clip=clip, global_batch_size=batch, rank=rank, world_size=world,
                          seed=seed, loader_workers=0)  # type: ignore[arg-type]  # fmt: skip


def test_ranks_split_each_global_batch_and_agree_on_the_count():
    ranks = [sampler(r, 2) for r in range(2)]
    assert [s.batches_per_epoch for s in ranks] == [2, 2]  # 19 // 8: the incomplete last batch is dropped
    for epoch in range(3):
        per_rank = [s.epoch_batches(epoch) for s in ranks]
        assert all(len(batch) == 4 for batches in per_rank for batch in batches)
        seen = [pair for batches in per_rank for batch in batches for pair in batch]
        assert len(seen) == len(set(seen)) == 16  # disjoint, no pair twice in an epoch
    assert sampler(0, 2).epoch_batches(1) == ranks[0].epoch_batches(1)  # deterministic: exact resume
    assert ranks[0].epoch_batches(0) != ranks[0].epoch_batches(1)  # reshuffled every epoch


def test_bad_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        sampler(0, 3, batch=8)
    with pytest.raises(ValueError, match="smaller --batch-size"):
        sampler(0, 1, batch=32)


@pytest.mark.parametrize("head", ["meanP", "tightTransf"])
def test_objective_is_the_symmetric_cross_entropy(head):
    torch.manual_seed(0)
    model = CLIP4Clip.from_config(CLIP4ClipConfig(backbone="debug", pretrained="", head=head, max_frames=2))
    batch = {
        "video": torch.randn(3, 2, 3, 64, 64),
        "video_mask": torch.ones(3, 2, dtype=torch.bool),
        "text": model.tokenizer()(["red then blue", "green then black", "white then cyan"]),
    }
    loss = symmetric_ce_objective(Runtime(rank=0, world_size=1, device=torch.device("cpu")))(model, batch)
    out = model(batch["video"], batch["video_mask"], batch["text"])
    scores = out["scores"] if head == "tightTransf" else out["logit_scale"] * out["text"] @ out["video"].T
    torch.testing.assert_close(loss, symmetric_cross_entropy(scores))
