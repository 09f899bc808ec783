"""Generate a small collection in the HowTo100M layout, with real videos and the broken cases a crawl has.

    python -m infra.sample_collection --out /tmp/howto_sample [--num-good-videos 12]

Layout under `root`: `videos/` (some in `part_1/`, `part_2/`), `HowTo100M_v1.csv`
(`video_id,category_1,category_2,rank,task_id`) and `caption.json` (one line,
`{id: {"start": [...], "end": [...], "text": [...]}}`, overlapping ASR-like segments).

Every good video is a sequence of named visual segments (solid colours such as "red", or patterns such
as "colour bars") of 1-3 s changing at half seconds, and the captions say what is on screen when it
appears ("now the screen turns red" starts when the red segment starts), so frames and captions line up
in time: `SampleCollection.visual_segments` says what the frame at any time must show.
Videos come from ffmpeg `lavfi` sources: H.264 (with B-frames) in .mp4/.mkv, VP9 in .webm, 25/30/60 fps,
landscape and portrait, with and without audio, one variable-frame-rate file.

WARNING: with `include_broken` (and `include_fifo`) the collection contains a FIFO named `<id>.mp4`.
Opening it blocks forever (no writer): decode it with a small `DecodeConfig.timeout_s` (tests use 2 s),
and do not copy, tar or upload `videos/` with tools that open every file.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import ffmpeg

from pipelines.cli import parse_config
from pipelines.video import fps_mode_output_kwargs

# Solid colours the videos show, by the name their captions use. RGB, 0..255.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 160, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "orange": (255, 128, 0),
    "purple": (128, 0, 160),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
# Patterns, by caption name -> lavfi source.
PATTERNS: dict[str, str] = {"test pattern": "testsrc2", "colour bars": "smptebars", "fractal": "mandelbrot"}

# Real HowTo100M (wikiHow) category_1 / category_2 pairs.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("Food and Entertaining", "Recipes"),
    ("Hobbies and Crafts", "Crafts"),
    ("Cars & Other Vehicles", "Cars"),
    ("Sports and Fitness", "Outdoor Recreation"),
    ("Home and Garden", "Gardening"),
    ("Pets and Animals", "Dogs"),
    ("Computers and Electronics", "Computers"),
    ("Health", "Exercise"),
    ("Food and Entertaining", "Drinks"),
    ("Personal Care and Style", "Hair Care"),
)

CONTAINERS = ("mp4", "webm", "mkv")  # webm holds VP9 + Opus; mp4 and mkv hold H.264 + AAC
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_YOUTUBE_ID_LENGTH = 11
_INVALID_UTF8_SENTINEL = "<<invalid-utf8>>"  # replaced by raw b"\xff\xfe" in caption.json
_INVALID_UTF8_BYTES = b"\xff\xfe"
_UNSAFE_IDS = ("../escape", "bad.id", "bad id")
_FFMPEG_TIMEOUT_S = 120.0

# One caption.json record: {"start": [s, ...], "end": [s, ...], "text": [str, ...]} (the file format itself).
CaptionRecord = dict[str, list]

_COLOUR_PHRASES = (
    "now the screen turns {name}",
    "and here it becomes {name}",
    "you can see {name} now",
    'this part is "{name}", okay',
    "voilà, {name} — next step",
)
_PATTERN_PHRASES = ("now we look at the {name}", "here comes the {name}")
_FILLER_PHRASES = (
    "hi everyone and welcome back to my channel",
    "today I'm going to show you how to do this",
    "so first you want to grab your tools",
    "make sure you subscribe for more videos",
)


@dataclass(frozen=True, kw_only=True)
class VisualSegment:
    """What the video shows during [start_s, end_s): a COLOURS or PATTERNS entry, by name."""

    name: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if self.name not in COLOURS and self.name not in PATTERNS:
            raise ValueError(
                f"unknown segment {self.name!r}; use one of {sorted(COLOURS) + sorted(PATTERNS)}"
            )
        if not 0 <= self.start_s < self.end_s:
            raise ValueError(
                f"segment {self.name!r} needs 0 <= start_s < end_s, got {self.start_s}, {self.end_s}"
            )


@dataclass(frozen=True, kw_only=True)
class VideoRecipe:
    """How to synthesise one video file with ffmpeg lavfi sources."""

    segments: tuple[VisualSegment, ...] = ()  # back to back from t=0
    container: str = "mp4"  # one of CONTAINERS
    width: int = 320
    height: int = 180
    fps: int = 30
    with_audio: bool = False
    audio_extra_s: float = 0.0  # audio runs this much longer than the video (container duration > video's)
    variable_frame_rate: bool = False  # keep every 3rd frame in the second half (30 -> 10 fps at 30 fps)
    faststart: bool = False  # mp4 only: index (moov) before the media data, as streaming sites serve it

    def __post_init__(self) -> None:
        if self.container not in CONTAINERS:
            raise ValueError(f"container must be one of {CONTAINERS}, got {self.container!r}")
        if self.width % 2 or self.height % 2 or self.width <= 0 or self.height <= 0:
            raise ValueError(
                f"width and height must be positive and even (yuv420p), got {self.width}x{self.height}"
            )
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.segments and self.segments[0].start_s != 0:
            raise ValueError(f"the first segment must start at 0, got {self.segments[0]}")
        for before, after in itertools.pairwise(self.segments):
            if not math.isclose(before.end_s, after.start_s):
                raise ValueError(f"segments must be back to back: {before} then {after}")
        if any(count < 1 for count in _segment_frame_counts(self)):
            raise ValueError(f"every segment must last at least one frame at {self.fps} fps: {self.segments}")

    @property
    def duration_s(self) -> float:
        return self.segments[-1].end_s if self.segments else 0.0


def segments_between(names: Sequence[str], boundaries_s: Sequence[float]) -> tuple[VisualSegment, ...]:
    """Segment k shows names[k] during [boundaries_s[k], boundaries_s[k + 1]); boundaries start at 0."""
    if len(boundaries_s) != len(names) + 1 or boundaries_s[0] != 0:
        raise ValueError(
            f"need len(names) + 1 boundaries starting at 0, got {len(names)} names, {boundaries_s}"
        )
    return tuple(
        VisualSegment(name=name, start_s=float(start), end_s=float(end))
        for name, (start, end) in zip(names, itertools.pairwise(boundaries_s), strict=True)
    )


def segment_at(segments: Sequence[VisualSegment], time_s: float) -> VisualSegment | None:
    """The segment on screen at `time_s` (None past the end)."""
    return next((s for s in segments if s.start_s <= time_s < s.end_s), None)


# ------------------------------------------------------------------------------------- writing videos


def write_video(recipe: VideoRecipe, path: Path) -> None:
    """Encode `recipe` to `path` (extension chosen by the caller) with ffmpeg; raises RuntimeError on failure."""
    if not recipe.segments:
        raise ValueError("a VideoRecipe needs at least one segment to be written")
    streams = [_video_stream(recipe)]
    if recipe.with_audio:
        audio_s = recipe.duration_s + recipe.audio_extra_s
        streams.append(ffmpeg.input("sine=frequency=440:sample_rate=48000", f="lavfi", t=audio_s))
    output = ffmpeg.output(*streams, str(path), **_encoder_kwargs(recipe))
    _run_ffmpeg(output.get_args())


def _frame_index(time_s: float, fps: int) -> int:
    """Index of the first frame at or after `time_s` when frames sit at n/fps (half frames round up)."""
    return math.floor(time_s * fps + 0.5)


def _segment_frame_counts(recipe: VideoRecipe) -> list[int]:
    return [_frame_index(s.end_s, recipe.fps) - _frame_index(s.start_s, recipe.fps) for s in recipe.segments]


def _video_stream(recipe: VideoRecipe) -> ffmpeg.nodes.FilterableStream:
    # Each segment gets a whole number of frames (trim is exact; `-t` only ends the endless source): concat
    # then places every change within half a frame of its boundary instead of accumulating rounding.
    # The `-t` bound also differs per segment: ffmpeg-python merges identical input nodes into one.
    parts = [
        ffmpeg.input(_lavfi_source(segment.name, recipe), f="lavfi", t=(count + 2 + index) / recipe.fps).trim(
            end_frame=count
        )
        for index, (segment, count) in enumerate(
            zip(recipe.segments, _segment_frame_counts(recipe), strict=True)
        )
    ]
    video = ffmpeg.concat(*parts, v=1, a=0) if len(parts) > 1 else parts[0]
    if recipe.variable_frame_rate:
        # Frame n is at n/fps; keeping every 3rd in the second half keeps frames on whole seconds.
        half_s = recipe.duration_s / 2
        video = video.filter("select", f"if(lt(t,{half_s}),1,not(mod(n,3)))")
    return video


def _lavfi_source(name: str, recipe: VideoRecipe) -> str:
    size_and_rate = f"s={recipe.width}x{recipe.height}:r={recipe.fps}"
    if name in COLOURS:
        red, green, blue = COLOURS[name]
        return f"color=c=0x{red:02X}{green:02X}{blue:02X}:{size_and_rate}"
    source = PATTERNS[name]
    extra = ":maxiter=256" if source == "mandelbrot" else ""  # the default 7189 iterations is slow
    return f"{source}={size_and_rate}{extra}"


def _encoder_kwargs(recipe: VideoRecipe) -> dict[str, object]:
    common: dict[str, object] = {"pix_fmt": "yuv420p", "threads": 1, "g": 2 * recipe.fps}
    if recipe.container == "webm":
        video = {"vcodec": "libvpx-vp9", "deadline": "realtime", "cpu-used": 8, "crf": 32, "b:v": 0}
        audio = {"acodec": "libopus", "b:a": "48k"}
    else:
        # ultrafast turns B-frames off; -bf 2 puts them back (reordered pts, as in real uploads).
        video = {"vcodec": "libx264", "preset": "ultrafast", "bf": 2, "crf": 23}
        audio = {"acodec": "aac", "b:a": "64k"}
    kwargs = {**common, **video, **(audio if recipe.with_audio else {})}
    if recipe.faststart:
        kwargs["movflags"] = "+faststart"
    if recipe.variable_frame_rate:
        kwargs.update(fps_mode_output_kwargs("vfr"))  # else mp4 muxing re-fills the gaps (constant rate)
    return kwargs


def _run_ffmpeg(args: Sequence[str]) -> None:
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    result = subprocess.run(command, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", errors="replace").strip()[-1000:]
        raise RuntimeError(f"ffmpeg failed ({result.returncode}) making {args[-1]}: {tail}")


def _write_truncated_mp4(path: Path) -> None:
    """A 10 s faststart H.264 mp4 cut to 40% of its bytes: header intact, media data cut short."""
    recipe = VideoRecipe(segments=(VisualSegment(name="test pattern", start_s=0, end_s=10),), faststart=True)
    write_video(recipe, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])


def _write_audio_only_mp4(path: Path) -> None:
    _run_ffmpeg(
        ["-f", "lavfi", "-t", "5", "-i", "sine=frequency=330", "-c:a", "aac", "-threads", "1", str(path)]
    )


def _write_unknown_codec_mkv(path: Path) -> None:
    """A valid Matroska file whose video track's CodecID is unknown: probes as video, cannot be decoded."""
    write_video(VideoRecipe(segments=segments_between(["red", "blue"], [0, 1.5, 3]), container="mkv"), path)
    data = path.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1, "expected one H.264 track in the mkv"
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/XXX/XXX"))  # same length: sizes stay valid


