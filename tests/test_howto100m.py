"""The HowTo100M source layout: metadata CSV, caption.json index, caption cleaning, video files, subsets.

Fixtures are tiny files written on the spot; caption.json is checked against `json.loads` of
the whole (small) file, which is what the streaming index must agree with.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tracemalloc

import pytest

from pipelines.howto100m import (
    DROPPED_KINDS,
    HOWTO100M_380K_CATEGORIES,
    REPAIRED_KINDS,
    CaptionError,
    CaptionFileFormatError,
    CaptionIndex,
    CaptionSegments,
    StaleCaptionIndexError,
    SubsetConfig,
    VideoMetadata,
    build_caption_index,
    clean_captions,
    clip_captions,
    index_video_files,
    index_video_paths,
    is_safe_video_id,
    load_or_build_caption_index,
    read_metadata_csv,
    read_metadata_stream,
    select_subset,
)

INVALID_UTF8 = b"\xff\xfe\xc3"  # never valid UTF-8; the last byte is a truncated 2-byte sequence
INVALID_MARKER = "@@INVALID@@"  # replaced by INVALID_UTF8 after JSON encoding


# ----------------------------------------------------------------------------- fixtures


def write_caption_json(path, records: dict, *, indent: int | None = None) -> bytes:
    """caption.json as distributed (one line; NaN tokens allowed); INVALID_MARKER -> bad bytes."""
    text = json.dumps(records, ensure_ascii=False, indent=indent)  # NaN floats become NaN tokens
    data = text.encode("utf-8").replace(INVALID_MARKER.encode(), INVALID_UTF8)
    path.write_bytes(data)
    return data


def oracle(data: bytes) -> dict:
    """What the whole file means: json.loads after the same errors='replace' decoding."""
    return json.loads(data.decode("utf-8", "replace"))


def canonical(value) -> str:
    """A comparable form: NaN != NaN, but both dump to the token NaN."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def tricky_records() -> dict:
    return {
        "quotes01234": {"start": [0.0, 1.5], "end": [2.0, 3.0], "text": ['say "hi"', 'a "}" and a "{"']},
        "backslash01": {"start": [1.0], "end": [2.0], "text": ["ends with a backslash \\", "\\\\\\"]},
        "brackets_01": {"start": [1.0, 2.0], "end": [3.0, 4.0], "text": ["[[[", "}}}]]"]},
        "unicode0001": {"start": [0.5], "end": [1.5], "text": ["crème brûlée 日本 😀"]},
        "nan00000001": {"start": [float("nan"), 1.0], "end": [2.0, float("inf")], "text": ["x", "y"]},
        "invalidutf8": {"start": [3.0], "end": [4.0], "text": [f"bad {INVALID_MARKER} bytes"]},
        "empty000001": {"start": [], "end": [], "text": []},
        'weird key "/.. é': {"start": [1.0], "end": [2.0], "text": ["an unsafe id is still indexed"]},
        "control_chr": {"start": [1.0], "end": [2.0], "text": ["tab\tnew\nline\u0001"]},
    }


def many_records(count: int, *, seed: int = 0, segments: int = 20) -> dict:
    rng = random.Random(seed)
    words = ["cut", "the", "onion", 'say "hi"', "back\\slash", "{x}", "[y]", "ünï", "日本"]
    records = {}
    for number in range(count):
        start = sorted(round(rng.uniform(0, 600), 2) for _ in range(segments))
        records[f"v{number:010d}"] = {
            "start": start,
            "end": [value + 4.0 for value in start],
            "text": [" ".join(rng.choices(words, k=8)) for _ in start],
        }
    return records


