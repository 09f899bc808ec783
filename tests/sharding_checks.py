"""Checks of a sharding job's output made with peers only: pyarrow for the manifest, the stock
`webdataset` reader and `tarfile` for the shards. No project code reads the output here."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import webdataset as wds
from PIL import Image


def read_manifest_rows(out_dir: Path) -> list[dict]:
    return pads.dataset(out_dir / "manifest", format="parquet").to_table().to_pylist()


def read_samples(out_dir: Path) -> list[dict]:
    urls = sorted(str(p) for p in (out_dir / "shards").glob("*.tar"))
    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node)
    return list(dataset)


def tar_member_names(out_dir: Path) -> list[str]:
    names = []
    for path in sorted((out_dir / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            names += tar.getnames()
    return names


def expected_reasons(collection) -> dict[str, str]:
    return {**collection.expected_failures, **{vid: "not_in_metadata" for vid in collection.caption_only_ids}}


def assert_complete_output(out_dir: Path, collection, *, short_side: int = 224) -> None:
    """Every planned video once in the manifest, every ok video once in the shards, contract held."""
    rows = read_manifest_rows(out_dir)
    counts = Counter(row["video_id"] for row in rows)
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}
    by_id = {row["video_id"]: row for row in rows}
    assert {vid for vid, row in by_id.items() if row["status"] == "ok"} == set(collection.good_ids)
    failed = {vid: row["reason"] for vid, row in by_id.items() if row["status"] == "failed"}
    assert failed == expected_reasons(collection)

    names = tar_member_names(out_dir)
    assert len(names) == len(set(names)), "duplicate tar members"
    samples = read_samples(out_dir)
    keys = Counter(sample["__key__"] for sample in samples)
    assert set(keys) == set(collection.good_ids) and set(keys.values()) == {1}
    for sample in samples:
        assert_sample_contract(sample, collection.durations_s[sample["__key__"]], short_side)


def assert_sample_contract(sample: dict, intended_duration_s: float, short_side: int) -> None:
    import json

    meta = json.loads(sample["json"])
    frames = sorted(k for k in sample if k.endswith(".jpg"))
    assert len(frames) == meta["num_frames"] == len(meta["frame_timestamps_s"])
    assert abs(len(frames) - intended_duration_s) <= 1, (meta["video_id"], len(frames), intended_duration_s)
    for t in meta["frame_timestamps_s"]:
        assert abs(t - round(t)) <= 0.25, (meta["video_id"], t)
    captions = meta["captions"]
    assert len(captions["start"]) == len(captions["end"]) == len(captions["text"]) > 0
    for start, end in zip(captions["start"], captions["end"], strict=True):
        assert 0 <= start <= end <= meta["duration_s"] + 1e-6
    first = Image.open(io.BytesIO(sample[frames[0]]))
    assert first.format == "JPEG" and min(first.size) == short_side
    assert (meta["width"], meta["height"]) == first.size