def _write_text_file(path: Path) -> None:
    path.write_text("This is not a video. It is a text file someone saved with an .mp4 name.\n")


def _write_empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _make_fifo(path: Path) -> None:
    os.mkfifo(path)  # opening it for reading blocks until a writer appears: never


# ------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True, kw_only=True)
class SampleCollectionSpec:
    num_good_videos: int = 12
    min_duration_s: float = 4.0  # of good videos (whole seconds are drawn in [min, max])
    max_duration_s: float = 16.0
    include_broken: bool = True
    seed: int = 0
    include_fifo: bool = True  # the "timeout" case (a FIFO); turn off to copy/upload the collection

    def __post_init__(self) -> None:
        if self.num_good_videos < 0:
            raise ValueError(f"num_good_videos must be >= 0, got {self.num_good_videos}")
        if not 2 <= self.min_duration_s <= self.max_duration_s:
            raise ValueError("need 2 <= min_duration_s <= max_duration_s (seconds)")
        if math.ceil(self.min_duration_s) > math.floor(self.max_duration_s):
            raise ValueError("[min_duration_s, max_duration_s] must contain a whole number of seconds")


@dataclass(frozen=True, kw_only=True)
class SampleCollection:
    root: Path
    videos_dir: Path
    metadata_csv: Path
    captions_json: Path
    good_ids: tuple[str, ...]  # videos that must shard ok
    expected_failures: dict[str, str]  # video_id -> expected manifest reason code
    caption_only_ids: tuple[str, ...]  # ids present in caption.json but not in the CSV
    durations_s: dict[str, float]  # intended duration of each generated video
    visual_segments: dict[str, tuple[VisualSegment, ...]]  # what each generated video shows, when
    video_files: dict[str, Path] = field(default_factory=dict)  # every file written under videos/, by id