def write_csv(path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def metadata_rows() -> dict:
    """A small collection: 3 categories, one caption-only and one csv-only id, one unsafe id."""

    def row(video_id, category_1, category_2="Recipes"):
        return VideoMetadata(
            video_id=video_id, category_1=category_1, category_2=category_2, rank=1, task_id=7
        )

    rows = [row(f"food{n:07d}", "Food and Entertaining", "Recipes" if n % 2 else "Drinks") for n in range(40)]
    rows += [row(f"cars{n:07d}", "Cars & Other Vehicles", "Car Maintenance") for n in range(30)]
    rows += [row(f"pets{n:07d}", "Pets and Animals", "Dogs") for n in range(20)]
    rows.append(row("bad.id/..", "Food and Entertaining"))
    return {entry.video_id: entry for entry in rows}


# ----------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("video_id", "safe"),
    [
        ("dQw4w9WgXcQ", True),
        ("a-b_C9", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a.b", False),
        ("../x", False),
        ("..", False),
        ("a/b", False),
        ("a b", False),
        ("é", False),
        ("a\n", False),
    ],
)
def test_is_safe_video_id(video_id, safe):
    assert is_safe_video_id(video_id) is safe


# ----------------------------------------------------------------------------- caption index


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 16 << 20])
def test_index_matches_json_loads_of_the_whole_file(tmp_path, chunk_bytes):
    records = tricky_records() | many_records(30)
    data = write_caption_json(tmp_path / "caption.json", records)
    expected = oracle(data)

    index = build_caption_index(tmp_path / "caption.json", chunk_bytes=chunk_bytes)

    assert sorted(index.ids()) == sorted(expected) and len(index) == len(expected)
    for video_id, record in expected.items():
        assert video_id in index
        assert canonical(index.read_raw(video_id)) == canonical(record)
        offset, length = index.extent(video_id)
        assert data[offset : offset + 1] == b"{" and data[offset + length - 1 : offset + length] == b"}"
    assert "missing0001" not in index and 42 not in index


def test_index_reads_pretty_printed_files_and_non_object_values(tmp_path):
    records = tricky_records() | {
        "list_value": [1, {"x": "]"}],
        "number_val": 5,
        "string_val": "}{",
        "null_value": None,
    }
    data = write_caption_json(tmp_path / "caption.json", records, indent=2)
    expected = oracle(data)

    index = build_caption_index(tmp_path / "caption.json", chunk_bytes=5)

    assert sorted(index.ids()) == sorted(expected)
    for video_id, value in expected.items():
        offset, length = index.extent(video_id)
        assert canonical(json.loads(data[offset : offset + length].decode("utf-8", "replace"))) == canonical(
            value
        )
    with pytest.raises(CaptionError) as error:
        index.read_raw("list_value")  # a record must be an object
    assert error.value.reason == "malformed_captions"


def test_escaped_keys_and_repeated_keys_follow_json_loads(tmp_path):
    data = b'{"a\\u0062c": {"text": [1]}, "dup": {"text": ["first"]}, "dup": {"text": ["second"]}}'
    (tmp_path / "caption.json").write_bytes(data)

    index = build_caption_index(tmp_path / "caption.json", chunk_bytes=3)

    assert index.ids() == sorted(oracle(data)) == ["abc", "dup"]
    assert index.read_raw("dup") == oracle(data)["dup"] == {"text": ["second"]}


def test_keys_that_can_never_be_video_ids_are_left_out(tmp_path, caplog):
    long_key, nul_key = "x" * 129, "nul\x00"
    records = {"ok000000001": {"text": ["a"]}, long_key: {"text": ["b"]}, nul_key: {"text": ["c"]}}
    write_caption_json(tmp_path / "caption.json", records)

    with caplog.at_level(logging.WARNING):
        index = build_caption_index(tmp_path / "caption.json")

    assert index.ids() == ["ok000000001"] and "2 records" in caplog.text
    assert long_key not in index and nul_key not in index


def test_lone_surrogate_keys_survive_save_and_load(tmp_path):
    data = b'{"ok": {"text": ["a"]}, "\\ud800x": {"text": ["b"]}}'
    (tmp_path / "caption.json").write_bytes(data)
    index = build_caption_index(tmp_path / "caption.json")
    index.save(tmp_path / "index.parquet")

    loaded = CaptionIndex.load(tmp_path / "index.parquet")

    assert sorted(loaded.ids()) == sorted(oracle(data))
    assert loaded.read_raw("\ud800x") == {"text": ["b"]}


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": {"start": [1, 2], "end": [',
        b'{"a": {"text": ["never ends',
        b'{"a": {}',
        b'[{"a": 1}]',
        b'{"a" {"b": 1}}',
        b'{"a": {"b": 1}} trailing',
        b"",
        b'{"a": }',
    ],
)
def test_malformed_caption_file_raises_with_the_byte_offset(tmp_path, data):
    (tmp_path / "caption.json").write_bytes(data)
    with pytest.raises(CaptionFileFormatError, match="at byte"):
        build_caption_index(tmp_path / "caption.json", chunk_bytes=4)


