"""The training data stream: shards -> clips with K candidate captions -> shuffled, decoded, tokenised batches.

Stages, each a generator over the previous one (one worker's view):

    shards of this (rank, worker) slot  ->  tar members (streamed through pipelines/storage.py)
    -> videos (members grouped by key; only ok manifest videos)  ->  clips (clips.py: frame and caption
    indices, JPEG bytes of the sampled frames only)  ->  this slot's quota of clips  ->  shuffle buffer
    ->  batches of clip records  ->  skip the batches a resume has already served (never decoded)
    ->  decode + crop + normalise (frames.py) and tokenise, only now (StreamConfig.video_dtype="uint8": the
    training loop normalises on its device; decode_on="device": the workers only pick crops and the loop
    decodes the JPEGs on the GPU with nvJPEG).

Splitting. The manifest alone decides everything (so every rank agrees without communicating):
- Usable shards: a shard is opened only if it has an ok video with at least one clip (clips.clip_count
  of its manifest num_frames / num_captions); all-failed shards are never opened.
- Slots: world_size x W readers, W = DataLoader workers per rank (num_workers, reduced if there are
  fewer usable shards than readers). Each epoch, shards are taken in an order shuffled by (seed, epoch) and
  each goes to the slot with the fewest clips so far (ties: lowest slot), so slots differ by at most about
  one shard's clips and every slot has a shard. Slot `rank * W + w` is rank `rank`'s slot w.
- Equal batches: batches_per_epoch = floor(total clips / (world_size * batch_size)), the same on every
  rank. Batch b of a rank's epoch comes from slot b % W (the DataLoader's round-robin over its workers), so
  slot w owns ceil((batches_per_epoch - w) / W) batches: a slot with more clips than that stops reading
  once it has them (the rest of its last shard is dropped this epoch); a slot with fewer reads its shards
  again (a new shard order and new clip anchors per pass). The greedy split keeps both to about one shard.
  Every rank thus yields exactly batches_per_epoch batches however uneven its shards are.
- Resume at batch b: DataLoader worker i serves slot (b + i) % W, so the loader's first batch is b; each slot
  re-streams its tars through the same deterministic stages and drops its already-served batches as clip
  records (their JPEGs are never decoded; their tar bytes are read again). Resuming needs the same manifest, seed, world_size, num_workers,
  batch_size and clip config as the interrupted run.

Determinism: every random choice comes from its own numpy Generator seeded by (seed, epoch, purpose, ...):
shard order, clip anchors (per video and pass), the shuffle buffer (per slot) and the crops (per clip), so
the same seed, epoch and rank give the same batches with any DataLoader timing.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from pipelines.sharding.manifest import MANIFEST_PREFIX, STATUS_OK, read_manifest
from pipelines.storage import Storage, open_storage
from pipelines.training.clips import ClipConfig, clip_count, parse_sample_json, sample_clips
from pipelines.training.frames import FrameConfig, clip_crop_box, decode_clip_uint8, normalise_video
from pipelines.training.train_state import DataPosition

log = logging.getLogger(__name__)
T = TypeVar("T")

Tokenize = Callable[[list[str]], torch.Tensor]  # captions -> token ids (N, L), e.g. open_clip's tokenizer

# Purpose codes: the second entropy word of each seeded Generator, so no two streams of randomness collide.
_SHARD_ORDER, _PASS_ORDER, _CLIP_ANCHORS, _SHUFFLE_BUFFER, _CROP = range(5)


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    shards: str  # the sharding job's output root: local folder or s3://bucket/prefix
    batch_size: int = 32  # clips per batch, per rank
    image_size: int = 224  # frames are image_size x image_size
    max_words: int = 32  # tokens per caption (CLIP4Clip: 32); `tokenize` must return this many
    shuffle_buffer: int = 1000  # clips held by each worker's shuffle buffer (1 = no shuffling)
    train: bool = True  # RandomResizedCrop (True) or short side + centre crop (False)
    seed: int = 0
    num_workers: int = 4  # DataLoader worker processes per rank (0 = read in the training process)
    clip: ClipConfig = field(default_factory=ClipConfig)
    crop_scale: tuple[float, float] = (0.9, 1.0)  # RandomResizedCrop's area range (open_clip's default)
    pin_memory: bool = False  # DataLoader pin_memory (faster host-to-GPU copies)
    # "float32": batches carry normalised float32 video (B, T, 3, S, S). "uint8": raw pixels (B, T, S, S, 3),
    # 4x fewer bytes through worker IPC, pinned memory and the host-to-GPU copy; the training loop normalises
    # them on its device (frames.normalise_video), to the same values.
    video_dtype: Literal["float32", "uint8"] = "float32"
    # "workers": JPEGs are decoded (PIL, libjpeg DCT scaling) in the DataLoader workers. "device": workers only
    # choose crops; batches carry the JPEG bytes ("video_jpegs", "video_crops") and the training loop decodes
    # them on the GPU with nvJPEG (frames.decode_clips_on_device): for nodes with too few cores per GPU.
    decode_on: Literal["workers", "device"] = "workers"
    prefetch_factor: int = 2  # batches each worker prepares ahead (with num_workers > 0)

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("image_size", 1), ("max_words", 2), ("shuffle_buffer", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"StreamConfig.{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("seed", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"StreamConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.prefetch_factor < 1:
            raise ValueError(f"StreamConfig.prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.decode_on not in ("workers", "device"):
            raise ValueError(f"StreamConfig.decode_on must be 'workers' or 'device', got {self.decode_on!r}")
        if self.video_dtype not in ("float32", "uint8"):
            raise ValueError(
                f"StreamConfig.video_dtype must be 'float32' or 'uint8', got {self.video_dtype!r}"
            )

    @property
    def frames(self) -> FrameConfig:
        return FrameConfig(image_size=self.image_size, random_crop=self.train, crop_scale=self.crop_scale)


@dataclass(frozen=True, kw_only=True)
class ShardEntry:
    """A usable shard, as the manifest describes it."""

    key: str  # tar key relative to the root, e.g. "shards/howto100m-000012.tar"
    video_keys: frozenset[str]  # __key__ of its ok videos (anything else in the tar is ignored)
    clips: int  # clips one pass over it yields (clips.clip_count summed over its ok videos)


@dataclass(frozen=True, kw_only=True)
class ClipRecord:
    """A clip before decoding: what the shuffle buffer holds (only the sampled frames' bytes)."""

    video_id: str
    start_s: float  # timestamp of the clip's first frame
    jpegs: tuple[bytes, ...]  # 1..max_frames frames
    texts: tuple[str, ...]  # 1..K candidate captions, the anchor first
    crop_entropy: tuple[int, ...]  # seeds this clip's crop Generator


# --------------------------------------------------------------------------------------------------
# The manifest: usable shards, clip counts, digest


def manifest_digest(table: pa.Table) -> str:
    """sha256 (hex) of the manifest's sorted (video_id, shard, status) rows: identifies the training data."""
    rows = sorted(zip(*(table.column(c).to_pylist() for c in ("video_id", "shard", "status")), strict=True))
    digest = hashlib.sha256()
    for row in rows:
        digest.update(("\t".join(row) + "\n").encode("utf-8"))
    return digest.hexdigest()


def usable_shards(table: pa.Table, clip: ClipConfig, *, root: str) -> list[ShardEntry]:
    """Shards with at least one clip, sorted by key; ValueError saying why when there are none."""
    rows = table.select(["shard", "key", "status", "reason", "num_frames", "num_captions"]).to_pylist()
    ok_rows = [row for row in rows if row["status"] == STATUS_OK]
    by_shard: dict[str, list[dict]] = collections.defaultdict(list)
    for row in ok_rows:
        if clip_count(row["num_frames"], row["num_captions"], clip) > 0:
            by_shard[row["shard"]].append(row)
    if not by_shard:
        raise ValueError(_no_usable_shards_message(rows, ok_rows, root))
    return [
        ShardEntry(
            key=shard,
            video_keys=frozenset(row["key"] for row in shard_rows),
            clips=sum(clip_count(row["num_frames"], row["num_captions"], clip) for row in shard_rows),
        )
        for shard, shard_rows in sorted(by_shard.items())
    ]


def _no_usable_shards_message(rows: list[dict], ok_rows: list[dict], root: str) -> str:
    if not rows:
        return (
            f"no manifest rows under {root}/{MANIFEST_PREFIX}: point StreamConfig.shards at the output root of "
            "a finished sharding job (jobs/shard_howto100m.py), the folder holding shards/ and manifest/"
        )
    if not ok_rows:
        return (
            f"all {len(rows)} videos in the manifest of {root} failed to shard, so there is nothing to train on "
            f"(reasons: {_reason_counts(rows)}); see the manifest's detail column and rerun the sharding job"
        )
    return (
        f"{len(ok_rows)} of {len(rows)} videos in {root} sharded ok, but none has both frames and captions "
        "(manifest num_frames and num_captions), so no clip can be cut; check the captions of the collection"
    )


def _reason_counts(rows: list[dict]) -> str:
    counts = collections.Counter(row["reason"] or "?" for row in rows)
    return ", ".join(f"{reason}={count}" for reason, count in counts.most_common(5))


def assign_shards(
    shards: Sequence[ShardEntry], *, slots: int, seed: int, epoch: int
) -> list[list[ShardEntry]]:
    """This epoch's shards of every slot: shuffled by (seed, epoch), each to the slot with fewest clips."""
    order = np.random.default_rng([seed, _SHARD_ORDER, epoch]).permutation(len(shards))
    assigned: list[list[ShardEntry]] = [[] for _ in range(slots)]
    lightest = [(0, slot) for slot in range(slots)]  # heap of (clips so far, slot): ties go to the lower slot
    for index in order.tolist():
        load, slot = heapq.heappop(lightest)
        assigned[slot].append(shards[index])
        heapq.heappush(lightest, (load + shards[index].clips, slot))
    return assigned


def slot_batch_count(batches: int, slots: int, slot: int) -> int:
    """Batches b in [0, batches) with b % slots == slot: what one rank's slot serves per epoch."""
    return max(0, (batches - slot + slots - 1) // slots)


# --------------------------------------------------------------------------------------------------
# Generator stages


def read_shard_samples(storage: Storage, shard: ShardEntry) -> Iterator[dict]:
    """The ok videos of one tar, each a dict of its members (json, 000000.jpg, ...) streamed from storage."""
    stream = storage.open_read(shard.key)
    try:
        members = tar_file_expander([{"url": storage.uri(shard.key), "stream": stream}])
        for sample in group_by_keys(members):
            if sample["__key__"] in shard.video_keys:  # anything not ok in the manifest is not ours to read
                yield sample
    finally:
        stream.close()


def cut_clips(sample: dict, *, clip: ClipConfig, entropy: tuple[int, ...], where: str) -> list[ClipRecord]:
    """The clips of one video (clips.py's rule) with the JPEG bytes of their frames; the rest is dropped."""
    if "json" not in sample:
        raise ValueError(f"{where}: the tar has no {sample['__key__']}.json member (see the shard contract)")
    metadata = json.loads(sample["json"])
    video = parse_sample_json(metadata, where=where)
    timestamps = metadata.get("frame_timestamps_s") or []
    if len(timestamps) != video.num_frames:  # older or hand-made shards: frame n is at n s (1 fps)
        timestamps = [float(n) for n in range(video.num_frames)]
    records = []
    for index, spec in enumerate(sample_clips(video, clip, np.random.default_rng([*entropy, _CLIP_ANCHORS]))):
        records.append(
            ClipRecord(
                video_id=str(metadata.get("video_id", sample["__key__"])),
                start_s=float(timestamps[spec.frame_indices[0]]),
                jpegs=tuple(_frame_member(sample, i, where) for i in spec.frame_indices),
                texts=tuple(video.text[i] for i in spec.caption_indices),
                crop_entropy=(*entropy, _CROP, index),
            )
        )
    return records


def _frame_member(sample: dict, frame: int, where: str) -> bytes:
    name = f"{frame:06d}.jpg"
    if name not in sample:
        raise ValueError(f"{where}: frame member {sample['__key__']}.{name} is missing from the tar")
    return sample[name]


def shuffle_buffer(items: Iterable[T], *, size: int, rng: np.random.Generator) -> Iterator[T]:
    """Fill a buffer of `size`, then yield a random buffered item for each new one; drain shuffled at the end."""
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        pick = int(rng.integers(size))
        buffer[pick], item = item, buffer[pick]
        yield item
    for pick in rng.permutation(len(buffer)).tolist():
        yield buffer[pick]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter if the items run out)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def assemble_batch(
    clips: Sequence[ClipRecord],
    *,
    frames: FrameConfig,
    clip: ClipConfig,
    tokenize: Tokenize,
    max_words: int,
    video_dtype: str = "float32",
    decode_on: str = "workers",
) -> dict:
    """Decode, crop, (normalise) and tokenise a batch of clip records (the only place JPEGs are decoded)."""
    text, text_mask = _batch_text(clips, tokenize, clip.candidates, max_words)
    if decode_on == "device":
        return {**_jpeg_video(clips, frames, clip.max_frames), **_batch_ids(clips, text, text_mask)}
    pixels, video_mask = _batch_pixels(clips, frames, clip.max_frames)
    video = normalise_video(pixels, video_mask) if video_dtype == "float32" else pixels
    return {
        "video": video,  # float32 (B, T, 3, S, S), zeros at padded frames; uint8: (B, T, S, S, 3) pixels
        "video_mask": video_mask,  # bool (B, T)
        **_batch_ids(clips, text, text_mask),
    }


def _jpeg_video(clips: Sequence[ClipRecord], frames: FrameConfig, max_frames: int) -> dict:
    """The video part of a batch left for the GPU to decode: JPEG bytes, each clip's crop, the frame mask."""
    video_mask = torch.zeros(len(clips), max_frames, dtype=torch.bool)
    for row, record in enumerate(clips):
        video_mask[row, : len(record.jpegs)] = True
    return {
        "video_jpegs": [record.jpegs for record in clips],  # B tuples of 1..T JPEG bytes
        "video_crops": [
            clip_crop_box(record.jpegs[0], frames, np.random.default_rng(record.crop_entropy))
            for record in clips
        ],  # the crops the workers would have used: the same rng draws
        "video_size": frames.image_size,  # S
        "video_mask": video_mask,  # bool (B, T)
    }


def _batch_ids(clips: Sequence[ClipRecord], text: torch.Tensor, text_mask: torch.Tensor) -> dict:
    return {
        "text": text,  # int64 (B, K, L), zeros for missing candidates
        "text_mask": text_mask,  # bool (B, K)
        "video_id": [c.video_id for c in clips],
        "clip_start_s": torch.tensor([c.start_s for c in clips], dtype=torch.float64),  # (B,)
    }


def _batch_pixels(
    clips: Sequence[ClipRecord], frames: FrameConfig, max_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, T, S, S, 3), zeros at padded frames, and the bool (B, T) mask of real frames."""
    size = frames.image_size
    pixels = np.zeros((len(clips), max_frames, size, size, 3), dtype=np.uint8)  # (B, T, S, S, 3)
    video_mask = torch.zeros(len(clips), max_frames, dtype=torch.bool)
    for row, record in enumerate(clips):
        count = len(record.jpegs)
        pixels[row, :count] = decode_clip_uint8(
            record.jpegs, frames, np.random.default_rng(record.crop_entropy)
        )
        video_mask[row, :count] = True
    return torch.from_numpy(pixels), video_mask


def _batch_text(
    clips: Sequence[ClipRecord], tokenize: Tokenize, candidates: int, max_words: int
) -> tuple[torch.Tensor, torch.Tensor]:
    texts = [text for record in clips for text in record.texts]
    tokens = tokenize(texts)
    if tokens.ndim != 2 or tokens.shape != (len(texts), max_words):
        raise ValueError(
            f"tokenize returned shape {tuple(tokens.shape)} for {len(texts)} captions, expected "
            f"({len(texts)}, {max_words}): make the tokenizer with context length StreamConfig.max_words "
            "(e.g. model.tokenizer() or open_clip.get_tokenizer(name, context_length=max_words))"
        )
    text_mask = torch.zeros(len(clips), candidates, dtype=torch.bool)
    for row, record in enumerate(clips):
        text_mask[row, : len(record.texts)] = True
    text = torch.zeros(len(clips), candidates, max_words, dtype=torch.long)
    text[text_mask] = tokens.to(torch.long)  # row-major order of the mask == order of `texts`
    return text, text_mask


# --------------------------------------------------------------------------------------------------
# One epoch of one rank, as a torch IterableDataset


@dataclass(frozen=True, kw_only=True)
class _EpochPlan:
    """What a rank's DataLoader workers need for one epoch (picklable; no open clients)."""

    config: StreamConfig
    root: str
    rank: int
    slots_per_rank: int  # W
    epoch: int
    batches: int  # batches_per_epoch
    start_batch: int  # first batch to yield (resume)
    slot_shards: tuple[tuple[ShardEntry, ...], ...]  # this rank's W slots


class _EpochDataset(IterableDataset):
    def __init__(self, plan: _EpochPlan, tokenize: Tokenize) -> None:
        super().__init__()
        self.plan = plan
        self.tokenize = tokenize

    def __len__(self) -> int:
        return self.plan.batches - self.plan.start_batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        assert workers == self.plan.slots_per_rank, "the DataLoader must run one worker per slot"
        slot = (self.plan.start_batch + worker) % workers
        return self._slot_batches(slot)

    def _slot_batches(self, slot: int) -> Iterator[dict]:
        plan, config = self.plan, self.plan.config
        slot_id = plan.rank * plan.slots_per_rank + slot
        owned = slot_batch_count(plan.batches, plan.slots_per_rank, slot)
        already_served = slot_batch_count(plan.start_batch, plan.slots_per_rank, slot)
        # Exactly the clips this slot owns, cut before shuffling so the buffer drains at the end of the quota
        # (a slot with too many clips stops reading early; one with too few reads its shards again).
        clips: Iterator[ClipRecord] = itertools.islice(
            _slot_clips(plan, slot_id, plan.slot_shards[slot]), owned * config.batch_size
        )
        clips = shuffle_buffer(
            clips,
            size=config.shuffle_buffer,
            rng=np.random.default_rng([config.seed, _SHUFFLE_BUFFER, plan.epoch, slot_id]),
        )
        for records in itertools.islice(batched(clips, config.batch_size), already_served, None):
            yield assemble_batch(
                records,
                frames=config.frames,
                clip=config.clip,
                tokenize=self.tokenize,
                max_words=config.max_words,
                video_dtype=config.video_dtype,
                decode_on=config.decode_on,
            )


def _slot_clips(plan: _EpochPlan, slot_id: int, shards: Sequence[ShardEntry]) -> Iterator[ClipRecord]:
    """The slot's clips, pass after pass over its shards (later passes: new shard order, new anchors)."""
    storage = open_storage(plan.root)  # opened in the worker process: no client shared across a fork
    seed = plan.config.seed
    for pass_index in itertools.count():
        order = list(shards)
        if pass_index > 0:
            permutation = np.random.default_rng([seed, _PASS_ORDER, plan.epoch, slot_id, pass_index])
            order = [order[i] for i in permutation.permutation(len(order)).tolist()]
        produced = 0
        for shard in order:
            for sample in read_shard_samples(storage, shard):
                where = f"{storage.uri(shard.key)} video {sample['__key__']}"
                entropy = (seed, plan.epoch, pass_index, _stable_int(sample["__key__"]))
                for record in cut_clips(sample, clip=plan.config.clip, entropy=entropy, where=where):
                    produced += 1
                    yield record
        if produced == 0:
            keys = ", ".join(shard.key for shard in shards)
            raise ValueError(
                f"shards {keys} of {plan.root} yielded no clips although the manifest promises "
                f"{sum(s.clips for s in shards)}: the tars do not match the manifest; rerun the sharding job"
            )


def _stable_int(text: str) -> int:
    """A process-independent 63-bit integer of a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


# --------------------------------------------------------------------------------------------------
# The trainer's entry point


class ClipStream:
    """The clip stream of one rank. Reads the manifest once; `loader(position)` gives an epoch's DataLoader.

    rank / world_size come from the trainer (never from the environment: inside Ray Train workers RANK and
    WORLD_SIZE are set and would mislead a library that read them).
    """

    def __init__(self, config: StreamConfig, tokenize: Tokenize, *, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.config, self.tokenize, self.rank, self.world_size = config, tokenize, rank, world_size
        storage = open_storage(config.shards)
        self.root = storage.url
        table = read_manifest(storage)
        self.manifest_digest: str = manifest_digest(table)
        self.shards = usable_shards(table, config.clip, root=self.root)
        self.total_clips = sum(shard.clips for shard in self.shards)
        self.workers_per_rank = self._slots_per_rank()
        self.batches_per_epoch: int = self.total_clips // (world_size * config.batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{self.root} has {self.total_clips} clips in {len(self.shards)} usable shards, fewer than one "
                f"step of world_size x batch_size = {world_size} x {config.batch_size}: lower batch_size or "
                "shard more videos"
            )

    def _slots_per_rank(self) -> int:
        if len(self.shards) < self.world_size:
            raise ValueError(
                f"{self.root} has {len(self.shards)} usable shards for {self.world_size} ranks: every rank needs "
                "a shard of its own; reshard with fewer videos per shard (ShardLayoutConfig.videos_per_shard)"
            )
        wanted = max(1, self.config.num_workers)
        slots = min(wanted, len(self.shards) // self.world_size)
        if slots < wanted:
            log.warning(
                "%d usable shards for %d ranks x %d workers: using %d DataLoader workers per rank",
                len(self.shards),
                self.world_size,
                wanted,
                slots,
            )
        return slots

    def loader(self, position: DataPosition) -> DataLoader:
        """The DataLoader of epoch `position.epoch` from batch `position.batches_in_epoch` on: exactly
        batches_per_epoch - batches_in_epoch batches, identical to what an uninterrupted epoch yields there."""
        if not 0 <= position.batches_in_epoch <= self.batches_per_epoch:
            raise ValueError(
                f"batches_in_epoch={position.batches_in_epoch} is outside [0, {self.batches_per_epoch}] "
                f"(batches_per_epoch of {self.root}); was the checkpoint made on another manifest or batch size?"
            )
        plan = self._epoch_plan(position.epoch, position.batches_in_epoch)
        workers = self.workers_per_rank if self.config.num_workers > 0 else 0
        return DataLoader(
            _EpochDataset(plan, self.tokenize),
            batch_size=None,  # the workers batch (whole batches cross the process boundary)
            num_workers=workers,
            pin_memory=self.config.pin_memory,
            prefetch_factor=self.config.prefetch_factor if workers else None,
            persistent_workers=False,
        )

    def _epoch_plan(self, epoch: int, start_batch: int) -> _EpochPlan:
        slots = self.workers_per_rank
        assigned = assign_shards(
            self.shards, slots=self.world_size * slots, seed=self.config.seed, epoch=epoch
        )
        mine = assigned[self.rank * slots : (self.rank + 1) * slots]
        return _EpochPlan(
            config=self.config,
            root=self.root,
            rank=self.rank,
            slots_per_rank=slots,
            epoch=epoch,
            batches=self.batches_per_epoch,
            start_batch=start_batch,
            slot_shards=tuple(tuple(shards) for shards in mine),
        )


__all__ = [
    "ClipRecord",
    "ClipStream",
    "DataPosition",
    "ShardEntry",
    "StreamConfig",
    "assemble_batch",
    "assign_shards",
    "manifest_digest",
    "usable_shards",
]