@dataclass(frozen=True, kw_only=True)
class _Entry:
    """One id of the collection: where its file goes, how to make it, its captions and CSV presence."""

    video_id: str
    file: str | None = None  # relative to videos/; None = no file
    write: Callable[[Path], None] | None = None
    recipe: VideoRecipe | None = None
    duration_s: float | None = None
    captions: CaptionRecord | None = None  # None = absent from caption.json
    in_csv: bool = True
    expected_failure: str | None = None  # None = must shard ok


def _unique_video_ids(rng: random.Random, count: int) -> list[str]:
    """`count` distinct YouTube-like ids; the first starts with '-' (real ids do; CLIs then see an option)."""
    ids: list[str] = []
    while len(ids) < count:
        video_id = "".join(rng.choice(_ID_ALPHABET) for _ in range(_YOUTUBE_ID_LENGTH))
        if not ids:
            video_id = "-" + video_id[1:]
        if video_id not in ids:
            ids.append(video_id)
    return ids


def _good_video_formats() -> tuple[VideoRecipe, ...]:
    """Encodings cycled through by the good videos (segments filled in per video)."""
    return (
        VideoRecipe(container="mp4", width=320, height=180, fps=30, with_audio=True),
        VideoRecipe(container="webm", width=480, height=270, fps=25, with_audio=True),
        VideoRecipe(container="mp4", width=640, height=360, fps=60),
        VideoRecipe(container="mkv", width=384, height=216, fps=25, with_audio=True),
        VideoRecipe(container="mp4", width=180, height=320, fps=30),  # portrait
        VideoRecipe(
            container="mp4", width=320, height=180, fps=30, with_audio=True, variable_frame_rate=True
        ),
        VideoRecipe(container="webm", width=320, height=180, fps=30),
        VideoRecipe(container="mp4", width=480, height=270, fps=25, with_audio=True, faststart=True),
        VideoRecipe(container="webm", width=640, height=360, fps=60),
    )