def test_empty_object_and_byte_order_mark(tmp_path):
    (tmp_path / "caption.json").write_bytes(b"\xef\xbb\xbf { } \n")
    assert len(build_caption_index(tmp_path / "caption.json", chunk_bytes=1)) == 0


def test_index_memory_stays_bounded_by_the_chunk_not_the_file(tmp_path):
    path = tmp_path / "caption.json"
    write_caption_json(path, many_records(7000, segments=60))  # ~30 MB
    file_bytes = os.path.getsize(path)
    assert file_bytes > 25e6
    chunk_bytes = 256 << 10

    tracemalloc.start()
    try:
        index = build_caption_index(path, chunk_bytes=chunk_bytes)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(index) == 7000
    # chunk + index lists (~100 B/record) + slack; the whole file would be 10x more
    assert peak_bytes < 2 * chunk_bytes + 3e6, (
        f"peak {peak_bytes / 1e6:.1f} MB for a {file_bytes / 1e6:.0f} MB file"
    )


def test_saved_index_round_trips_and_detects_a_changed_caption_file(tmp_path):
    captions = tmp_path / "caption.json"
    data = write_caption_json(captions, many_records(20))
    index = build_caption_index(captions, chunk_bytes=100)
    index.save(tmp_path / "index.parquet")

    loaded = CaptionIndex.load(tmp_path / "index.parquet")
    assert loaded.ids() == index.ids()
    assert all(loaded.extent(video_id) == index.extent(video_id) for video_id in index.ids())
    assert not loaded.is_stale()

    captions.write_bytes(data.replace(b'"v0000000003"', b'"v0000000003", "zz": {}'))  # size changes
    with pytest.raises(StaleCaptionIndexError):
        CaptionIndex.load(tmp_path / "index.parquet")
    with pytest.raises(StaleCaptionIndexError):
        loaded.read_raw("v0000000001")


