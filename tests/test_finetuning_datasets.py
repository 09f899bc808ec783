"""Each published dataset layout, generated tiny, read by its reader: counts, splits, captions per video,
paragraph concatenation, and missing videos / captions reported and skipped."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import pytest

from infra.sample_msrvtt import generate_sample_msrvtt
from pipelines.finetuning.datasets import read_split
from pipelines.finetuning.frame_cache import FrameCache, FrameCacheConfig, uniform_frame_indices


def touch_videos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"\0")  # readers only index files; decoding is the frame cache's job


def write_rows(path: Path, rows: list[list[str]], *, delimiter: str = ",") -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)


def test_msrvtt(tmp_path):
    touch_videos(tmp_path / "videos" / "all", ["video0.mp4", "video1.mp4", "video2.mp4", "video3.mp4"])
    sentences = [
        {"video_id": f"video{v}", "caption": f"caption {c} of {v}", "sen_id": 0}
        for v in range(4)
        for c in range(3)
    ]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    write_rows(tmp_path / "MSRVTT_train.9k.csv", [["video_id"], ["video0"], ["video1"], ["video9"]])
    write_rows(tmp_path / "MSRVTT_train.7k.csv", [["video_id"], ["video0"]])
    write_rows(tmp_path / "MSRVTT_JSFUSION_test.csv", [["key", "vid_key", "video_id", "sentence"],
               ["ret0", "msr2", "video2", "a man sings"], ["ret1", "msr3", "video3", "a dog runs"]])  # fmt: skip
    train = read_split("msrvtt", tmp_path, "train", "9k")
    assert [i.video_id for i in train.items] == ["video0", "video1"] and train.num_captions == 6
    assert [(s.video_id, s.reason) for s in train.skipped] == [("video9", "missing_video")]
    assert train.expected_videos == 3 and not train.is_complete
    assert len(read_split("msrvtt", tmp_path, "train", "7k").items) == 1
    test = read_split("msrvtt", tmp_path, "test")
    assert [(i.video_id, i.captions) for i in test.items] == [
        ("video2", ("a man sings",)),
        ("video3", ("a dog runs",)),
    ]
    with pytest.raises(ValueError, match="9k"):
        read_split("msrvtt", tmp_path, "train", "8k")


def test_msvd_several_captions_per_video(tmp_path):
    touch_videos(tmp_path / "YouTubeClips", ["vidA_1_5.avi", "vidB_2_9.avi", "vidC_0_4.avi"])
    captions = {"vidA_1_5": [["a", "cat"], ["a", "kitten", "plays"]], "vidB_2_9": [["someone", "cooks"]] * 4}
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    (tmp_path / "train_list.txt").write_text("vidA_1_5\n")
    (tmp_path / "test_list.txt").write_text("vidB_2_9\nvidC_0_4\n")
    train = read_split("msvd", tmp_path, "train")
    assert train.items[0].captions == ("a cat", "a kitten plays")
    test = read_split("msvd", tmp_path, "test")
    assert [i.video_id for i in test.items] == ["vidB_2_9"] and test.num_captions == 4
    assert [(s.video_id, s.reason) for s in test.skipped] == [("vidC_0_4", "no_captions")]


def test_msvd_refuses_pickles_that_build_objects(tmp_path):
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"v": [Path("x")]}))
    (tmp_path / "train_list.txt").write_text("v\n")
    with pytest.raises(pickle.UnpicklingError, match="only dicts"):
        read_split("msvd", tmp_path, "train")


def test_lsmdc(tmp_path):
    touch_videos(
        tmp_path / "1001_Movie", ["1001_Movie_00.00.01-00.00.03.avi", "1001_Movie_00.00.05-00.00.09.avi"]
    )
    rows = [["1001_Movie_00.00.01-00.00.03", "0", "1", "0", "1", "SOMEONE opens a door."],
            ["1001_Movie_00.00.05-00.00.09", "0", "1", "0", "1", "He smiles."]]  # fmt: skip
    write_rows(tmp_path / "LSMDC16_challenge_1000_publictect.csv", rows, delimiter="\t")
    write_rows(tmp_path / "LSMDC16_annos_training.csv", rows[:1], delimiter="\t")
    test = read_split("lsmdc", tmp_path, "test")
    assert [i.captions for i in test.items] == [("SOMEONE opens a door.",), ("He smiles.",)]
    assert len(read_split("lsmdc", tmp_path, "train").items) == 1


def test_activitynet_paragraphs(tmp_path):
    touch_videos(tmp_path / "videos", ["v_abc.mp4", "def.mkv"])  # one copy without the "v_" prefix
    annotations = {
        "v_abc": {
            "duration": 20.0,
            "timestamps": [[0, 5], [5, 20]],
            "sentences": ["A man enters. ", " He sits."],
        },
        "v_def": {"duration": 9.0, "timestamps": [[0, 9]], "sentences": ["A dog barks."]},
        "v_gone": {"duration": 9.0, "timestamps": [[0, 9]], "sentences": ["Missing."]},
    }
    (tmp_path / "val_1.json").write_text(json.dumps(annotations))
    test = read_split("activitynet", tmp_path, "test")
    assert [(i.video_id, i.captions) for i in test.items] == [
        ("v_abc", ("A man enters. He sits.",)), ("v_def", ("A dog barks.",))]  # fmt: skip
    assert test.expected_videos == 3 and [s.video_id for s in test.skipped] == ["v_gone"]


def test_didemo_paragraphs(tmp_path):
    touch_videos(tmp_path / "videos", ["1234@N00_55_aa.mov.mp4", "99@N01_7_bb.mp4"])
    moments = [
        {"video": "1234@N00_55_aa.mov", "description": "a girl waves", "times": [[0, 0]]},
        {"video": "99@N01_7_bb.mp4", "description": "car drives by", "times": [[1, 1]]},
        {"video": "1234@N00_55_aa.mov", "description": "then she jumps", "times": [[1, 2]]},
    ]
    (tmp_path / "test_data.json").write_text(json.dumps(moments))
    test = read_split("didemo", tmp_path, "test")
    assert {i.video_id: i.captions for i in test.items} == {
        "1234@N00_55_aa.mov": ("a girl waves then she jumps",), "99@N01_7_bb.mp4": ("car drives by",)}  # fmt: skip


def test_generic_layout(tmp_path):
    touch_videos(tmp_path / "videos", ["a.mp4", "b.webm", "c.mp4"])
    write_rows(tmp_path / "captions.csv", [["video_id", "caption", "split"], ["a", "one", "train"], ["a", "two", "train"],
               ["b", "three", "test"], ["c", "", "test"], ["d", "four", "test"]])  # fmt: skip
    assert read_split("generic", tmp_path, "train").num_captions == 2
    test = read_split("generic", tmp_path, "test")
    assert [i.video_id for i in test.items] == ["b"]
    assert sorted((s.video_id, s.reason) for s in test.skipped) == [
        ("c", "no_captions"),
        ("d", "missing_video"),
    ]
    assert "skipped" in test.summary()


def test_bad_dataset_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        read_split("kinetics", tmp_path, "train")
    with pytest.raises(ValueError, match="does not exist"):
        read_split("msrvtt", tmp_path / "nope", "test")
    with pytest.raises(ValueError, match="MSRVTT_JSFUSION_test.csv"):
        read_split("msrvtt", tmp_path, "test")


def test_uniform_frame_indices():
    assert uniform_frame_indices(3, 12) == [0, 1, 2]
    assert uniform_frame_indices(10, 4) == [0, 3, 6, 9]  # np.linspace(0, 9, 4) = 0, 3, 6, 9
    assert uniform_frame_indices(100, 12)[-1] == 99


def test_frame_cache_decodes_once_and_reports_broken_videos(tmp_path):
    sample = generate_sample_msrvtt(tmp_path / "msrvtt", num_train=2, num_test=1, seconds_per_colour=2)
    split = read_split("msrvtt", sample.root, "train")
    (sample.root / "videos" / "all" / "video1.mp4").write_bytes(b"not a video")
    cache = FrameCache(FrameCacheConfig(frame_cache=str(tmp_path / "cache"), short_side=64))
    kept, skipped = cache.fill(split.items)
    assert [i.video_id for i in kept] == ["video0"] and [s.video_id for s in skipped] == ["video1"]
    cached = cache.path_for(kept[0].path)
    assert len(cache.frames(kept[0].path)) == 4  # 4 s at 1 fps
    before = cached.stat().st_mtime_ns
    cache.fill(kept)
    assert cached.stat().st_mtime_ns == before  # epochs 2..n read the cache, no decode
