"""Retrieval data as tensors: (video, caption) training pairs as a BatchSource for the shared training loop,
and the test split's videos and captions for evaluation.

Training follows CLIP4Clip: every caption of every training video is one pair; an epoch is a seeded
permutation of all pairs, cut into global batches of `batch_size` pairs; rank r takes rows
[r * B/world, (r + 1) * B/world) of each global batch. The last incomplete global batch is dropped, so
every rank gets the same number of batches (DDP would hang otherwise) and the epoch is deterministic,
which makes resuming at `position.batches_in_epoch` exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipelines.finetuning.datasets.base import RetrievalItem
from pipelines.finetuning.frame_cache import FrameCache
from pipelines.training.frames import FrameConfig, decode_clip
from pipelines.training.train_state import DataPosition


@dataclass(frozen=True, kw_only=True)
class ClipTensorConfig:
    max_frames: int
    image_size: int


def video_tensor(
    cache: FrameCache, item: RetrievalItem, config: ClipTensorConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(max_frames, 3, S, S) CLIP-normalised centre crops, zero-padded, and the frame mask (max_frames,)."""
    return frames_tensor(cache.sampled_frames(item.path, config.max_frames), config)


def frames_tensor(jpegs: Sequence[bytes], config: ClipTensorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to max_frames JPEGs -> video_tensor's (video, mask)."""
    frames = decode_clip(jpegs, FrameConfig(image_size=config.image_size), np.random.default_rng(0))
    video = torch.zeros(config.max_frames, 3, config.image_size, config.image_size)
    video[: len(jpegs)] = frames
    mask = torch.zeros(config.max_frames, dtype=torch.bool)
    mask[: len(jpegs)] = True
    return video, mask


class _VideoBatches(Dataset):
    """Batches of videos by index lists (a whole batch per __getitem__, so DataLoader workers each build one)."""

    def __init__(
        self,
        items: Sequence[RetrievalItem],
        cache: FrameCache,
        config: ClipTensorConfig,
        tokenizer,
        batches: Sequence[Sequence[tuple[int, int]]],
    ) -> None:
        self.items, self.cache, self.config, self.tokenizer, self.batches = (
            items,
            cache,
            config,
            tokenizer,
            batches,
        )

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        pairs = self.batches[index]  # (item index, caption index)
        videos, masks = zip(
            *(video_tensor(self.cache, self.items[i], self.config) for i, _ in pairs), strict=True
        )
        batch = {"video": torch.stack(videos), "video_mask": torch.stack(masks)}
        if self.tokenizer is not None:
            batch["text"] = self.tokenizer([self.items[i].captions[c] for i, c in pairs])
        return batch


class RetrievalPairs:
    """BatchSource of (video, caption) pairs for one rank (see the module doc)."""

    def __init__(
        self,
        items: Sequence[RetrievalItem],
        cache: FrameCache,
        tokenizer,
        *,
        clip: ClipTensorConfig,
        global_batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        loader_workers: int,
    ) -> None:
        if global_batch_size % world_size:
            raise ValueError(
                f"batch size {global_batch_size} (global, as in the paper) must be divisible by the "
                f"{world_size} training workers"
            )
        self.pairs = [(i, c) for i, item in enumerate(items) for c in range(len(item.captions))]
        self.items, self.cache, self.tokenizer, self.clip = items, cache, tokenizer, clip
        self.global_batch_size, self.rank, self.world_size = global_batch_size, rank, world_size
        self.seed, self.loader_workers = seed, loader_workers
        self.batches_per_epoch = len(self.pairs) // global_batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{len(self.pairs)} training pairs make no global batch of {global_batch_size}: "
                "use a smaller --batch-size"
            )

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of `epoch`, in order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs))
        local = self.global_batch_size // self.world_size
        return [
            [self.pairs[j] for j in order[b * self.global_batch_size + self.rank * local :][:local]]
            for b in range(self.batches_per_epoch)
        ]

    def continue_from(self, position: DataPosition) -> DataPosition:
        return position  # batches_in_epoch counts global batches: the same on any world size

    def loader(self, position: DataPosition) -> Iterator[dict]:
        batches = self.epoch_batches(position.epoch)[position.batches_in_epoch :]
        dataset = _VideoBatches(self.items, self.cache, self.clip, self.tokenizer, batches)
        yield from DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.loader_workers)


def video_batches(
    items: Sequence[RetrievalItem],
    cache: FrameCache,
    clip: ClipTensorConfig,
    *,
    batch_size: int,
    loader_workers: int,
) -> Iterator[dict]:
    """The videos of `items` in order, as {"video", "video_mask"} batches (for evaluation)."""
    indices = [(i, 0) for i in range(len(items))]
    batches = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
    dataset = _VideoBatches(items, cache, clip, None, batches)
    yield from DataLoader(dataset, batch_size=None, shuffle=False, num_workers=loader_workers)