def _random_segments(rng: random.Random, duration_s: int) -> tuple[VisualSegment, ...]:
    """Segments of 1-3 s changing at half seconds, mostly colours, never the same name twice in a row.

    Changes at t = k + 0.5 keep every 1 fps sample (t = whole seconds) half a second away from a change,
    so each sampled frame shows one segment unambiguously even when the video stream starts a few
    milliseconds late (AAC priming in .mkv, Opus pre-skip in .webm shift it by ~7-21 ms).
    """
    cuts = []
    cut = 0.5 + rng.randint(1, 3)
    while cut <= duration_s - 1:
        cuts.append(cut)
        cut += rng.randint(1, 3)
    names: list[str] = []
    for _ in range(len(cuts) + 1):
        pool = list(COLOURS) if rng.random() < 0.8 else list(PATTERNS)
        names.append(rng.choice([name for name in pool if not names or name != names[-1]]))
    return segments_between(names, [0.0, *cuts, float(duration_s)])


def _aligned_captions(
    rng: random.Random, segments: Sequence[VisualSegment], duration_s: float
) -> CaptionRecord:
    """One ASR-like caption per segment, starting as it appears (+0-0.3 s), 2-6 s long (overlapping)."""
    starts, ends, texts = [], [], []
    for segment in segments:
        start = round(segment.start_s + rng.uniform(0.0, 0.3), 2)
        starts.append(start)
        ends.append(round(min(start + rng.uniform(2.0, 6.0), duration_s), 2))
        phrases = _COLOUR_PHRASES if segment.name in COLOURS else _PATTERN_PHRASES
        texts.append(rng.choice(phrases).format(name=segment.name))
    return {"start": starts, "end": ends, "text": texts}


