"""The training data stream: shards -> clips with K candidate captions -> shuffled, decoded, tokenised batches.

Stages, each a generator over the previous one (one worker's view):

    the shards of this reader's chunk  ->  tar members (streamed through pipelines/storage.py)
    -> videos (members grouped by key; only ok manifest videos)  ->  clips (clips.py: frame and caption
    indices, JPEG bytes of the sampled frames only)  ->  the chunk's clips of each shard  ->  shuffle buffer
    ->  batches of clip records  ->  skip the batches a resume has already served (never decoded)
    ->  decode + crop + normalise (frames.py) and tokenise, only now (StreamConfig.video_dtype="uint8": the
    training loop normalises on its device; decode_on="device": the workers only pick crops and the loop
    decodes the JPEGs on the GPU with nvJPEG).

The epoch's clip sequence (world-size-free). The manifest alone decides it, so every rank agrees without
communicating, whatever the world size or loader workers:
- Usable shards: a shard is opened only if it has an ok video with at least one clip (clips.clip_count
  of its manifest num_frames / num_captions); all-failed shards are never opened.
- Sequence: the usable shards in an order shuffled by (seed, epoch), each shard's clips in the order its tar
  yields them (clip anchors seeded by (seed, epoch, video)). A clip's global index is its shard's offset plus
  its ordinal in the shard; an epoch serves each clip at most once.

Splitting (a generation; a layout = world size x readers per rank x clips per rank per batch x shuffle buffer):
- The clips not yet served, in sequence order, make batches = floor(left / (world_size x batch_size))
  batches per rank, the same on every rank (uneven ranks hang DDP); the tail that does not fill a global
  batch is left out of the epoch (with the same global batch, the same tail an uninterrupted run leaves out).
- Those clips are cut into consecutive chunks, rank-major then reader: reader w of a rank (W = DataLoader
  workers, at least 1) serves batches b % W == w, so it gets slot_batch_count(batches, W, w) x batch_size
  clips. A reader streams only the shards its chunk touches and stops a tar after its last clip there; a shard
  cut between two readers is streamed by both (at most two partial shards per reader).
- Each reader shuffles its chunk in a buffer of `shuffle_buffer` clips (seeded per reader and generation).

Resuming on the same layout (batch b): DataLoader worker i serves reader (b + i) % W, so the loader's first
batch is b; each reader re-streams its chunk and drops its already-served batches as clip records (their
JPEGs are never decoded). The batches are exactly those of an uninterrupted run.

Resuming on another layout (other world size, loader workers, per-rank batch size or shuffle buffer): the
position records the clips served before its layout began (a bitmap over the epoch's global indices) and the
batches served under it. A shuffle buffer's output order depends only on how many items pass through it, so replaying
each old reader's shuffle on clip indices gives exactly which clips it served; those, plus the bitmap, are
the served set, and a new generation of the new layout serves everything else: nothing twice, nothing lost.
What is not kept exactly is order: the clips that sat in the old readers' shuffle buffers (at most
shuffle_buffer per old reader) are served by the new generation in its own order, and their shards'
regions are read again. With the same global batch the epoch's multiset of clips equals an uninterrupted
run's; with another global batch the left-out tail is the remainder for the new one.

Determinism: every random choice comes from its own numpy Generator seeded by (seed, epoch, purpose, ...):
shard order, clip anchors (per video), the shuffle buffer (per reader and generation) and the crops (per
clip), so the same seed, epoch and layout give the same batches with any DataLoader timing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from pipelines.config_values import PositiveInt
from pipelines.sharding.manifest import MANIFEST_PREFIX, STATUS_OK, read_manifest
from pipelines.storage import Storage, open_storage
from pipelines.training.clips import ClipConfig, clip_count, parse_sample_json, sample_clips
from pipelines.training.frames import FrameConfig, clip_crop_box, decode_clip_uint8, normalise_video
from pipelines.training.train_state import DataPosition, pack_served, unpack_served

log = logging.getLogger(__name__)
T = TypeVar("T")

Tokenize = Callable[[list[str]], torch.Tensor]  # captions -> token ids (N, L), e.g. open_clip's tokenizer

# Purpose codes: the second entropy word of each seeded Generator, so no two streams of randomness collide.
_SHARD_ORDER, _CLIP_ANCHORS, _SHUFFLE_BUFFER, _CROP = 0, 2, 3, 4  # 1 was the per-slot pass order


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    shards: str  # the sharding job's output root: local folder or s3://bucket/prefix
    batch_size: PositiveInt = 32  # clips per batch, per rank
    image_size: int = 224  # frames are image_size x image_size
    max_words: PositiveInt = 32  # tokens per caption (CLIP4Clip: 32); `tokenize` must return this many
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
    index: int = -1  # global index in the epoch's clip sequence (-1: not cut by a ClipStream reader)


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
            f"no manifest rows under {root}/{MANIFEST_PREFIX}: point --shards at the output root of "
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


def epoch_clip_order(shards: Sequence[ShardEntry], *, seed: int, epoch: int) -> np.ndarray:
    """The epoch's clip sequence as global clip indices (int64, length total clips): the shards in an order
    shuffled by (seed, epoch), each shard's clips in the order its tar yields them. A clip's global index is
    its shard's offset (shards sorted by key, as usable_shards returns them) plus its ordinal in the shard."""
    counts = np.array([shard.clips for shard in shards], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    shard_order = np.random.default_rng([seed, _SHARD_ORDER, epoch]).permutation(len(shards))
    return np.concatenate([np.arange(offsets[i], offsets[i] + counts[i]) for i in shard_order.tolist()])


def slot_batch_count(batches: int, slots: int, slot: int) -> int:
    """Batches b in [0, batches) with b % slots == slot: what one rank's slot serves per epoch."""
    return max(0, (batches - slot + slots - 1) // slots)


@dataclass(frozen=True, kw_only=True, eq=False)
class Generation:
    """How one layout serves what is left of an epoch: the reader chunks of every rank.

    The clips not yet served, in the epoch's sequence order, minus the tail that does not fill a global
    batch, are cut into consecutive chunks, rank-major then reader: reader w of rank r gets
    slot_batch_count(batches, readers, w) * batch clips, exactly what it serves."""

    layout: tuple[
        int, int, int, int
    ]  # (world_size, readers per rank, clips per rank per batch, shuffle buffer)
    batches: int  # per rank
    chunks: tuple[np.ndarray, ...]  # global clip indices, sequence order; index rank * readers + reader
    shuffle_entropy: tuple[tuple[int, ...], ...]  # seeds each reader's shuffle buffer


def plan_generation(
    order: np.ndarray, served: np.ndarray, layout: tuple[int, int, int, int], *, seed: int, epoch: int
) -> Generation:
    """The generation that serves the clips of `order` not marked in `served` (bool, by global index)."""
    world_size, readers, batch, _ = layout
    remaining = order[~served[order]]
    batches = len(remaining) // (world_size * batch)
    chunks, start = [], 0
    for _rank in range(world_size):
        for reader in range(readers):
            size = slot_batch_count(batches, readers, reader) * batch
            chunks.append(remaining[start : start + size])
            start += size
    served_count = int(served.sum())
    entropy = tuple(
        (seed, _SHUFFLE_BUFFER, epoch, served_count, *layout, reader) for reader in range(len(chunks))
    )
    return Generation(layout=layout, batches=batches, chunks=tuple(chunks), shuffle_entropy=entropy)


def served_by(generation: Generation, batches: int) -> np.ndarray:
    """Global indices of the clips `generation` served in its first `batches` batches per rank: the
    shuffle buffer's output order depends only on how many items pass through it, so it replays on indices."""
    _, readers, batch, shuffle_size = generation.layout
    served: list[int] = []
    for reader, chunk in enumerate(generation.chunks):
        count = slot_batch_count(batches, readers, reader % readers) * batch
        rng = np.random.default_rng(generation.shuffle_entropy[reader])
        served.extend(itertools.islice(shuffle_buffer(chunk.tolist(), size=shuffle_size, rng=rng), count))
    return np.array(served, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# Generator stages


def read_shard_samples(storage: Storage, shard: ShardEntry) -> Generator[dict, None, None]:
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
        "clip_index": torch.tensor(
            [c.index for c in clips], dtype=torch.int64
        ),  # (B,) in the epoch's sequence
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


@dataclass(frozen=True, kw_only=True, eq=False)
class _ReaderUnit:
    """The clips one reader takes from one shard."""

    shard: ShardEntry
    first_index: int  # global index of the shard's first clip
    ordinals: np.ndarray  # ascending ordinals (in the shard's own clip order) of the clips to serve


@dataclass(frozen=True, kw_only=True, eq=False)
class _EpochPlan:
    """What a rank's DataLoader workers need for one generation of an epoch (picklable; no open clients)."""

    config: StreamConfig
    root: str
    readers: int  # W
    epoch: int
    batches: int  # this generation's batches per rank
    start_batch: int  # first batch to yield (resume under the same layout)
    reader_units: tuple[tuple[_ReaderUnit, ...], ...]  # this rank's W readers
    shuffle_entropy: tuple[tuple[int, ...], ...]  # this rank's W readers


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
        assert workers == self.plan.readers, "the DataLoader must run one worker per reader"
        slot = (self.plan.start_batch + worker) % workers
        return self._slot_batches(slot)

    def _slot_batches(self, slot: int) -> Iterator[dict]:
        plan, config = self.plan, self.plan.config
        already_served = slot_batch_count(plan.start_batch, plan.readers, slot)
        # The reader's chunk is exactly the clips it serves, so the buffer drains at the end of it.
        clips = shuffle_buffer(
            _reader_clips(plan, plan.reader_units[slot]),
            size=config.shuffle_buffer,
            rng=np.random.default_rng(plan.shuffle_entropy[slot]),
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


def _reader_clips(plan: _EpochPlan, units: Sequence[_ReaderUnit]) -> Iterator[ClipRecord]:
    """The clips of a reader's chunk, in sequence order."""
    storage = open_storage(plan.root)  # opened in the worker process: no client shared across a fork
    for unit in units:
        yield from _unit_clips(storage, plan, unit)


def _unit_clips(storage: Storage, plan: _EpochPlan, unit: _ReaderUnit) -> Iterator[ClipRecord]:
    """The wanted clips of one shard; stops reading the tar after the last one."""
    wanted, taken, ordinal, shard = unit.ordinals.tolist(), 0, 0, unit.shard
    with contextlib.closing(read_shard_samples(storage, shard)) as samples:
        for sample in samples:
            where = f"{storage.uri(shard.key)} video {sample['__key__']}"
            entropy = (plan.config.seed, plan.epoch, _stable_int(sample["__key__"]))
            for record in cut_clips(sample, clip=plan.config.clip, entropy=entropy, where=where):
                if ordinal == wanted[taken]:
                    yield dataclasses.replace(record, index=unit.first_index + ordinal)
                    taken += 1
                    if taken == len(wanted):
                        return
                ordinal += 1
    raise ValueError(
        f"{storage.uri(shard.key)} yielded {ordinal} clips although the manifest promises {shard.clips}: "
        "the tars do not match the manifest; rerun the sharding job"
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
        counts = np.array([shard.clips for shard in self.shards], dtype=np.int64)
        self.shard_offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])  # global index of each first clip
        self.total_clips = int(counts.sum())
        self.readers_per_rank = max(1, config.num_workers)
        self.layout = (world_size, self.readers_per_rank, config.batch_size, config.shuffle_buffer)
        # a fresh epoch's batches per rank; the tail that does not fill a global batch is left out
        self.batches_per_epoch: int = self.total_clips // (world_size * config.batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{self.root} has {self.total_clips} clips in {len(self.shards)} usable shards, fewer than one "
                f"step of world_size x batch_size = {world_size} x {config.batch_size}: lower batch_size or "
                "shard more videos"
            )
        self._generations: dict[tuple, Generation] = {}

    def continue_from(self, position: DataPosition) -> DataPosition:
        """`position` expressed in this stream's layout: unchanged under the same layout (the rest of the epoch
        is then exactly what an uninterrupted run would have served), else the clips served so far become
        `served_before` and a new generation of this layout serves the rest."""
        if position.layout == self.layout:
            return position
        if not position.layout:
            if position.batches_in_epoch or position.served_before:
                raise ValueError(
                    f"data position {position} has no layout, so which clips it served is unknown: a checkpoint "
                    "made before world-size-free positions; resume it with a new --run-name"
                )
            return dataclasses.replace(position, layout=self.layout)
        served = self.served_mask(position)
        log.info(
            "epoch %d continues on layout %s (world size, readers/rank, clips/rank, shuffle; was %s): %d of its "
            "%d clips already served", position.epoch, self.layout, position.layout, served.sum(), self.total_clips,
        )  # fmt: skip
        return DataPosition(
            epoch=position.epoch,
            batches_in_epoch=0,
            samples_seen=position.samples_seen,
            served_before=pack_served(served),
            layout=self.layout,
        )

    def served_mask(self, position: DataPosition) -> np.ndarray:
        """bool (total clips,): the clips of `position.epoch` served up to `position`, under any layout."""
        served = unpack_served(position.served_before, self.total_clips)
        if position.layout and position.batches_in_epoch:
            generation = self._generation(position.epoch, position.served_before, position.layout)
            if position.batches_in_epoch > generation.batches:
                raise ValueError(self._outside_message(position, generation))
            served[served_by(generation, position.batches_in_epoch)] = True
        return served

    def loader(self, position: DataPosition) -> DataLoader:
        """The DataLoader of what is left of epoch `position.epoch` (position in this stream's layout, see
        continue_from): exactly this generation's batches - batches_in_epoch batches, identical to what an
        uninterrupted run of this layout yields there."""
        if position.layout not in ((), self.layout):
            raise ValueError(
                f"position of layout {position.layout}, this stream's is {self.layout}: continue_from"
            )
        generation = self._generation(position.epoch, position.served_before, self.layout)
        if not 0 <= position.batches_in_epoch <= generation.batches:
            raise ValueError(self._outside_message(position, generation))
        plan = self._epoch_plan(position.epoch, generation, position.batches_in_epoch)
        workers = self.readers_per_rank if self.config.num_workers > 0 else 0
        return DataLoader(
            _EpochDataset(plan, self.tokenize),
            batch_size=None,  # the workers batch (whole batches cross the process boundary)
            num_workers=workers,
            pin_memory=self.config.pin_memory,
            prefetch_factor=self.config.prefetch_factor if workers else None,
            persistent_workers=False,
        )

    def _outside_message(self, position: DataPosition, generation: Generation) -> str:
        return (
            f"batches_in_epoch={position.batches_in_epoch} is outside [0, {generation.batches}] (batches of "
            f"{self.root} left for layout {generation.layout}); was the checkpoint made on another manifest?"
        )

    def _generation(self, epoch: int, served_before: bytes, layout: tuple[int, ...]) -> Generation:
        key = (epoch, served_before, layout)
        if key not in self._generations:
            self._generations.clear()  # one epoch at a time; the order is N int64s
            world_size, readers, batch, shuffle = layout
            order = epoch_clip_order(self.shards, seed=self.config.seed, epoch=epoch)
            served = unpack_served(served_before, self.total_clips)
            self._generations[key] = plan_generation(
                order, served, (world_size, readers, batch, shuffle), seed=self.config.seed, epoch=epoch
            )
        return self._generations[key]

    def _epoch_plan(self, epoch: int, generation: Generation, start_batch: int) -> _EpochPlan:
        mine = range(self.rank * self.readers_per_rank, (self.rank + 1) * self.readers_per_rank)
        return _EpochPlan(
            config=self.config,
            root=self.root,
            readers=self.readers_per_rank,
            epoch=epoch,
            batches=generation.batches,
            start_batch=start_batch,
            reader_units=tuple(self._units(generation.chunks[reader]) for reader in mine),
            shuffle_entropy=tuple(generation.shuffle_entropy[reader] for reader in mine),
        )

    def _units(self, chunk: np.ndarray) -> tuple[_ReaderUnit, ...]:
        """A chunk (sequence order: shard by shard) as per-shard runs of ordinals."""
        if len(chunk) == 0:  # a reader with no batch this generation
            return ()
        shard_of = np.searchsorted(self.shard_offsets, chunk, side="right") - 1
        starts = np.flatnonzero(np.diff(shard_of, prepend=-1))
        units = []
        for begin, end in zip(starts.tolist(), [*starts[1:].tolist(), len(chunk)], strict=True):
            shard = int(shard_of[begin])
            first = int(self.shard_offsets[shard])
            units.append(
                _ReaderUnit(shard=self.shards[shard], first_index=first, ordinals=chunk[begin:end] - first)
            )
        return tuple(units)


__all__ = [
    "ClipRecord",
    "ClipStream",
    "DataPosition",
    "Generation",
    "ShardEntry",
    "StreamConfig",
    "assemble_batch",
    "epoch_clip_order",
    "manifest_digest",
    "plan_generation",
    "served_by",
    "usable_shards",
]
