"""A contact sheet: one sample's frames in a grid, each with its timestamp and the captions spoken then.

    python -m pipelines.sharding.contact_sheet --shard OUT/shards/howto100m-000000.tar --out sheet.png

The shard is read with the stock `webdataset` reader, so the sheet shows what training will see.
A shard whose videos all failed has no tar (its manifest part says why): asking for one is answered
in one line, as is a tar with no sample (written by versions that still made empty tars).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds
from PIL import Image, ImageDraw, ImageFont

from pipelines.cli import parse_config
from pipelines.config_values import PositiveInt
from pipelines.storage import ObjectNotFound, open_storage

CELL_WIDTH = 224
TEXT_LINES = 5


@dataclass(frozen=True, kw_only=True)
class ContactSheetConfig:
    """Draw one video's frames from a shard as a PNG, each with the ASR caption spoken at that second."""

    shard: str  # a shard tar: local path or s3://bucket/prefix/shards/NAME.tar
    out: str = "contact_sheet.png"  # PNG to write (local path)
    video_id: str = ""  # which sample; "" = the first one in the shard
    max_frames: PositiveInt = 16
    columns: PositiveInt = 4


def read_sample(shard_path: str | Path, video_id: str = "") -> dict:
    """One sample from a local tar, decoded by the stock reader (frames as PIL images)."""
    dataset = wds.WebDataset(
        str(shard_path), shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False
    ).decode("pil")  # an empty tar gets the one-line error below, not webdataset's traceback
    for sample in dataset:
        if not video_id or sample["__key__"] == video_id:
            return sample
    raise ValueError(
        f"no sample {video_id!r} in {shard_path}"
        if video_id
        else f"{shard_path} holds no samples (all its videos failed; its manifest part says why): pick another shard"
    )


def captions_at(captions: dict, t: float) -> list[str]:
    """Caption texts whose [start, end) span contains time t (seconds)."""
    return [
        text
        for start, end, text in zip(captions["start"], captions["end"], captions["text"], strict=True)
        if start <= t < end
    ]


def render_contact_sheet(sample: dict, *, max_frames: int = 16, columns: int = 4) -> Image.Image:
    meta = sample["json"]
    frame_keys = sorted(k for k in sample if k.endswith(".jpg"))
    picks = _evenly_spaced(len(frame_keys), max_frames)
    font = ImageFont.load_default(size=12)
    line_height = 14
    thumbs = [_thumbnail(sample[frame_keys[i]]) for i in picks]
    cell_h = max((t.height for t in thumbs), default=1) + line_height * (TEXT_LINES + 1) + 8
    rows = max(1, -(-len(thumbs) // columns))
    header = 2 * line_height + 8
    sheet = Image.new("RGB", (columns * CELL_WIDTH, header + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    title = f"{meta['video_id']}  {meta['duration_s']:.1f} s, {meta['num_frames']} frames at 1 fps, {meta['width']}x{meta['height']}"
    draw.text((4, 4), title, fill="black", font=font)
    draw.text(
        (4, 4 + line_height),
        f"{meta['source']['category_1']} / {meta['source']['category_2']}",
        fill="gray",
        font=font,
    )
    for cell, (frame_index, thumb) in enumerate(zip(picks, thumbs, strict=True)):
        x, y = (cell % columns) * CELL_WIDTH, header + (cell // columns) * cell_h
        sheet.paste(thumb, (x, y))
        t = meta["frame_timestamps_s"][frame_index]
        lines = [f"t={t:.2f}s (frame {frame_index})"] + _wrap(captions_at(meta["captions"], t))
        for n, line in enumerate(lines[: TEXT_LINES + 1]):
            draw.text(
                (x + 2, y + thumb.height + 2 + n * line_height),
                line,
                fill="black" if n else "blue",
                font=font,
            )
    return sheet


def _thumbnail(image: Image.Image) -> Image.Image:
    scale = CELL_WIDTH / image.width
    return image.convert("RGB").resize((CELL_WIDTH, max(1, round(image.height * scale))))


def _wrap(texts: list[str]) -> list[str]:
    if not texts:
        return ["(no caption)"]
    return [line for text in texts for line in textwrap.wrap(text, width=34)]


def _evenly_spaced(count: int, wanted: int) -> list[int]:
    if count <= wanted:
        return list(range(count))
    return [round(i * (count - 1) / (wanted - 1)) for i in range(wanted)]


def make_contact_sheet(config: ContactSheetConfig) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        local_tar = _local_copy(config.shard, Path(scratch))
        sample = read_sample(local_tar, config.video_id)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    render_contact_sheet(sample, max_frames=config.max_frames, columns=config.columns).save(out)
    return out


def _local_copy(shard: str, scratch: Path) -> Path:
    root, _, name = shard.rpartition("/")
    try:
        if not shard.startswith("s3://"):
            if not Path(shard).is_file():
                raise ObjectNotFound(shard)
            return Path(shard)
        local = scratch / name
        with open_storage(root).open_read(name) as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target)
        return local
    except ObjectNotFound:
        raise FileNotFoundError(
            f"no shard {shard}: a shard whose videos all failed has no tar (its manifest part says why); "
            "pick another from the shards/ folder"
        ) from None


def main(argv: list[str] | None = None) -> int:
    config = parse_config(ContactSheetConfig, argv)
    try:
        out = make_contact_sheet(config)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"contact sheet: {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
