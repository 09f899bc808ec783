"""The contact sheet: frames in a grid with the captions spoken at each frame's time."""

from __future__ import annotations

from PIL import Image

from pipelines.sharding.contact_sheet import ContactSheetConfig, captions_at, make_contact_sheet
from tests.test_sharding_tar_writer import jpeg


def test_captions_at_uses_half_open_spans():
    captions = {"start": [0.0, 1.5, 3.0], "end": [2.0, 3.0, 4.0], "text": ["a", "b", "c"]}
    assert captions_at(captions, 0.0) == ["a"]
    assert captions_at(captions, 1.5) == ["a", "b"]
    assert captions_at(captions, 3.0) == ["c"]  # "b" ended at 3.0
    assert captions_at(captions, 4.0) == []


def test_sheet_from_a_shard(tmp_path):
    from pipelines.sharding.tar_writer import ShardTarWriter

    meta = {
        "video_id": "abc", "duration_s": 6.0, "num_frames": 6, "width": 32, "height": 24,
        "frame_timestamps_s": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        "source": {"category_1": "Food and Entertaining", "category_2": "Recipes"},
        "captions": {"start": [0.0, 3.0], "end": [3.0, 6.0], "text": ["red first", "then blue"]},
    }  # fmt: skip
    with ShardTarWriter(tmp_path / "s.tar") as writer:
        writer.add_sample("abc", meta, [jpeg((255, 0, 0))] * 3 + [jpeg((0, 0, 255))] * 3)
    out = make_contact_sheet(
        ContactSheetConfig(shard=str(tmp_path / "s.tar"), out=str(tmp_path / "sheet.png"), columns=3)
    )
    sheet = Image.open(out).convert("RGB")
    assert sheet.width == 3 * 224
    # first row of thumbnails is red, second row blue: frames are placed in time order
    header = 2 * 14 + 8
    assert sheet.getpixel((112, header + 10))[0] > 200
    row_height = (sheet.height - header) // 2
    assert sheet.getpixel((112, header + row_height + 10))[2] > 200
