"""The clip stream on tiny real shards (tars + manifest parts as the sharding job writes them).

Frames are solid colours that encode the frame index, so a decoded clip shows which frames it holds.
"""

from __future__ import annotations

import functools
import io
import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipelines.training.stream as stream_module
from infra.sample_collection import COLOURS, SampleCollectionSpec, generate_sample_collection, segment_at
from model.backbone import create_tokenizer
from pipelines.howto100m.subset import SubsetConfig
from pipelines.sharding.manifest import (
    CONSOLIDATED_MANIFEST_KEY,
    STATUS_FAILED,
    STATUS_OK,
    ManifestRow,
    load_manifest,
    manifest_key,
    manifest_part_bytes,
    write_consolidated_manifest,
)
from pipelines.sharding.plan import ShardLayoutConfig, SourceConfig, build_plan
from pipelines.sharding.shard_task import ShardTask, process_shard
from pipelines.sharding.tar_writer import ShardTarWriter
from pipelines.storage import Storage, open_storage
from pipelines.training.clips import ClipConfig, clip_count
from pipelines.training.frames import CLIP_MEAN, CLIP_STD
from pipelines.training.stream import ClipStream, DataPosition, ShardEntry, StreamConfig, epoch_clip_order
from pipelines.video import DecodeConfig

MAX_WORDS = 16
CLIP = ClipConfig(max_frames=4, candidates=3, clips_per_video=3)
COLOUR_STEP = 12  # frame i is solid (COLOUR_STEP * i, 128, 255 - COLOUR_STEP * i): readable back after JPEG


@dataclass(frozen=True)
class Video:
    video_id: str
    num_frames: int
    num_captions: int
    ok: bool = True