def _filler_captions(rng: random.Random, duration_s: float) -> CaptionRecord:
    """Generic talk every 2 s (for videos whose content does not matter)."""
    starts = [float(t) for t in range(0, max(int(duration_s) - 1, 1), 2)]
    ends = [min(round(start + rng.uniform(2.5, 4.0), 2), duration_s) for start in starts]
    texts = [rng.choice(_FILLER_PHRASES) for _ in starts]
    return {"start": starts, "end": ends, "text": texts}


def _subfolder(index: int) -> str:
    return "" if index % 3 == 0 else f"part_{index % 3}/"


def _plan_good_videos(rng: random.Random, ids: Sequence[str], spec: SampleCollectionSpec) -> list[_Entry]:
    formats = _good_video_formats()
    seen_sequences: set[tuple[str, ...]] = set()
    entries = []
    for index, video_id in enumerate(ids):
        duration = rng.randint(math.ceil(spec.min_duration_s), math.floor(spec.max_duration_s))
        segments = _random_segments(rng, duration)
        while tuple(s.name for s in segments) in seen_sequences:  # each video's sequence is distinct
            segments = _random_segments(rng, duration)
        seen_sequences.add(tuple(s.name for s in segments))
        recipe = replace(formats[index % len(formats)], segments=segments)
        entries.append(
            _video_entry(video_id, recipe, f"{_subfolder(index)}{video_id}.{recipe.container}", rng)
        )
    return entries


def _video_entry(video_id: str, recipe: VideoRecipe, file: str, rng: random.Random) -> _Entry:
    return _Entry(
        video_id=video_id,
        file=file,
        write=lambda path: write_video(recipe, path),
        recipe=recipe,
        duration_s=recipe.duration_s,
        captions=_aligned_captions(rng, recipe.segments, recipe.duration_s),
    )


# Caption quirks that a tolerant reader must survive; the videos still shard ok.


def _with_malformed_entries_mixed_in(captions: CaptionRecord, duration_s: float) -> CaptionRecord:
    """Valid entries plus one of each malformed kind: negative time, NaN time, end < start, empty text."""
    extra = [(-2.0, 1.0, "negative start"), (math.nan, 3.0, "nan start"), (3.0, 1.5, "ends before it starts")]
    extra.append((1.0, 2.0, "   "))
    merged = list(zip(captions["start"], captions["end"], captions["text"], strict=True))
    for offset, malformed in enumerate(extra):  # interleaved: valid, bad, valid, bad, ...
        merged.insert(min(2 * offset + 1, len(merged)), malformed)
    return {"start": [c[0] for c in merged], "end": [c[1] for c in merged], "text": [c[2] for c in merged]}