def test_same_size_rewrite_is_detected_by_mtime(tmp_path):
    captions = tmp_path / "caption.json"
    data = write_caption_json(captions, many_records(5))
    index = build_caption_index(captions)
    stat = os.stat(captions)
    captions.write_bytes(data.replace(b"v0000000001", b"v0000000009"))  # same size
    os.utime(captions, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    assert index.is_stale()
    with pytest.raises(StaleCaptionIndexError):
        index.read_raw("v0000000002")


def test_load_or_build_rebuilds_a_stale_index(tmp_path):
    captions, index_path = tmp_path / "caption.json", tmp_path / "index.parquet"
    write_caption_json(captions, many_records(3))
    assert len(load_or_build_caption_index(captions, index_path)) == 3
    write_caption_json(captions, many_records(7))

    rebuilt = load_or_build_caption_index(captions, index_path)

    assert len(rebuilt) == 7
    assert CaptionIndex.load(index_path).ids() == rebuilt.ids()


def test_iter_raw_and_restricted_index_read_only_the_asked_records(tmp_path):
    records = many_records(10) | {"broken0000": [1, 2]}
    data = write_caption_json(tmp_path / "caption.json", records)
    index = build_caption_index(tmp_path / "caption.json")
    wanted = ["v0000000007", "broken0000", "v0000000002"]

    small = index.restricted_to([*wanted, "not_there"])
    got = dict(small.iter_raw(wanted))

    assert sorted(small.ids()) == sorted(wanted)
    assert canonical(got["v0000000007"]) == canonical(oracle(data)["v0000000007"])
    assert isinstance(got["broken0000"], CaptionError) and got["broken0000"].reason == "malformed_captions"
    with pytest.raises(KeyError):
        small.read_raw("v0000000001")


# ----------------------------------------------------------------------------- clean / clip captions


def test_clean_captions_drops_each_bad_kind_and_sorts_by_start():
    raw = {
        "start": [5.0, -1.0, float("nan"), "3", 2.0, 1.0, 7.0, 9.0, True, 4.0, 1e400],
        "end": [6.0, 1.0, 2.0, 4.0, 1.0, 1.5, 8.0, 10.0, 2.0, 4.0, 2.0],
        "text": [
            "  five \n  six ",
            "neg",
            "nan",
            "string time",
            "backwards",
            "one",
            "   ",
            None,
            "bool",
            "zero-length",
            "inf",
        ],
    }
    segments, counts = clean_captions(raw)

    assert counts == {
        "negative_time": 1,
        "nan_time": 4,
        "end_before_start": 1,
        "empty_text": 2,
        "invalid_utf8": 0,
    }
    assert set(counts) == set(DROPPED_KINDS + REPAIRED_KINDS)
    assert segments == CaptionSegments(
        start=(1.0, 4.0, 5.0), end=(1.5, 4.0, 6.0), text=("one", "zero-length", "five six")
    )
    assert list(segments.start) == sorted(segments.start)
    assert len(segments) + sum(counts[kind] for kind in DROPPED_KINDS) == len(raw["start"])


def test_clean_captions_repairs_invalid_utf8_and_lone_surrogates(tmp_path):
    data = b'{"v": {"start": [0, 1, 2], "end": [1, 2, 3], "text": ["ok", "bad \xff\xfe here", "lone \\ud800 half"]}}'
    (tmp_path / "caption.json").write_bytes(data)
    raw = build_caption_index(tmp_path / "caption.json").read_raw("v")

    segments, counts = clean_captions(raw)

    assert counts["invalid_utf8"] == 2 and len(segments) == 3
    assert segments.text[0] == "ok"
    assert "\ufffd" in segments.text[1] and segments.text[1].startswith("bad ")
    assert segments.text[2] == "lone \ufffd half"
    assert all(text.encode("utf-8") for text in segments.text)  # all encodable: no surrogates left


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"start": [1.0, 2.0], "end": [2.0], "text": ["a", "b"]}, "caption_lengths_mismatch"),
        ({"start": [1.0], "end": [2.0]}, "malformed_captions"),
        ({"start": 1.0, "end": [2.0], "text": ["a"]}, "malformed_captions"),
        ([1, 2, 3], "malformed_captions"),
        (None, "malformed_captions"),
        ({"start": [], "end": [], "text": []}, "no_valid_captions"),
        ({"start": [-1.0, float("nan")], "end": [1.0, 2.0], "text": ["a", "b"]}, "no_valid_captions"),
    ],
)
def test_clean_captions_errors_have_stable_reasons(raw, reason):
    with pytest.raises(CaptionError) as error:
        clean_captions(raw)
    assert error.value.reason == reason and error.value.detail


def test_no_valid_captions_detail_lists_the_counts():
    with pytest.raises(CaptionError) as error:
        clean_captions({"start": [-1.0, float("nan"), 1.0], "end": [1.0, 2.0, 2.0], "text": ["a", "b", " "]})
    assert "negative_time=1" in error.value.detail and "nan_time=1" in error.value.detail
    assert "empty_text=1" in error.value.detail


def test_caption_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(CaptionError("no_valid_captions", "0 of 3")))
    assert (error.reason, error.detail) == ("no_valid_captions", "0 of 3")


def test_clip_captions_keeps_segments_starting_before_the_duration():
    segments = CaptionSegments(
        start=(0.0, 4.0, 10.0, 11.9, 12.0, 15.0),
        end=(5.0, 12.5, 20.0, 11.95, 13.0, 16.0),
        text=tuple("abcdef"),
    )
    duration_s = 12.0

    clipped = clip_captions(segments, duration_s)

    expected = [
        (s, min(e, duration_s), t)
        for s, e, t in zip(segments.start, segments.end, segments.text, strict=True)
        if s < duration_s
    ]
    assert list(zip(clipped.start, clipped.end, clipped.text, strict=True)) == expected
    assert clipped.text == ("a", "b", "c", "d") and clipped.end == (5.0, 12.0, 12.0, 11.95)
    assert all(s <= e <= duration_s for s, e in zip(clipped.start, clipped.end, strict=True))


