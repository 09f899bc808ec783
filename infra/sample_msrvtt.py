"""A tiny MSR-VTT-layout retrieval set where retrieval is learnable: every video shows one colour then
another (real H.264 files made by ffmpeg), and its captions say which ("red then blue", ...).

    root/MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_train.7k.csv, MSRVTT_JSFUSION_test.csv, videos/all/*.mp4

Train and test videos use disjoint colour pairs' captions only through their wording: the same colour words
recur, so a model that learns what the words mean on training pairs retrieves unseen test pairs.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from infra.sample_collection import VideoRecipe, segments_between, write_video

SAMPLE_COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "white", "black")
_TEMPLATES = ("{a} then {b}", "a {a} screen turns {b}", "the screen goes from {a} to {b}")


@dataclass(frozen=True, kw_only=True)
class SampleRetrievalSet:
    root: Path
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    captions: dict[str, tuple[str, ...]]  # video id -> its captions (test: the first is the JSFusion one)


def generate_sample_msrvtt(
    root: Path, *, num_train: int = 24, num_test: int = 12, seconds_per_colour: int = 2, seed: int = 0
) -> SampleRetrievalSet:
    pairs = list(itertools.permutations(SAMPLE_COLOURS, 2))
    random.Random(seed).shuffle(pairs)
    if num_train + num_test > len(pairs):
        raise ValueError(f"at most {len(pairs)} videos (distinct colour pairs)")
    ids = [f"video{i}" for i in range(num_train + num_test)]
    captions = {
        vid: tuple(t.format(a=a, b=b) for t in _TEMPLATES) for vid, (a, b) in zip(ids, pairs, strict=False)
    }
    videos = root / "videos" / "all"
    videos.mkdir(parents=True, exist_ok=True)
    recipes = {
        vid: VideoRecipe(
            segments=segments_between(list(pair), [0, seconds_per_colour, 2 * seconds_per_colour]),
            width=96,
            height=64,
            fps=10,
        )  # fmt: skip
        for vid, pair in zip(ids, pairs, strict=False)
    }
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda vid: write_video(recipes[vid], videos / f"{vid}.mp4"), ids))
    result = SampleRetrievalSet(
        root=root, train_ids=tuple(ids[:num_train]), test_ids=tuple(ids[num_train:]), captions=captions
    )
    write_msrvtt_annotations(result)
    return result


def write_msrvtt_annotations(sample: SampleRetrievalSet) -> None:
    root = sample.root
    sentences = [
        {"video_id": vid, "caption": caption, "sen_id": n}
        for n, (vid, caption) in enumerate((v, c) for v in sample.captions for c in sample.captions[v])
    ]
    videos = [
        {"video_id": vid, "split": "train" if vid in sample.train_ids else "test"} for vid in sample.captions
    ]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    for name, ids in (
        ("MSRVTT_train.9k.csv", sample.train_ids),
        ("MSRVTT_train.7k.csv", sample.train_ids[::2]),
    ):
        _write_csv(root / name, ["video_id"], [[vid] for vid in ids])
    test_rows = [
        [f"ret{n}", f"msr{vid}", vid, sample.captions[vid][0]] for n, vid in enumerate(sample.test_ids)
    ]
    _write_csv(root / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"], test_rows)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