def _with_invalid_utf8(captions: CaptionRecord, duration_s: float) -> CaptionRecord:
    texts = list(captions["text"])
    texts[len(texts) // 2] = f"{texts[len(texts) // 2]} {_INVALID_UTF8_SENTINEL}"
    return {**captions, "text": texts}


def _running_past_end(captions: CaptionRecord, duration_s: float) -> CaptionRecord:
    """The last caption ends 4 s after the video, and one more starts after it (clipping drops that one)."""
    starts, ends, texts = list(captions["start"]), list(captions["end"]), list(captions["text"])
    ends[-1] = round(duration_s + 4.0, 2)
    starts.append(round(duration_s + 1.0, 2))
    ends.append(round(duration_s + 5.0, 2))
    texts.append("thanks for watching, see you next time")
    return {"start": starts, "end": ends, "text": texts}


def _add_caption_quirks(entries: list[_Entry]) -> list[_Entry]:
    """The last three good videos get: mixed malformed entries, invalid UTF-8, captions past the end."""
    quirks = [_with_malformed_entries_mixed_in, _with_invalid_utf8, _running_past_end]
    quirked = list(entries)
    for quirk, index in zip(quirks, range(len(entries) - 1, -1, -1), strict=False):  # < 3 videos: fewer
        entry = entries[index]
        assert entry.captions is not None and entry.duration_s is not None, "good videos have both"
        quirked[index] = replace(entry, captions=quirk(entry.captions, entry.duration_s))
    return quirked


def _plan_caption_failures(rng: random.Random, ids: Sequence[str]) -> list[_Entry]:
    """Videos that decode fine but whose captions fail: absent, unequal lists, all malformed, out of range."""
    entries = []
    for index, video_id in enumerate(ids):
        segments = _random_segments(rng, 5)
        recipe = VideoRecipe(segments=segments)
        entries.append(_video_entry(video_id, recipe, f"{_subfolder(index)}{video_id}.mp4", rng))
    no_captions, mismatch, all_malformed, out_of_range = entries
    assert mismatch.captions is not None
    mismatched: CaptionRecord = {**mismatch.captions, "text": mismatch.captions["text"][:-1]}
    malformed: CaptionRecord = {
        "start": [-1.0, math.nan, 4.0],
        "end": [2.0, 3.0, 3.5],
        "text": ["a", "b", "c"],
    }
    late: CaptionRecord = {
        "start": [6.0, 8.5],
        "end": [9.0, 11.0],
        "text": ["after the video", "still after"],
    }
    return [
        replace(no_captions, captions=None, expected_failure="no_captions"),
        replace(mismatch, captions=mismatched, expected_failure="caption_lengths_mismatch"),
        replace(all_malformed, captions=malformed, expected_failure="no_valid_captions"),
        replace(out_of_range, captions=late, expected_failure="no_captions_in_range"),
    ]


def _plan_broken_videos(rng: random.Random, ids: Sequence[str], spec: SampleCollectionSpec) -> list[_Entry]:
    """Files (or their absence) that fail to decode, each with valid captions and a CSV row."""
    too_short = VideoRecipe(segments=(VisualSegment(name="red", start_s=0, end_s=0.5),))
    cases: list[tuple[str, str | None, Callable[[Path], None] | None, float | None]] = [
        ("missing_file", None, None, None),
        ("empty_file", "mp4", _write_empty_file, None),
        ("truncated", "mp4", _write_truncated_mp4, 10.0),
        ("not_a_video", "mp4", _write_text_file, None),
        ("no_video_stream", "mp4", _write_audio_only_mp4, 5.0),
        ("too_short", "mp4", lambda path: write_video(too_short, path), 0.5),
        ("decode_error", "mkv", _write_unknown_codec_mkv, 3.0),
        ("timeout", "mp4", _make_fifo, None),
    ]
    if not spec.include_fifo:
        cases = [case for case in cases if case[0] != "timeout"]
    return [
        _Entry(
            video_id=video_id,
            file=None if extension is None else f"{_subfolder(index)}{video_id}.{extension}",
            write=write,
            duration_s=duration,
            captions=_filler_captions(rng, 10.0),
            expected_failure=reason,
        )
        for index, (video_id, (reason, extension, write, duration)) in enumerate(
            zip(ids, cases, strict=False)
        )
    ]


def _plan_id_problems(rng: random.Random, caption_only_ids: Sequence[str]) -> list[_Entry]:
    unsafe = [
        _Entry(video_id=video_id, captions=_filler_captions(rng, 8.0), expected_failure="unsafe_id")
        for video_id in _UNSAFE_IDS
    ]
    caption_only = [
        _Entry(video_id=video_id, captions=_filler_captions(rng, 8.0), in_csv=False)
        for video_id in caption_only_ids
    ]
    return unsafe + caption_only


def _plan_collection(spec: SampleCollectionSpec) -> list[_Entry]:
    rng = random.Random(spec.seed)
    # Ids for: broken files (8), caption failures (4), caption-only records (2).
    broken_counts = (8, 4, 2) if spec.include_broken else (0, 0, 0)
    ids = iter(_unique_video_ids(rng, spec.num_good_videos + sum(broken_counts)))
    good, broken_files, caption_failures, caption_only = (
        list(itertools.islice(ids, count)) for count in (spec.num_good_videos, *broken_counts)
    )
    entries = _plan_good_videos(rng, good, spec)
    if spec.include_broken:
        entries = _add_caption_quirks(entries)
        entries += _plan_broken_videos(rng, broken_files, spec)
        entries += _plan_caption_failures(rng, caption_failures)
        entries += _plan_id_problems(rng, caption_only)
    return entries


# --------------------------------------------------------------------------------- writing the layout


def generate_sample_collection(
    root: Path, spec: SampleCollectionSpec = SampleCollectionSpec()
) -> SampleCollection:
    """Write a HowTo100M-layout collection under `root` (absent or empty) and describe it."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty; generate the sample collection into a new directory")
    entries = _plan_collection(spec)
    videos_dir = root / "videos"
    _write_video_files(videos_dir, entries)
    rng = random.Random(spec.seed + 1)  # row/record order only: adding a case does not reshuffle the videos
    metadata_csv = _write_metadata_csv(root / "HowTo100M_v1.csv", entries, rng)
    captions_json = _write_captions_json(root / "caption.json", entries, rng)
    return SampleCollection(
        root=root,
        videos_dir=videos_dir,
        metadata_csv=metadata_csv,
        captions_json=captions_json,
        good_ids=tuple(e.video_id for e in entries if e.in_csv and e.expected_failure is None),
        expected_failures={e.video_id: e.expected_failure for e in entries if e.expected_failure},
        caption_only_ids=tuple(e.video_id for e in entries if not e.in_csv),
        durations_s={e.video_id: e.duration_s for e in entries if e.duration_s is not None},
        visual_segments={e.video_id: e.recipe.segments for e in entries if e.recipe is not None},
        video_files={e.video_id: videos_dir / e.file for e in entries if e.file is not None},
    )


def _write_video_files(videos_dir: Path, entries: Sequence[_Entry]) -> None:
    costliest_first = sorted(entries, key=_encoding_cost, reverse=True)
    jobs = [
        (videos_dir / e.file, e.write) for e in costliest_first if e.file is not None and e.write is not None
    ]
    for path, _ in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
    videos_dir.mkdir(parents=True, exist_ok=True)
    # Costliest encodes first so the pool's tail is short; each ffmpeg uses one thread.
    with ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1)) as pool:
        for future in [pool.submit(write, path) for path, write in jobs]:
            future.result()


def _encoding_cost(entry: _Entry) -> float:
    """Pixels to encode (VP9 counts double): a proxy for ffmpeg's wall time."""
    recipe = entry.recipe
    if recipe is None:
        return entry.duration_s or 0.0
    per_second = recipe.width * recipe.height * recipe.fps * (2 if recipe.container == "webm" else 1)
    return recipe.duration_s * per_second


def _category_for(index: int, entry: _Entry, rng: random.Random) -> tuple[str, str]:
    # Good videos cycle through the categories (>= 3 distinct category_1 as soon as there are 3 videos).
    return CATEGORIES[index % len(CATEGORIES)] if entry.expected_failure is None else rng.choice(CATEGORIES)


def _write_metadata_csv(path: Path, entries: Sequence[_Entry], rng: random.Random) -> Path:
    rows = []
    for index, entry in enumerate(e for e in entries if e.in_csv):
        category_1, category_2 = _category_for(index, entry, rng)
        task_id = 100_000 + 1_000 * CATEGORIES.index((category_1, category_2)) + rng.randint(0, 99)
        rows.append([entry.video_id, category_1, category_2, rng.randint(1, 200), task_id])
    rng.shuffle(rows)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["video_id", "category_1", "category_2", "rank", "task_id"])
        writer.writerows(rows)
    return path