def test_clip_captions_errors():
    segments = CaptionSegments(start=(3.0,), end=(4.0,), text=("a",))
    with pytest.raises(CaptionError) as error:
        clip_captions(segments, 3.0)  # a segment starting exactly at the end is out of range
    assert error.value.reason == "no_captions_in_range"
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError):
            clip_captions(segments, bad)


# ----------------------------------------------------------------------------- metadata CSV


def test_read_metadata_csv_tolerates_odd_rows(tmp_path, caplog):
    path = tmp_path / "HowTo100M_v1.csv"
    write_csv(
        path,
        [
            "\ufeffvideo_id,category_1,category_2,rank,task_id",
            "aaaaaaaaaaa,Food and Entertaining,Recipes,3,105",
            "",
            "bbbbbbbbbbb,Cars & Other Vehicles,Car Maintenance,,",
            "ccccccccccc,Pets and Animals,Dogs,2.0,nan",
            '"ddddddddddd","Hobbies and Crafts","Knitting, Crochet",1,7',
            "too,few",
            "too,many,fields,1,2,3",
            ",Food and Entertaining,Recipes,1,1",
            "aaaaaaaaaaa,Duplicate,Row,9,9",
            "bad.id/..,Food and Entertaining,Recipes,1,1",
        ],
    )
    with caplog.at_level(logging.WARNING):
        metadata = read_metadata_csv(path)

    assert sorted(metadata) == ["aaaaaaaaaaa", "bad.id/..", "bbbbbbbbbbb", "ccccccccccc", "ddddddddddd"]
    first = metadata["aaaaaaaaaaa"]
    assert (first.category_1, first.category_2, first.rank, first.task_id) == (
        "Food and Entertaining",
        "Recipes",
        3,
        105,
    )
    assert (metadata["bbbbbbbbbbb"].rank, metadata["bbbbbbbbbbb"].task_id) == (None, None)
    assert (metadata["ccccccccccc"].rank, metadata["ccccccccccc"].task_id) == (2, None)
    assert metadata["ddddddddddd"].category_2 == "Knitting, Crochet"
    assert "skipped 2 rows (field count" in caplog.text and "skipped 1 rows (blank row)" in caplog.text
    assert "skipped 1 rows (duplicate" in caplog.text and "skipped 1 rows (empty video_id)" in caplog.text


def test_read_metadata_csv_needs_a_video_id_column(tmp_path):
    path = tmp_path / "other.csv"
    write_csv(path, ["id,category_1", "a,b"])
    with pytest.raises(ValueError, match="video_id"):
        read_metadata_csv(path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="video_id"):
        read_metadata_csv(tmp_path / "empty.csv")


def test_read_metadata_csv_with_reordered_and_missing_columns(tmp_path):
    path = tmp_path / "m.csv"
    write_csv(path, ["category_1,video_id", "Food and Entertaining,aaaaaaaaaaa"])
    entry = read_metadata_csv(path)["aaaaaaaaaaa"]
    assert (entry.category_1, entry.category_2, entry.rank, entry.task_id) == (
        "Food and Entertaining",
        "",
        None,
        None,
    )


# ----------------------------------------------------------------------------- video files


