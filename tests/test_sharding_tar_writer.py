"""Tars written for the stock WebDataset reader: grouping, frame members, reproducible bytes."""

from __future__ import annotations

import io
import json

import webdataset as wds
from PIL import Image

from pipelines.sharding.tar_writer import ShardTarWriter


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def write(path, samples) -> None:
    with ShardTarWriter(path) as writer:
        for key, frames in samples:
            writer.add_sample(key, {"video_id": key, "num_frames": len(frames)}, frames)


def test_stock_reader_groups_frames_per_video(tmp_path):
    samples = [("vid_A-1", [jpeg((255, 0, 0)), jpeg((0, 255, 0))]), ("vid_B-2", [jpeg((0, 0, 255))])]
    write(tmp_path / "s.tar", samples)
    read = list(
        wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False, nodesplitter=wds.split_by_node).decode(
            "rgb8"
        )
    )
    assert [s["__key__"] for s in read] == ["vid_A-1", "vid_B-2"]
    first = read[0]
    assert sorted(k for k in first if k.endswith(".jpg")) == ["000000.jpg", "000001.jpg"]
    assert first["000000.jpg"][12, 16, 0] > 200 and first["000001.jpg"][12, 16, 1] > 200  # frame order kept
    assert json.loads(json.dumps(first["json"]))["num_frames"] == 2


def test_same_input_gives_identical_bytes(tmp_path):
    samples = [("k1", [jpeg((10, 20, 30))])]
    write(tmp_path / "a.tar", samples)
    write(tmp_path / "b.tar", samples)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_added_bytes_are_payload_sizes(tmp_path):
    frames = [jpeg((1, 2, 3)), jpeg((4, 5, 6))]
    with ShardTarWriter(tmp_path / "c.tar") as writer:
        added = writer.add_sample("k", {"a": 1}, frames)
    assert added == len(json.dumps({"a": 1}).encode()) + sum(len(f) for f in frames)