def _write_captions_json(path: Path, entries: Sequence[_Entry], rng: random.Random) -> Path:
    """One line, like the real file: NaN tokens allowed, raw UTF-8, and a raw invalid byte pair."""
    records = [(e.video_id, e.captions) for e in entries if e.captions is not None]
    rng.shuffle(records)
    text = json.dumps(dict(records), ensure_ascii=False, allow_nan=True)
    path.write_bytes(text.encode("utf-8").replace(_INVALID_UTF8_SENTINEL.encode(), _INVALID_UTF8_BYTES))
    return path


# ---------------------------------------------------------------------------------------------- CLI


@dataclass(frozen=True, kw_only=True)
class SampleCollectionArgs:
    """Generate a small HowTo100M-style collection with real (ffmpeg lavfi) videos."""

    out: Path  # directory to create (absent or empty)
    num_good_videos: int = 12
    include_broken: bool = True
    include_fifo: bool = True
    seed: int = 0


def describe_collection(collection: SampleCollection) -> str:
    lines = [f"sample collection in {collection.root}", f"  good videos ({len(collection.good_ids)}):"]
    for video_id in collection.good_ids:
        names = " -> ".join(s.name for s in collection.visual_segments[video_id])
        relative = collection.video_files[video_id].relative_to(collection.videos_dir)
        lines.append(f"    {video_id}  {relative}  {collection.durations_s[video_id]:.0f} s: {names}")
    lines.append(f"  expected failures ({len(collection.expected_failures)}):")
    lines += [f"    {video_id!r:16} {reason}" for video_id, reason in collection.expected_failures.items()]
    lines.append(f"  caption-only ids: {', '.join(collection.caption_only_ids) or '-'}")
    if "timeout" in collection.expected_failures.values():
        lines.append(
            "  note: the 'timeout' id is a FIFO; decode with a small timeout_s and do not copy videos/"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> SampleCollection:
    args = parse_config(SampleCollectionArgs, argv)
    spec = SampleCollectionSpec(
        num_good_videos=args.num_good_videos,
        include_broken=args.include_broken,
        include_fifo=args.include_fifo,
        seed=args.seed,
    )
    collection = generate_sample_collection(args.out, spec)
    print(describe_collection(collection))
    return collection


if __name__ == "__main__":
    main(sys.argv[1:])