def test_index_video_files_walks_subfolders_and_picks_deterministically(tmp_path, caplog):
    videos = tmp_path / "videos"
    for relative in [
        "a/aaaaaaaaaaa.webm",
        "aaaaaaaaaaa.mkv",
        "b/c/aaaaaaaaaaa.mp4",
        "x/bbbbbbbbbbb.mp4",
        "bbbbbbbbbbb.mp4",
        "ccccccccccc.MKV",
        "ddddddddddd.mp4.part",
        "notes.txt",
        "eeeeeeeeeee.webm",
    ]:
        (videos / relative).parent.mkdir(parents=True, exist_ok=True)
        (videos / relative).write_bytes(b"")  # zero-byte files count: the decoder classifies them
    os.mkfifo(videos / "fifo0000001.mp4")
    (videos / "folder00001.mp4").mkdir()  # a folder is not a video

    with caplog.at_level(logging.WARNING):
        files = index_video_files(videos)

    assert dict(files) == {
        "aaaaaaaaaaa": "b/c/aaaaaaaaaaa.mp4",  # mp4 > webm > mkv beats the shorter path
        "bbbbbbbbbbb": "bbbbbbbbbbb.mp4",  # same extension: the shortest path
        "ccccccccccc": "ccccccccccc.MKV",
        "eeeeeeeeeee": "eeeeeeeeeee.webm",
        "fifo0000001": "fifo0000001.mp4",
    }
    assert files.duplicate_ids == ("aaaaaaaaaaa", "bbbbbbbbbbb") and "several files" in caplog.text
    assert files["aaaaaaaaaaa"] == "b/c/aaaaaaaaaaa.mp4" and len(files) == 5 and "zzz" not in files


def test_unsafe_ids_never_get_a_path(tmp_path):
    videos = tmp_path / "videos"
    (videos / "..hidden").mkdir(parents=True)
    (videos / "...").mkdir()
    names = [
        "..mp4",
        "...mp4",
        ".mp4",
        "a.b.mp4",
        "x y.mp4",
        "é1.webm",
        "..hidden/..mp4",
        ".../.mkv",
        "ok_id-1.mp4",
    ]
    for name in names:
        (videos / name).write_bytes(b"\x00")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"")

    files = index_video_files(videos)

    assert dict(files) == {"ok_id-1": "ok_id-1.mp4"}
    assert set(files.unsafe_ids) == {".", "..", "", "a.b", "x y", "é1"}
    for relative in files.values():
        resolved = (videos / relative).resolve()
        assert resolved.is_relative_to(videos.resolve()) and resolved.exists()


def test_listed_keys_index_like_a_walked_folder(tmp_path):
    """The keys under an s3:// prefix go through the same pick as a walked folder."""
    keys = ["a/aaaaaaaaaaa.webm", "b/c/aaaaaaaaaaa.mp4", "x/bbbbbbbbbbb.mp4", "bbbbbbbbbbb.mp4",
            "ccccccccccc.MKV", "ddddddddddd.mp4.part", "notes.txt", "x y.mp4", "..mp4"]  # fmt: skip
    for key in keys:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"")
    listed = index_video_paths(keys, where="s3://bucket/videos")
    assert dict(listed) == dict(index_video_files(tmp_path))
    assert listed.duplicate_ids == ("aaaaaaaaaaa", "bbbbbbbbbbb")
    assert set(listed.unsafe_ids) == {"x y", "."}


def test_read_metadata_stream_reads_a_byte_stream_once_in_order(tmp_path):
    class ForwardOnly(io.RawIOBase):  # like an S3 object body: read() only, no seek
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    data = "\ufeffvideo_id,category_1,category_2,rank,task_id\nv1,Food,Baking,3,7\n".encode()
    (tmp_path / "m.csv").write_bytes(data)
    from_stream = read_metadata_stream(io.BufferedReader(ForwardOnly(data)), name="s3://b/m.csv")
    assert from_stream == read_metadata_csv(tmp_path / "m.csv")
    assert from_stream["v1"].rank == 3 and from_stream["v1"].category_2 == "Baking"


def test_index_video_files_needs_a_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        index_video_files(tmp_path / "missing")


# ----------------------------------------------------------------------------- subsets


def test_subset_all_includes_caption_only_ids_and_counts_sources():
    metadata = metadata_rows()
    caption_ids = [video_id for video_id in metadata if not video_id.startswith("pets")] + ["captiononly"]

    selection = select_subset(metadata, caption_ids, SubsetConfig())

    assert selection.video_ids == tuple(sorted(set(metadata) | set(caption_ids)))
    assert selection.not_in_metadata == ("captiononly",)
    assert "bad.id/.." in selection.video_ids  # unsafe ids are kept, so the job records them as failed
    summary = selection.summary
    assert summary["csv_rows"] == len(metadata) and summary["caption_records"] == len(caption_ids)
    assert summary["csv_only"] == 20 and summary["caption_only"] == 1
    assert summary["selected"] == len(selection.video_ids) and summary["selected_without_captions"] == 20
    assert summary["selected_unsafe_ids"] == 1


