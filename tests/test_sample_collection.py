"""infra.sample_collection: the generated layout parses with the stdlib and holds what the spec says."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import stat
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from PIL import Image

from infra.sample_collection import (
    COLOURS,
    SampleCollection,
    SampleCollectionSpec,
    generate_sample_collection,
    main,
    segment_at,
)
from pipelines.video import DecodeConfig, decode_frames_at_1fps

YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
CAPTION_FAILURES = ("no_captions", "caption_lengths_mismatch", "no_valid_captions", "no_captions_in_range")


def read_csv_rows(collection: SampleCollection) -> list[dict[str, str]]:
    with collection.metadata_csv.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def read_captions(collection: SampleCollection) -> dict[str, dict]:
    return json.loads(collection.captions_json.read_bytes().decode("utf-8", errors="replace"))


def is_valid_caption(start: float, end: float, text: str) -> bool:
    return math.isfinite(start) and math.isfinite(end) and 0 <= start <= end and bool(text.strip())


def caption_entries(record: dict) -> list[tuple[float, float, str]]:
    return list(zip(record["start"], record["end"], record["text"], strict=False))  # may be unequal


def ids_with_reason(collection: SampleCollection, reason: str) -> list[str]:
    return [video_id for video_id, r in collection.expected_failures.items() if r == reason]


def test_layout_and_csv(sample_collection):
    rows = read_csv_rows(sample_collection)
    assert (
        sample_collection.metadata_csv.read_text().splitlines()[0]
        == "video_id,category_1,category_2,rank,task_id"
    )
    csv_ids = [row["video_id"] for row in rows]
    assert len(csv_ids) == len(set(csv_ids))
    assert set(csv_ids) == set(sample_collection.good_ids) | set(sample_collection.expected_failures)
    assert not set(csv_ids) & set(sample_collection.caption_only_ids)
    assert all(int(row["rank"]) >= 1 and int(row["task_id"]) > 0 for row in rows)
    good_categories = {row["category_1"] for row in rows if row["video_id"] in sample_collection.good_ids}
    assert len(good_categories) >= 3
    relative = [p.relative_to(sample_collection.videos_dir) for p in sample_collection.video_files.values()]
    assert any(len(p.parts) > 1 for p in relative) and any(len(p.parts) == 1 for p in relative)
    assert {p.suffix for p in relative} >= {".mp4", ".webm", ".mkv"}
    assert all(sample_collection.video_files[i].stem == i for i in sample_collection.good_ids)


def test_ids_look_like_youtube_ids_except_the_unsafe_ones(sample_collection):
    unsafe = set(ids_with_reason(sample_collection, "unsafe_id"))
    assert "../escape" in unsafe and any(" " in i or "." in i for i in unsafe - {"../escape"})
    everything = [
        *sample_collection.good_ids,
        *sample_collection.expected_failures,
        *sample_collection.caption_only_ids,
    ]
    assert len(everything) == len(set(everything))
    assert all(YOUTUBE_ID.fullmatch(i) for i in everything if i not in unsafe)
    assert not any(YOUTUBE_ID.fullmatch(i) for i in unsafe)
    assert len(sample_collection.good_ids) == SampleCollectionSpec().num_good_videos
    assert len(sample_collection.caption_only_ids) == 2


def test_caption_file_is_one_line_with_nan_and_invalid_utf8(sample_collection):
    raw = sample_collection.captions_json.read_bytes()
    assert b"\n" not in raw.rstrip(b"\n")
    assert b"NaN" in raw and b"\xff\xfe" in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    captions = read_captions(sample_collection)
    csv_ids = {row["video_id"] for row in read_csv_rows(sample_collection)}
    expected_keys = (csv_ids - set(ids_with_reason(sample_collection, "no_captions"))) | set(
        sample_collection.caption_only_ids
    )
    assert set(captions) == expected_keys


def test_good_captions_are_asr_like_and_name_what_is_on_screen(sample_collection):
    captions = read_captions(sample_collection)
    overlaps = 0
    for video_id in sample_collection.good_ids:
        segments = sample_collection.visual_segments[video_id]
        valid = [c for c in caption_entries(captions[video_id]) if is_valid_caption(*c)]
        assert len(valid) >= 2
        in_video = [c for c in valid if c[0] < sample_collection.durations_s[video_id]]
        starts = [start for start, _, _ in in_video]
        assert starts == sorted(starts) and all(0 < b - a <= 4.0 for a, b in itertools.pairwise(starts))
        overlaps += sum(
            end > next_start for (_, end, _), next_start in zip(in_video, starts[1:], strict=False)
        )
        for start, _, text in in_video:
            assert segment_at(segments, start + 0.05).name in text, (video_id, start, text)
    assert overlaps > len(sample_collection.good_ids)  # like ASR: most captions run into the next one


def test_good_ids_include_the_tolerable_caption_quirks(sample_collection):
    captions = read_captions(sample_collection)
    records = {video_id: caption_entries(captions[video_id]) for video_id in sample_collection.good_ids}
    mixed = [i for i, entries in records.items() if not all(is_valid_caption(*c) for c in entries)]
    assert len(mixed) == 1 and any(is_valid_caption(*c) for c in records[mixed[0]])
    malformed = [c for c in records[mixed[0]] if not is_valid_caption(*c)]
    assert any(math.isnan(start) for start, _, _ in malformed)
    assert any(start < 0 for start, _, _ in malformed) and any(end < start for start, end, _ in malformed)
    replaced = [i for i, entries in records.items() if any("\ufffd" in text for _, _, text in entries)]
    assert len(replaced) == 1
    past_end = [
        i
        for i, entries in records.items()
        if any(end > sample_collection.durations_s[i] + 1 for _, end, _ in entries if math.isfinite(end))
    ]
    assert len(past_end) == 1
    assert any(start < sample_collection.durations_s[past_end[0]] for start, _, _ in records[past_end[0]])


def test_caption_failures_are_what_they_say(sample_collection):
    captions = read_captions(sample_collection)
    (no_captions,) = ids_with_reason(sample_collection, "no_captions")
    assert no_captions not in captions and sample_collection.video_files[no_captions].stat().st_size > 0
    (mismatch,) = ids_with_reason(sample_collection, "caption_lengths_mismatch")
    assert len({len(captions[mismatch][key]) for key in ("start", "end", "text")}) > 1
    (no_valid,) = ids_with_reason(sample_collection, "no_valid_captions")
    entries = caption_entries(captions[no_valid])
    assert entries and not any(is_valid_caption(*c) for c in entries)
    (out_of_range,) = ids_with_reason(sample_collection, "no_captions_in_range")
    duration = sample_collection.durations_s[out_of_range]
    assert all(start >= duration for start in captions[out_of_range]["start"])


def test_caption_failure_videos_decode(sample_collection):
    for reason in CAPTION_FAILURES:
        (video_id,) = ids_with_reason(sample_collection, reason)
        decoded = decode_frames_at_1fps(sample_collection.video_files[video_id], DecodeConfig(timeout_s=60))
        assert abs(decoded.num_frames - sample_collection.durations_s[video_id]) <= 1


def test_broken_files_are_what_they_say(sample_collection):
    files = sample_collection.video_files
    (missing,) = ids_with_reason(sample_collection, "missing_file")
    assert missing not in files and not list(sample_collection.videos_dir.rglob(f"{missing}.*"))
    (empty,) = ids_with_reason(sample_collection, "empty_file")
    assert files[empty].stat().st_size == 0
    (fifo,) = ids_with_reason(sample_collection, "timeout")
    assert stat.S_ISFIFO(files[fifo].stat().st_mode)
    (text,) = ids_with_reason(sample_collection, "not_a_video")
    assert files[text].read_bytes().isascii()
    (audio_only,) = ids_with_reason(sample_collection, "no_video_stream")
    assert {s["codec_type"] for s in ffmpeg.probe(str(files[audio_only]))["streams"]} == {"audio"}
    (truncated,) = ids_with_reason(sample_collection, "truncated")
    declared = float(ffmpeg.probe(str(files[truncated]))["format"]["duration"])
    assert declared == pytest.approx(sample_collection.durations_s[truncated], abs=0.1)
    for unsafe in ids_with_reason(sample_collection, "unsafe_id"):
        assert unsafe not in files


def test_videos_cover_the_codecs_rates_and_shapes_of_the_spec(sample_collection):
    probes = {i: ffmpeg.probe(str(sample_collection.video_files[i])) for i in sample_collection.good_ids}
    videos = {i: next(s for s in p["streams"] if s["codec_type"] == "video") for i, p in probes.items()}
    assert {v["codec_name"] for v in videos.values()} == {"h264", "vp9"}
    assert {round(float(eval_rate(v["r_frame_rate"]))) for v in videos.values()} >= {25, 30, 60}
    assert any(v["height"] > v["width"] for v in videos.values())
    sizes = {(v["width"], v["height"]) for v in videos.values()}
    assert all(min(size) >= 180 and max(size) <= 640 for size in sizes)
    with_audio = [any(s["codec_type"] == "audio" for s in p["streams"]) for p in probes.values()]
    assert any(with_audio) and not all(with_audio)
    assert any(v["codec_name"] == "h264" and v.get("has_b_frames", 0) > 0 for v in videos.values())
    assert any(
        has_variable_frame_intervals(sample_collection.video_files[i]) for i in sample_collection.good_ids
    )
    for video_id in sample_collection.good_ids:
        duration = float(probes[video_id]["format"]["duration"])
        assert duration == pytest.approx(sample_collection.durations_s[video_id], abs=0.1)


def eval_rate(rate: str) -> float:
    numerator, denominator = rate.split("/")
    return int(numerator) / int(denominator)


def has_variable_frame_intervals(path: Path) -> bool:
    packets = ffmpeg.probe(str(path), select_streams="v", show_packets=None)["packets"]
    times = sorted(float(p["pts_time"]) for p in packets)
    intervals = {round(b - a, 3) for a, b in itertools.pairwise(times)}
    return len(intervals) > 1


def test_good_video_frames_show_the_named_segments(sample_collection):
    for video_id in sample_collection.good_ids:
        decoded = decode_frames_at_1fps(sample_collection.video_files[video_id], DecodeConfig(timeout_s=60))
        assert abs(decoded.num_frames - sample_collection.durations_s[video_id]) <= 1
        for timestamp, jpeg in zip(decoded.timestamps_s, decoded.jpegs, strict=True):
            segment = segment_at(sample_collection.visual_segments[video_id], timestamp)
            if segment is None:  # a last frame at t == duration (stream end a few ms later)
                continue
            pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
            if segment.name in COLOURS:
                mean = pixels.reshape(-1, 3).mean(axis=0)
                assert np.abs(mean - COLOURS[segment.name]).max() < 40, (video_id, timestamp, segment.name)
            else:
                assert pixels.reshape(-1, 3).std(axis=0).max() > 20, (video_id, timestamp, segment.name)


def test_same_seed_same_collection_other_seed_other_ids(tmp_path):
    spec = SampleCollectionSpec(num_good_videos=2, min_duration_s=2, max_duration_s=3, include_fifo=False)
    first = generate_sample_collection(tmp_path / "a", spec)
    second = generate_sample_collection(tmp_path / "b", spec)
    other = generate_sample_collection(
        tmp_path / "c", SampleCollectionSpec(num_good_videos=2, include_broken=False, seed=1)
    )
    assert first.metadata_csv.read_bytes() == second.metadata_csv.read_bytes()
    assert first.captions_json.read_bytes() == second.captions_json.read_bytes()
    assert (first.good_ids, first.expected_failures) == (second.good_ids, second.expected_failures)
    assert "timeout" not in first.expected_failures.values()
    assert not set(other.good_ids) & set(first.good_ids)
    assert other.expected_failures == {} and other.caption_only_ids == ()


def test_refuses_a_non_empty_directory_and_bad_specs(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        generate_sample_collection(tmp_path, SampleCollectionSpec(num_good_videos=1))
    for bad in (dict(num_good_videos=-1), dict(min_duration_s=1), dict(min_duration_s=8, max_duration_s=4)):
        with pytest.raises(ValueError):
            SampleCollectionSpec(**bad)


def test_cli_prints_what_it_made(tmp_path, capsys):
    collection = main(["--out", str(tmp_path / "cli"), "--num-good-videos", "1", "--no-include-broken"])
    printed = capsys.readouterr().out
    assert len(collection.good_ids) == 1 and collection.good_ids[0] in printed
    assert collection.metadata_csv.exists() and collection.captions_json.exists()