@functools.cache
def frame_jpeg(index: int) -> bytes:
    buffer = io.BytesIO()
    level = COLOUR_STEP * index
    Image.new("RGB", (40, 30), (level, 128, 255 - level)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def captions(video: Video) -> dict:
    """Caption j spans [2j, 2j + 1.5] s (clipped to the video), text names the video and the caption."""
    starts = [2.0 * j for j in range(video.num_captions)]
    return {
        "start": starts,
        "end": [min(s + 1.5, float(video.num_frames)) for s in starts],
        "text": [f"{video.video_id} says step {j}" for j in range(video.num_captions)],
    }


def sample_json(video: Video) -> dict:
    return {
        "video_id": video.video_id,
        "source": {},
        "duration_s": float(video.num_frames),
        "num_frames": video.num_frames,
        "frame_timestamps_s": [float(i) for i in range(video.num_frames)],
        "width": 40,
        "height": 30,
        "captions": captions(video),
        "caption_issues": {},
    }


def manifest_row(video: Video, shard_key: str) -> ManifestRow:
    return ManifestRow(
        video_id=video.video_id,
        shard=shard_key,
        key=video.video_id if video.ok else "",
        status=STATUS_OK if video.ok else STATUS_FAILED,
        reason="" if video.ok else "decode_error",
        detail="",
        duration_s=float(video.num_frames) if video.ok else 0.0,
        num_frames=video.num_frames if video.ok else 0,
        num_captions=video.num_captions if video.ok else 0,
        bytes=0,
        decode_seconds=0.0,
        cpu_seconds=0.0,
        attempts=1,
    )


def publish(storage: Storage, scratch: Path, shards: list[list[Video]], *, write_tars: bool = True) -> None:
    """Tars (ok videos only, like process_shard) + one manifest part per shard, through `storage`."""
    scratch.mkdir(parents=True, exist_ok=True)
    for index, videos in enumerate(shards):
        shard_key = f"shards/tiny-{index:06d}.tar"
        if write_tars and any(v.ok for v in videos):
            tar_path = scratch / f"tiny-{index:06d}.tar"
            with ShardTarWriter(tar_path) as writer:
                for video in (v for v in videos if v.ok):
                    writer.add_sample(
                        video.video_id, sample_json(video), [frame_jpeg(i) for i in range(video.num_frames)]
                    )
            storage.upload_file(shard_key, tar_path)
        storage.write_bytes(
            manifest_key(index), manifest_part_bytes([manifest_row(v, shard_key) for v in videos])
        )


# Uneven: 1 to 5 videos per shard, 3 to 20 frames, 0 to 7 captions, a failed video, and an all-failed shard
# whose tar does not exist (it must never be opened).
UNEVEN = [
    [Video("a0", 20, 7), Video("a1", 9, 2), Video("a2", 3, 1), Video("a3", 14, 0)],
    [Video("b0", 16, 5)],
    [
        Video("c0", 12, 4),
        Video("c1", 8, 3),
        Video("c2", 7, 6, ok=False),
        Video("c3", 19, 7),
        Video("c4", 5, 1),
    ],
    [Video("d0", 10, 2), Video("d1", 17, 6)],
    [Video("e0", 4, 2), Video("e1", 13, 3), Video("e2", 20, 5)],
    [Video("ghost0", 10, 3, ok=False), Video("ghost1", 10, 3, ok=False)],
]
ALL_VIDEOS = [v for shard in UNEVEN for v in shard]
TOTAL_CLIPS = sum(clip_count(v.num_frames, v.num_captions, CLIP) for v in ALL_VIDEOS if v.ok)


@pytest.fixture(scope="module")
def tokenize():
    return create_tokenizer("debug", MAX_WORDS)  # open_clip's real tokenizer, context length MAX_WORDS


@pytest.fixture(scope="module")
def uneven_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("uneven")
    publish(open_storage(str(root / "out")), root / "scratch", UNEVEN)
    return str(root / "out")


def config(root: str, **fields) -> StreamConfig:
    defaults = dict(
        shards=root,
        batch_size=4,
        image_size=16,
        max_words=MAX_WORDS,
        shuffle_buffer=8,
        num_workers=0,
        clip=CLIP,
    )
    return StreamConfig(**{**defaults, **fields})


def position(epoch: int = 0, batch: int = 0) -> DataPosition:
    return DataPosition(epoch=epoch, batches_in_epoch=batch, samples_seen=0)


def epoch_batches(clip_stream: ClipStream, epoch: int = 0, batch: int = 0) -> list[dict]:
    return list(clip_stream.loader(position(epoch, batch)))


def assert_same_batches(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a["video_id"] == b["video_id"]
        for key in ("clip_start_s", "video", "video_mask", "text", "text_mask"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def frame_indices_shown(video: torch.Tensor) -> list[int]:
    """Read the frame index back from a normalised solid-colour frame (3, S, S) via its red channel."""
    red = video[:, 0].mean(dim=(-1, -2)) * CLIP_STD[0] + CLIP_MEAN[0]  # (T,) in [0, 1]
    return [round(float(r) * 255 / COLOUR_STEP) for r in red]


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_gets_the_same_number_of_full_batches(uneven_root, tokenize, world_size):
    streams = [
        ClipStream(config(uneven_root), tokenize, rank=r, world_size=world_size) for r in range(world_size)
    ]
    expected = TOTAL_CLIPS // (world_size * 4)
    assert expected >= 2 and all(s.batches_per_epoch == expected for s in streams)
    for clip_stream in streams:
        for epoch in (0, 1):
            batches = epoch_batches(clip_stream, epoch)
            assert len(batches) == expected == len(clip_stream.loader(position(epoch)))
            assert all(len(b["video_id"]) == 4 for b in batches)


def test_ranks_split_clips_not_shards_and_leave_out_only_the_tail(tmp_path, tokenize):
    root = tmp_path / "out"
    # 1 clip vs 3 + 3 + 3 clips: 10 clips, batch 2, world 2 -> 2 batches (4 clips) per rank, 2 clips left out.
    shards = [[Video("tiny", 4, 1)], [Video("big0", 12, 5), Video("big1", 12, 5), Video("big2", 12, 5)]]
    publish(open_storage(str(root)), tmp_path / "scratch", shards)
    streams = [ClipStream(config(str(root), batch_size=2), tokenize, rank=r, world_size=2) for r in (0, 1)]
    served = [int(i) for s in streams for batch in epoch_batches(s) for i in batch["clip_index"]]
    assert all(s.batches_per_epoch == 2 for s in streams)
    assert len(served) == 8 == len(set(served)) and set(served) <= set(range(10))  # nothing twice


def test_the_epoch_sequence_is_every_clip_once_shard_by_shard_reshuffled_per_epoch():
    shards = [
        ShardEntry(key=f"s{i}", video_keys=frozenset(), clips=c)
        for i, c in enumerate([5, 9, 1, 7, 7, 3, 8, 2, 6, 4])
    ]
    offsets = np.concatenate([[0], np.cumsum([s.clips for s in shards])[:-1]])
    orders = [epoch_clip_order(shards, seed=0, epoch=e) for e in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(52))
        shard_of = np.searchsorted(offsets, order, side="right") - 1
        assert len(np.flatnonzero(np.diff(shard_of))) == len(shards) - 1  # each shard's clips together
    assert (orders[0] == epoch_clip_order(shards, seed=0, epoch=0)).all()
    assert (orders[0] != orders[1]).any() or (orders[0] != orders[2]).any()


def test_batch_contents_follow_the_shard_contract(uneven_root, tokenize):
    clip_stream = ClipStream(config(uneven_root, train=False), tokenize, rank=0, world_size=1)
    videos = {v.video_id: v for v in ALL_VIDEOS}
    batches = epoch_batches(clip_stream)
    assert len(batches) == TOTAL_CLIPS // 4
    for batch in batches:
        assert batch["video"].shape == (4, 4, 3, 16, 16) and batch["video"].dtype == torch.float32
        assert batch["video_mask"].dtype == torch.bool and batch["text_mask"].dtype == torch.bool
        assert batch["text"].shape == (4, 3, MAX_WORDS) and batch["text"].dtype == torch.long
        for row, video_id in enumerate(batch["video_id"]):
            video = videos[video_id]
            assert video.ok and video.num_captions > 0  # failed and caption-less videos never appear
            frames = int(batch["video_mask"][row].sum())
            assert frames == min(4, video.num_frames)  # short videos padded and masked
            assert (batch["video"][row, frames:] == 0).all()
            start = int(batch["clip_start_s"][row])
            assert frame_indices_shown(batch["video"][row, :frames]) == list(range(start, start + frames))
            assert int(batch["text_mask"][row].sum()) == min(3, video.num_captions)  # fewer than K: masked
            own_captions = tokenize(captions(video)["text"])
            for tokens in batch["text"][row][batch["text_mask"][row]]:
                assert (own_captions == tokens).all(dim=1).any()  # candidates are the video's own captions
            assert (batch["text"][row][~batch["text_mask"][row]] == 0).all()


def test_one_epoch_covers_the_data_without_repeats_when_it_fits(uneven_root, tokenize):
    # world 1, 1 worker: one slot holds every shard, so the epoch is one pass and no clip repeats.
    clip_stream = ClipStream(config(uneven_root, batch_size=1), tokenize, rank=0, world_size=1)
    clips = [
        (b["video_id"][0], float(b["clip_start_s"][0]), tuple(b["text"][0, 0].tolist()))
        for b in epoch_batches(clip_stream)
    ]
    assert len(clips) == TOTAL_CLIPS and len(set(clips)) == TOTAL_CLIPS
    assert {c[0] for c in clips} == {v.video_id for v in ALL_VIDEOS if v.ok and v.num_captions}


def test_same_seed_same_batches_other_epoch_or_seed_reshuffles(uneven_root, tokenize):
    first = epoch_batches(ClipStream(config(uneven_root), tokenize, rank=1, world_size=2))
    again = epoch_batches(ClipStream(config(uneven_root), tokenize, rank=1, world_size=2))
    assert_same_batches(first, again)
    other_epoch = epoch_batches(ClipStream(config(uneven_root), tokenize, rank=1, world_size=2), epoch=1)
    other_seed = epoch_batches(ClipStream(config(uneven_root, seed=5), tokenize, rank=1, world_size=2))
    order = [b["video_id"] + b["clip_start_s"].tolist() for b in first]
    assert order != [b["video_id"] + b["clip_start_s"].tolist() for b in other_epoch]
    assert order != [b["video_id"] + b["clip_start_s"].tolist() for b in other_seed]


def test_resume_yields_the_rest_of_the_epoch_and_decodes_nothing_it_skips(uneven_root, tokenize, monkeypatch):
    clip_stream = ClipStream(config(uneven_root), tokenize, rank=0, world_size=1)
    full = epoch_batches(clip_stream, epoch=2)
    decoded_clips = []
    real_decode = stream_module.decode_clip_uint8
    monkeypatch.setattr(
        stream_module,
        "decode_clip_uint8",
        lambda jpegs, *a, **k: decoded_clips.append(1) or real_decode(jpegs, *a, **k),
    )
    for resume_at in (1, 3, len(full)):
        decoded_clips.clear()
        rest = epoch_batches(clip_stream, epoch=2, batch=resume_at)
        assert_same_batches(full[:resume_at] + rest, full)
        assert len(decoded_clips) == (len(full) - resume_at) * 4  # only the clips it yields


def test_two_workers_are_deterministic_and_resume_exactly(uneven_root, tokenize):
    clip_stream = ClipStream(config(uneven_root, num_workers=2), tokenize, rank=0, world_size=2)
    assert clip_stream.readers_per_rank == 2
    full = epoch_batches(clip_stream)
    assert len(full) == clip_stream.batches_per_epoch
    assert_same_batches(full, epoch_batches(clip_stream))
    assert_same_batches(full[:3] + epoch_batches(clip_stream, batch=3), full)  # odd start: rotated workers


def test_more_readers_than_shards_still_serve_each_clip_once(uneven_root, tokenize):
    # 5 usable shards for 2 ranks x 4 readers: readers share shards, cut by clip.
    streams = [ClipStream(config(uneven_root, num_workers=4), tokenize, rank=r, world_size=2) for r in (0, 1)]
    served = [int(i) for s in streams for batch in epoch_batches(s) for i in batch["clip_index"]]
    assert len(served) == len(set(served)) == 2 * 4 * streams[0].batches_per_epoch


def test_all_failed_shard_is_never_opened(uneven_root, tokenize):
    # UNEVEN's last shard has only failed videos and no tar at all: opening it would raise ObjectNotFound.
    assert not (Path(uneven_root) / "shards" / "tiny-000005.tar").exists()
    clip_stream = ClipStream(config(uneven_root, batch_size=1), tokenize, rank=0, world_size=1)
    assert "shards/tiny-000005.tar" not in {shard.key for shard in clip_stream.shards}
    assert len(epoch_batches(clip_stream)) == TOTAL_CLIPS


def test_the_manifest_is_read_once_per_rank_and_never_by_loader_workers(tmp_path, tokenize):
    # A consolidated manifest that covers every part is what start-up reads; once the stream exists, its
    # loader workers read only tars: with every manifest file gone they still serve the whole epoch.
    root = tmp_path / "out"
    publish(open_storage(str(root)), tmp_path / "scratch", UNEVEN)
    storage = open_storage(str(root))
    write_consolidated_manifest(storage, load_manifest(storage))
    assert load_manifest(storage).consolidated_current
    expected = epoch_batches(ClipStream(config(str(root), num_workers=2), tokenize, rank=0, world_size=2))
    clip_stream = ClipStream(config(str(root), num_workers=2), tokenize, rank=0, world_size=2)
    storage.delete_prefix("manifest/")
    storage.delete(CONSOLIDATED_MANIFEST_KEY)
    assert_same_batches(epoch_batches(clip_stream), expected)


def test_s3_root_gives_the_same_batches_as_a_local_one(s3_url, uneven_root, tokenize, tmp_path):
    publish(open_storage(s3_url), tmp_path, UNEVEN)
    from_s3 = ClipStream(config(s3_url), tokenize, rank=0, world_size=2)
    local = ClipStream(config(uneven_root), tokenize, rank=0, world_size=2)
    assert from_s3.manifest_digest == local.manifest_digest
    assert_same_batches(epoch_batches(from_s3), epoch_batches(local))


def test_manifest_digest_depends_on_rows_not_on_part_order(tmp_path, tokenize):
    one, two, three = (tmp_path / name for name in ("one", "two", "three"))
    publish(open_storage(str(one)), tmp_path / "s1", UNEVEN[:3])
    publish(open_storage(str(two)), tmp_path / "s2", UNEVEN[:3])
    publish(open_storage(str(three)), tmp_path / "s3", [UNEVEN[0], UNEVEN[1], UNEVEN[3]])
    digests = [
        ClipStream(config(str(r)), tokenize, rank=0, world_size=1).manifest_digest for r in (one, two, three)
    ]
    assert digests[0] == digests[1] != digests[2] and len(digests[0]) == 64


def test_short_videos_are_padded_and_masked(tmp_path, tokenize):
    root = tmp_path / "out"
    publish(open_storage(str(root)), tmp_path / "scratch", [[Video("s0", 5, 2), Video("s1", 2, 1)]])
    clip_config = ClipConfig(max_frames=12, candidates=5)
    clip_stream = ClipStream(
        config(str(root), batch_size=2, clip=clip_config), tokenize, rank=0, world_size=1
    )
    (batch,) = epoch_batches(clip_stream)
    rows = {video_id: row for row, video_id in enumerate(batch["video_id"])}
    assert batch["video_mask"][rows["s0"]].tolist() == [True] * 5 + [False] * 7
    assert batch["video_mask"][rows["s1"]].tolist() == [True] * 2 + [False] * 10
    assert batch["text_mask"][rows["s0"]].tolist() == [True, True, False, False, False]
    assert (batch["video"][rows["s1"], 2:] == 0).all()


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ([], "no manifest rows"),
        ([[Video("x", 10, 3, ok=False)], [Video("y", 10, 3, ok=False)]], "all 2 videos .* failed"),
        ([[Video("x", 10, 0), Video("y", 0, 0)]], "none has both frames and captions"),
    ],
)
def test_nothing_to_train_on_is_a_clear_error(tmp_path, tokenize, shards, message):
    root = tmp_path / "out"
    root.mkdir()
    publish(open_storage(str(root)), tmp_path / "scratch", shards)
    with pytest.raises(ValueError, match=message):
        ClipStream(config(str(root)), tokenize, rank=0, world_size=1)


def test_too_few_clips_for_the_world_is_a_clear_error(uneven_root, tokenize):
    with pytest.raises(ValueError, match="fewer than one step"):
        ClipStream(config(uneven_root, batch_size=1000), tokenize, rank=0, world_size=1)
    with pytest.raises(ValueError, match="rank"):
        ClipStream(config(uneven_root), tokenize, rank=2, world_size=2)


def test_resume_position_outside_the_epoch_is_refused(uneven_root, tokenize):
    clip_stream = ClipStream(config(uneven_root), tokenize, rank=0, world_size=1)
    with pytest.raises(ValueError, match="batches_in_epoch"):
        clip_stream.loader(position(0, clip_stream.batches_per_epoch + 1))


def test_tokenizer_of_the_wrong_length_is_refused(uneven_root):
    clip_stream = ClipStream(config(uneven_root), create_tokenizer("debug", 77), rank=0, world_size=1)
    with pytest.raises(ValueError, match="max_words"):
        next(iter(clip_stream.loader(position())))


def test_tars_that_disagree_with_the_manifest_fail_instead_of_looping(tmp_path, tokenize):
    root = tmp_path / "out"
    storage = open_storage(str(root))
    publish(storage, tmp_path / "scratch", [[Video("m0", 10, 3)]])
    publish(storage, tmp_path / "other", [[Video("other", 10, 3)]], write_tars=False)  # manifest only
    storage.write_bytes(
        manifest_key(0),
        manifest_part_bytes([manifest_row(Video("renamed", 10, 3), "shards/tiny-000000.tar")]),
    )
    clip_stream = ClipStream(config(str(root), batch_size=2), tokenize, rank=0, world_size=1)
    with pytest.raises(ValueError, match="yielded 0 clips although the manifest promises"):
        list(clip_stream.loader(position()))


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        StreamConfig(shards="x", batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        StreamConfig(shards="x", num_workers=-1)
    assert replace(StreamConfig(shards="x"), train=False).frames.random_crop is False


def test_end_to_end_from_real_videos_through_the_sharding_pipeline(tmp_path, tokenize):
    collection = generate_sample_collection(
        tmp_path / "collection", SampleCollectionSpec(num_good_videos=6, include_fifo=False)
    )
    source = SourceConfig(
        videos=str(collection.videos_dir),
        metadata=str(collection.metadata_csv),
        captions=str(collection.captions_json),
    )
    decode = DecodeConfig(timeout_s=30)
    plan = build_plan(source, SubsetConfig(), decode, ShardLayoutConfig(videos_per_shard=4, shard_name="e2e"))
    storage = open_storage(str(tmp_path / "out"))
    for shard in range(plan.num_shards):  # what the Ray job does, one task per shard, without Ray
        task = ShardTask(
            shard=shard,
            shard_key=plan.shard_key(shard),
            videos=tuple(plan.shard_videos(shard)),
            videos_dir=source.videos,
            captions_path=source.captions,
            decode=decode,
        )
        process_shard(task, storage)
    clip_config = ClipConfig(max_frames=3, candidates=2, clips_per_video=2)
    clip_stream = ClipStream(
        config(str(tmp_path / "out"), batch_size=2, image_size=32, train=False, clip=clip_config),
        tokenize,
        rank=0,
        world_size=1,
    )
    batches = epoch_batches(clip_stream)
    assert len(batches) == clip_stream.batches_per_epoch > 0
    checked = 0
    for batch in batches:
        for row, video_id in enumerate(batch["video_id"]):
            assert video_id in collection.good_ids  # failed videos never reach training
            for t in range(int(batch["video_mask"][row].sum())):
                time_s = float(batch["clip_start_s"][row]) + t  # 1 fps frames
                segment = segment_at(collection.visual_segments[video_id], time_s)
                if segment is not None and segment.name in COLOURS:
                    frame = (
                        batch["video"][row, t] * torch.tensor(CLIP_STD)[:, None, None]
                        + torch.tensor(CLIP_MEAN)[:, None, None]
                    )
                    shown = (frame.mean(dim=(1, 2)) * 255).numpy()
                    assert np.abs(shown - np.array(COLOURS[segment.name])).max() < 40, (
                        video_id,
                        time_s,
                        segment,
                    )
                    checked += 1
    assert checked > 0


# --------------------------------------------------------------------------------------------------
# Resuming on another layout: world size, loader workers, per-rank batch size

GLOBAL_BATCH = 6  # divisible by 1, 2 and 3 ranks


def served_clips(batches: list[dict]) -> list[tuple]:
    """Clip ids (video id, start, anchor caption tokens, global index) of every row of `batches`."""
    return [
        (
            video_id,
            float(batch["clip_start_s"][row]),
            tuple(batch["text"][row, 0].tolist()),
            int(batch["clip_index"][row]),
        )
        for batch in batches
        for row, video_id in enumerate(batch["video_id"])
    ]


def serve(
    root: str,
    tokenize,
    position: DataPosition,
    world_size: int,
    workers: int,
    take: int | None,
    shuffle: int = 8,
):
    """Every rank of a layout from `position` on, each stopping after `take` batches (None: the rest)."""
    streams = [
        ClipStream(
            config(root, batch_size=GLOBAL_BATCH // world_size, num_workers=workers, shuffle_buffer=shuffle),
            tokenize, rank=r, world_size=world_size,
        )
        for r in range(world_size)
    ]  # fmt: skip
    starts = [s.continue_from(position) for s in streams]
    assert all(start == starts[0] for start in starts)  # every rank agrees without communicating
    served, counts = [], set()
    for clip_stream, start in zip(streams, starts, strict=True):
        batches = list(itertools.islice(clip_stream.loader(start), take))
        assert all(len(b["video_id"]) == GLOBAL_BATCH // world_size for b in batches)
        served += served_clips(batches)
        counts.add(len(batches))
    assert len(counts) == 1  # equal batches per rank
    return served, replace(starts[0], batches_in_epoch=starts[0].batches_in_epoch + counts.pop())


@pytest.mark.parametrize("trial", range(6))
def test_resume_on_other_world_sizes_serves_every_clip_of_the_epoch_exactly_once(
    uneven_root, tokenize, trial
):
    rng = np.random.default_rng(trial)
    epoch = int(rng.integers(3))
    fresh = DataPosition(epoch=epoch, batches_in_epoch=0, samples_seen=0)
    uninterrupted, _ = serve(uneven_root, tokenize, fresh, world_size=1, workers=0, take=None)
    served, position = [], fresh
    for world_size, last in ((2, False), (1, False), (3, True)):
        workers = int(rng.choice([0, 2])) if trial % 2 else 0  # odd trials: 1 or 2 loader readers per rank
        shuffle = int(rng.choice([1, 5, 8]))  # the shuffle buffer may change too
        left = ClipStream(config(uneven_root, batch_size=GLOBAL_BATCH // world_size, num_workers=workers,
                                 shuffle_buffer=shuffle), tokenize, rank=0, world_size=world_size)  # fmt: skip
        batches_left = left._generation(
            epoch, left.continue_from(position).served_before, left.layout
        ).batches
        take = None if last else int(rng.integers(0, batches_left))  # "killed" after `take` batches
        more, position = serve(uneven_root, tokenize, position, world_size, workers, take, shuffle)
        served += more
    assert sorted(served) == sorted(uninterrupted)  # nothing twice, nothing lost
    assert len(uninterrupted) == TOTAL_CLIPS // GLOBAL_BATCH * GLOBAL_BATCH


def test_served_set_replays_what_the_readers_served(uneven_root, tokenize):
    clip_stream = ClipStream(config(uneven_root, batch_size=2, num_workers=2), tokenize, rank=1, world_size=2)
    other_rank = ClipStream(config(uneven_root, batch_size=2, num_workers=2), tokenize, rank=0, world_size=2)
    start = clip_stream.continue_from(DataPosition(epoch=1, batches_in_epoch=0, samples_seen=0))
    taken = [
        int(i)
        for s in (clip_stream, other_rank)
        for b in itertools.islice(s.loader(start), 5)
        for i in b["clip_index"]
    ]
    mask = clip_stream.served_mask(replace(start, batches_in_epoch=5))
    assert sorted(np.flatnonzero(mask).tolist()) == sorted(taken)