def test_subset_is_deterministic_whatever_the_input_order():
    metadata = metadata_rows()
    caption_ids = list(metadata)
    shuffled_ids = list(metadata)
    random.Random(1).shuffle(shuffled_ids)
    shuffled_metadata = {video_id: metadata[video_id] for video_id in shuffled_ids}
    config = SubsetConfig(subset="howto100m-380k", max_videos=10, seed=3)

    first = select_subset(metadata, caption_ids, config)
    second = select_subset(shuffled_metadata, reversed(shuffled_ids), config)

    assert first == second and list(first.video_ids) == sorted(first.video_ids)


def test_howto100m_380k_is_the_food_and_entertaining_rows():
    metadata = metadata_rows()
    selection = select_subset(metadata, metadata, SubsetConfig(subset="howto100m-380k"))
    expected = {video_id for video_id, row in metadata.items() if row.category_1 in HOWTO100M_380K_CATEGORIES}
    assert set(selection.video_ids) == expected and len(expected) == 41
    assert selection.not_in_metadata == ()


def test_subset_by_categories_and_category_pairs(caplog):
    metadata = metadata_rows()
    config = SubsetConfig(
        subset="categories", categories=("Pets and Animals", "Food and Entertaining/Drinks", "Nope")
    )

    with caplog.at_level(logging.WARNING):
        selection = select_subset(metadata, [], config)

    expected = {
        video_id
        for video_id, row in metadata.items()
        if row.category_1 == "Pets and Animals"
        or (row.category_1, row.category_2) == ("Food and Entertaining", "Drinks")
    }
    assert set(selection.video_ids) == expected and len(expected) == 40
    assert selection.summary["selected_without_captions"] == 40
    assert "match no CSV row" in caplog.text and "Nope" in caplog.text


def test_subset_id_list_intersects_the_rest(tmp_path):
    metadata = metadata_rows()
    id_list = tmp_path / "ids.txt"
    id_list.write_text(
        "# my ids\nfood0000001\ncars0000002  # a trailing comment\n\n  captiononly \nunknown0001\n"
    )

    everything = select_subset(metadata, ["captiononly"], SubsetConfig(id_list=str(id_list)))
    food_only = select_subset(
        metadata, ["captiononly"], SubsetConfig(subset="howto100m-380k", id_list=str(id_list))
    )

    assert everything.video_ids == ("captiononly", "cars0000002", "food0000001")
    assert everything.not_in_metadata == ("captiononly",)
    assert everything.summary["id_list_ids"] == 4 and everything.summary["id_list_unknown"] == 1
    assert food_only.video_ids == ("food0000001",)


def test_max_videos_sample_is_seeded_and_grows_by_adding():
    metadata = metadata_rows()

    def sample(max_videos, seed):
        return set(
            select_subset(metadata, metadata, SubsetConfig(max_videos=max_videos, seed=seed)).video_ids
        )

    assert sample(20, 0) == sample(20, 0) and len(sample(20, 0)) == 20
    assert sample(20, 0) != sample(20, 1)
    assert sample(20, 0) < sample(25, 0) < sample(60, 0)  # a larger cap only adds videos
    first_n = set(sorted(metadata)[:20])
    assert sample(20, 0) != first_n  # a pseudo-random sample, not "the first N"
    assert sample(1000, 0) == set(metadata)


def test_subset_config_validation(caplog):
    with pytest.raises(ValueError, match="--subset must be one of"):
        SubsetConfig(subset="howto100m")
    with pytest.raises(ValueError, match="categories"):
        SubsetConfig(subset="categories")
    with pytest.raises(ValueError, match="max_videos"):
        SubsetConfig(max_videos=-1)
    with caplog.at_level(logging.WARNING):
        SubsetConfig(subset="all", categories=("Pets and Animals",))
    assert "ignored" in caplog.text
