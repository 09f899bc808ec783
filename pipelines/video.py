"""Probe a video with ffprobe and decode it at a fixed rate (default 1 frame per second) into JPEG bytes.

One `ffprobe` and one `ffmpeg` child process per video, built with ffmpeg-python and
run without a shell (paths are passed as `file:` arguments, so spaces, a leading '-' or a ':' in a name
are harmless). Every failure is a `VideoDecodeError` whose `reason` is one of `FAILURE_REASONS`, stable
enough for a manifest.

Frame sampling and timestamps. The filter chain is `fps=fps=F:round=up:start_time=0 -> scale -> setsar=1
-> showinfo`. `start_time=0` pins output frame n to t = n/F on the file's timeline (the timeline ASR
captions use: ffmpeg subtracts the container start time, and a late-starting video stream is padded with
its first frame). `round=up` makes output frame n the latest source frame whose presentation time is
<= n/F, i.e. the frame on screen at that instant (the default `round=near` would show the frame on screen
half an output interval later). The timestamps we return are read back from `showinfo` (the pts of every
frame that left the filter graph), not computed, and their count must equal the number of JPEGs in the
pipe, so a frame dropped or duplicated on the way to the muxer is caught instead of shifting the timeline.

Decode paths (`DecodeConfig.decode_mode`). Decoding is ~95% of the cost (1 frame in 30 is scaled and
encoded), so the "fast" default does not decode B-frames (`-skip_frame bidir`, which also drops other
non-reference frames). Only frames that no decoded frame refers to are dropped (x264's B-pyramid
references are B-frames themselves), so no image is damaged; the tests bound the pixel difference on
static patterns. The sample at t = n/F is then the latest *decoded* frame at or before n/F, up to a few
source frames (~0.1 s at 30 fps with 3 B-frames) older than the exact one. The ffprobe that reads the
streams also lists the packet timestamps of the first 30 s (a demux pass, no decoding): in decode order a
B-frame is one shown before an earlier-decoded frame, so the frames left after skipping are known, and if a
sample would lag its slot by more than `max_frame_lag_s` (0.25 s: low frame rates, long B-frame runs,
variable frame rate) the video is decoded exactly. A `showinfo` before `fps` logs every decoded frame's
time, and the same bound is checked on what was really decoded; a miss means an exact re-decode ("exact_fallback"). Streams
without B-frames (VP9, baseline H.264: ffprobe's has_b_frames = 0) are decoded exactly at once. "exact"
decodes every frame. `decoder="nvdec"` decodes on an NVIDIA GPU (ffmpeg's `-hwaccel cuda`; frames come
back to system memory for fps/scale/JPEG).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import os
import re
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import ffmpeg

from pipelines.config_values import PositiveFloat

FAILURE_REASONS = (
    "missing_file",
    "empty_file",
    "not_a_video",
    "truncated",
    "no_video_stream",
    "too_short",
    "decode_error",
    "timeout",
)

# A decode that covers less than this fraction of the declared video duration, while ffmpeg logged errors
# (or exited non-zero), is "truncated": a cut download keeps its header (duration, sample tables) but the
# demuxer hits end-of-file early and says so ("partial file", "Invalid NAL unit size", ...). Requiring
# errors keeps files whose header merely over-states the duration (no error, just fewer frames) out of it.
TRUNCATION_COVERAGE = 0.9

# Container formats that ffprobe "parses" but that are not videos (still images, ANSI text).
_NON_VIDEO_FORMATS = ("image2", "tty")
DECODE_MODES = ("fast", "exact")
DECODERS = ("cpu", "nvdec")
_DETAIL_MAX_CHARS = 300


class VideoDecodeError(Exception):
    """A video that cannot be turned into frames; `reason` is one of FAILURE_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown failure reason {reason!r}; expected one of {FAILURE_REASONS}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray/multiprocessing pickle exceptions by re-calling __init__ with self.args; ours takes two.
        return (type(self), (self.reason, self.detail))


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    fps: PositiveFloat = 1.0  # frames emitted per second of video
    short_side: int = 224  # resize so the shorter side is this (keep aspect, even dims); 0 = keep source size
    jpeg_quality: int = 3  # ffmpeg mjpeg -q:v (2 best .. 31 worst)
    # wall-clock limit for one video's probe+decode; the ffmpeg process is killed
    timeout_s: PositiveFloat = 600.0
    min_duration_s: float = 1.0  # shorter videos fail with "too_short"
    ffmpeg_threads: int = 1  # one video per core is the throughput-optimal layout on a CPU cluster; 0 = auto
    decode_mode: str = "fast"  # "fast": skip B-frames where samples stay within max_frame_lag_s; "exact"
    max_frame_lag_s: float = 0.25  # fast mode: most a sample's source frame may precede its slot time (s)
    decoder: str = "cpu"  # "nvdec": NVIDIA GPU decode (ffmpeg -hwaccel cuda); fails clearly without one

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.short_side < 0 or self.short_side % 2:
            raise ValueError(
                f"short_side must be 0 (keep size) or a positive even number, got {self.short_side}"
            )
        if not 2 <= self.jpeg_quality <= 31:
            raise ValueError(f"jpeg_quality is ffmpeg's -q:v and must be in 2..31, got {self.jpeg_quality}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.min_duration_s < 0:
            raise ValueError(f"min_duration_s must be >= 0, got {self.min_duration_s}")
        if self.ffmpeg_threads < 0:
            raise ValueError(
                f"ffmpeg_threads must be >= 0 (0 = let ffmpeg choose), got {self.ffmpeg_threads}"
            )
        if self.decode_mode not in DECODE_MODES:
            raise ValueError(f"decode_mode must be one of {DECODE_MODES}, got {self.decode_mode!r}")
        if not 0 <= self.max_frame_lag_s < 1 / self.fps:
            raise ValueError(
                f"max_frame_lag_s must be in [0, 1/fps) = [0, {1 / self.fps:g}), got {self.max_frame_lag_s}"
            )
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")


@dataclass(frozen=True, kw_only=True)
class VideoInfo:
    """What ffprobe says about a file's (first non-cover-art) video stream."""

    duration_s: float  # of the video stream; falls back to the container's; nan when neither is declared
    width: int  # stored size, before any rotation metadata is applied
    height: int
    fps: float  # average frame rate; 0.0 when unknown
    codec: str
    has_audio: bool
    container_duration_s: float  # nan when not declared
    stream_index: int = 0  # absolute index of the video stream in the container
    reorders_frames: bool = False  # decode order != display order (B-frames): what the fast path can skip


@dataclass(frozen=True, kw_only=True)
class DecodedVideo:
    info: VideoInfo
    jpegs: list[bytes]  # one JPEG per sampled frame
    timestamps_s: list[float]  # presentation time (s, on the file's timeline) of each frame, ascending
    width: int  # of the emitted frames
    height: int
    duration_s: float  # decoded duration: what the frames cover (use for clipping captions)
    decode_seconds: float  # wall time spent on probe + decode
    decode_path: str = "exact"  # "fast" (B-frames skipped), "exact", or "exact_fallback" (fast would lag)
    max_frame_lag_s: float = 0.0  # largest gap between a sample's slot time and its source frame's time

    @property
    def num_frames(self) -> int:
        return len(self.jpegs)


# ---------------------------------------------------------------------------------------------- probe


def probe_video(path: str | os.PathLike, *, timeout_s: float = 60.0) -> VideoInfo:
    """ffprobe `path`; raises VideoDecodeError (missing_file, empty_file, not_a_video, no_video_stream, timeout)."""
    return _probe(os.fspath(path), with_packets=False, timeout_s=timeout_s)[0]


def _probe(path: str, *, with_packets: bool, timeout_s: float) -> tuple[VideoInfo, dict[str, Any]]:
    """VideoInfo and ffprobe's whole answer, which with `with_packets` also lists the times of the packets
    in the first PACKET_WINDOW_S seconds: one ffprobe per video, for what the fast path needs."""
    _check_file_is_readable(path)
    result = _run_with_timeout(_ffprobe_args(path, with_packets), timeout_s=timeout_s, program="ffprobe")
    if result.returncode != 0:
        raise VideoDecodeError("not_a_video", _last_error_line(result.stderr, "ffprobe failed"))
    probe = json.loads(result.stdout.decode("utf-8", errors="replace"))
    return _video_info_from_probe(probe), probe


def _check_file_is_readable(path: str) -> None:
    try:
        file_stat = os.stat(path)  # a FIFO is not opened here; ffprobe blocks on it and times out
    except FileNotFoundError:
        raise VideoDecodeError("missing_file", f"no such file: {path}") from None
    except OSError as error:  # a dangling symlink, a path through a non-directory, EACCES on a parent
        raise VideoDecodeError("missing_file", f"cannot stat {path}: {error.strerror}") from None
    if stat.S_ISREG(file_stat.st_mode) and file_stat.st_size == 0:
        raise VideoDecodeError("empty_file", f"file is 0 bytes: {path}")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError("decode_error", f"file is not readable (permissions): {path}")


# The fast path predicts from packet times whether skipping B-frames keeps samples within the lag bound,
# which the file's opening shows (frame rate, B-frame runs); the decode itself checks every frame. Listing
# every packet would cost ~0.05 CPU-s per 90 s of video (~0.2 at HowTo100M's ~400 s), a window ~0.006.
PACKET_WINDOW_S = 30


def _ffprobe_args(path: str, with_packets: bool) -> list[str]:
    packets = ["-show_entries", "packet=stream_index,pts_time", "-read_intervals", f"%+{PACKET_WINDOW_S}"]
    return [
        "ffprobe", "-hide_banner", "-v", "error", "-print_format", "json",
        "-show_format", "-show_streams", *(packets if with_packets else []), _ffmpeg_file_url(path),
    ]  # fmt: skip


def _ffmpeg_file_url(path: str) -> str:
    # Without the protocol prefix ffmpeg would read "concat:x" or "pipe:1" as protocols, not file names.
    return "file:" + os.path.abspath(path)


def _video_info_from_probe(probe: dict[str, Any]) -> VideoInfo:
    streams = probe.get("streams", [])
    container = probe.get("format", {})
    if (
        container.get("format_name", "").endswith("_pipe")
        or container.get("format_name") in _NON_VIDEO_FORMATS
    ):
        raise VideoDecodeError("not_a_video", f"container format is {container.get('format_name')!r}")
    video = _first_video_stream(streams)
    if video is None:
        kinds = sorted({s.get("codec_type", "?") for s in streams}) or ["none"]
        raise VideoDecodeError("no_video_stream", f"streams present: {', '.join(kinds)}")
    container_duration = _parse_seconds(container.get("duration"))
    return VideoInfo(
        duration_s=_stream_duration(video, container_duration),
        width=int(video.get("width", 0)),
        height=int(video.get("height", 0)),
        fps=_parse_rate(video.get("avg_frame_rate")) or _parse_rate(video.get("r_frame_rate")),
        codec=str(video.get("codec_name", "unknown")),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        container_duration_s=container_duration,
        stream_index=int(video["index"]),
        reorders_frames=int(video.get("has_b_frames", 0) or 0) > 0,
    )


def _first_video_stream(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    for stream in streams:
        # Cover art in an .m4a/.mp3 is a one-picture "video" stream flagged attached_pic.
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get("attached_pic"):
            return stream
    return None


def _stream_duration(stream: dict[str, Any], container_duration: float) -> float:
    """Seconds: the stream's `duration`, else Matroska's DURATION tag, else the container's duration."""
    tags = {key.lower(): value for key, value in stream.get("tags", {}).items()}
    for candidate in (_parse_seconds(stream.get("duration")), _parse_seconds(tags.get("duration"))):
        if math.isfinite(candidate) and candidate > 0:
            return candidate
    return container_duration


def _parse_seconds(value: object) -> float:
    """'12.345' or Matroska's '00:00:12.345000000' -> seconds; nan for missing/'N/A'."""
    if value is None:
        return math.nan
    text = str(value)
    try:
        if ":" in text:
            hours, minutes, seconds = text.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        return float(text)
    except ValueError:
        return math.nan


def _parse_rate(value: object) -> float:
    """'30000/1001' -> 29.97; '0/0', missing or malformed -> 0.0."""
    try:
        return float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError):
        return 0.0


# --------------------------------------------------------------------------------------------- decode


def decode_frames_at_1fps(path: str | os.PathLike, config: DecodeConfig = DecodeConfig()) -> DecodedVideo:
    """Probe and decode `path` to one JPEG per 1/config.fps seconds; raises VideoDecodeError."""
    started = time.monotonic()
    path_str = os.fspath(path)
    if config.decoder == "nvdec":
        require_nvdec()
    info, probe = _probe(path_str, with_packets=config.decode_mode == "fast", timeout_s=config.timeout_s)
    if info.duration_s < config.min_duration_s:
        raise VideoDecodeError("too_short", f"duration {info.duration_s:.3f} s < {config.min_duration_s} s")
    deadline = started + config.timeout_s
    decode_path = _choose_decode_path(info, probe, config)
    if decode_path == "fast":
        try:
            frames = _run_ffmpeg_decode(path_str, info, config, skip_bframes=True, deadline=deadline)
        except VideoDecodeError as error:
            if error.reason == "timeout":
                raise
            frames = None  # let the exact decode decide what is wrong with the file
        if frames is not None and frames.max_lag_s <= config.max_frame_lag_s:
            return _decoded_video(info, config, frames, started, "fast")
        decode_path = "exact_fallback"
    frames = _run_ffmpeg_decode(path_str, info, config, skip_bframes=False, deadline=deadline)
    return _decoded_video(info, config, frames, started, decode_path)


def _choose_decode_path(info: VideoInfo, probe: dict[str, Any], config: DecodeConfig) -> str:
    """ "exact" when asked or when there are no B-frames to skip; "exact_fallback" when the packet
    timestamps already show that skipping them would make a sample lag > max_frame_lag_s; else "fast"."""
    if config.decode_mode == "exact" or not info.reorders_frames:
        return "exact"
    reference_times = reference_frame_times(probe, info.stream_index)
    if reference_times:
        last_slot = int(reference_times[-1] * config.fps)
        slots = [n / config.fps for n in range(last_slot + 1)]
        if largest_sample_lag(slots, reference_times) > config.max_frame_lag_s:
            return "exact_fallback"
    return "fast"


def predicted_reference_frame_times(path: str, stream_index: int, *, deadline: float) -> list[float]:
    """The frames `-skip_frame bidir` still decodes in stream `stream_index` of `path` (see below)."""
    _, probe = _probe(path, with_packets=True, timeout_s=deadline - time.monotonic())
    return reference_frame_times(probe, stream_index)


def reference_frame_times(probe: dict[str, Any], stream_index: int) -> list[float]:
    """Display times (s, from the file's start) of the frames `-skip_frame bidir` still decodes, predicted
    from the packets alone: in decode order a B-frame is displayed before a frame decoded earlier, so the
    others are the packets whose time exceeds every earlier one. [] when a packet has no timestamp (the
    decode's own check then decides)."""
    packets = [p for p in probe.get("packets", []) if p.get("stream_index") == stream_index]
    times = [_parse_seconds(packet.get("pts_time")) for packet in packets]
    start = _parse_seconds(probe.get("format", {}).get("start_time"))
    if not times or not all(math.isfinite(t) for t in times):
        return []
    start = start if math.isfinite(start) else min(times)  # ffmpeg shifts the timeline by the start time
    references, latest = [], -math.inf
    for time_s in times:
        if time_s > latest:
            references.append(time_s - start)
            latest = time_s
    return references


@dataclass(frozen=True, kw_only=True)
class _FfmpegFrames:
    jpegs: list[bytes]
    timestamps_s: list[float]
    max_lag_s: float  # 0.0 for an exact decode


def _run_ffmpeg_decode(
    path: str, info: VideoInfo, config: DecodeConfig, *, skip_bframes: bool, deadline: float
) -> _FfmpegFrames:
    args = _ffmpeg_decode_args(path, info.stream_index, config, skip_bframes=skip_bframes)
    result = _run_with_timeout(args, timeout_s=deadline - time.monotonic(), program="ffmpeg")
    stderr = result.stderr.decode("utf-8", errors="replace")
    jpegs = split_concatenated_jpegs(result.stdout)
    _raise_for_failed_decode(info, config, result.returncode, stderr, num_frames=len(jpegs))
    timestamps = _showinfo_timestamps(stderr, _SAMPLED)
    if len(timestamps) != len(jpegs):
        raise VideoDecodeError(
            "decode_error",
            f"{len(jpegs)} JPEGs in the pipe but {len(timestamps)} frames left the filter graph",
        )
    lag = largest_sample_lag(timestamps, _showinfo_timestamps(stderr, _DECODED)) if skip_bframes else 0.0
    return _FfmpegFrames(jpegs=jpegs, timestamps_s=timestamps, max_lag_s=lag)


def _decoded_video(
    info: VideoInfo, config: DecodeConfig, frames: _FfmpegFrames, started: float, decode_path: str
) -> DecodedVideo:
    width, height = jpeg_size(frames.jpegs[0])
    return DecodedVideo(
        info=info,
        jpegs=frames.jpegs,
        timestamps_s=frames.timestamps_s,
        width=width,
        height=height,
        duration_s=_decoded_duration(info, len(frames.jpegs), config.fps),
        decode_seconds=time.monotonic() - started,
        decode_path=decode_path,
        max_frame_lag_s=frames.max_lag_s,
    )


def largest_sample_lag(sample_times_s: list[float], decoded_times_s: list[float]) -> float:
    """Seconds: max over samples of (slot time - time of the latest decoded frame at or before it).

    The fps filter (round=up) fills slot t with the latest frame whose time is <= t, so with frames skipped
    that frame may be older than the exact one by up to this lag. Slots before the first decoded frame are
    padding with the first frame, as in an exact decode, and do not count.
    """
    decoded = sorted(decoded_times_s)
    largest = 0.0
    for slot in sample_times_s:
        index = bisect.bisect_right(decoded, slot + _TIME_EPSILON_S)
        if index:
            largest = max(largest, slot - decoded[index - 1])
    return largest


_TIME_EPSILON_S = 1e-6  # showinfo prints times rounded to microseconds
_SAMPLED, _DECODED = "sampled", "decoded"  # showinfo instance names: after fps, and before it (fast mode)


def _ffmpeg_decode_args(
    path: str, stream_index: int, config: DecodeConfig, *, skip_bframes: bool
) -> list[str]:
    input_options: dict[str, object] = {"threads": config.ffmpeg_threads}
    if skip_bframes:
        input_options["skip_frame"] = "bidir"  # B-frames and other non-reference frames are not decoded
    if config.decoder == "nvdec":
        input_options["hwaccel"] = "cuda"  # decoded frames are copied back to system memory
    video = ffmpeg.input(_ffmpeg_file_url(path), **input_options)[str(stream_index)]
    if skip_bframes:  # every decoded frame's time, to bound how far a sample lags (no checksums: cheap)
        video = video.filter(f"showinfo@{_DECODED}", checksum=0)
    # See the module docstring for why round=up and start_time=0.
    video = video.filter("fps", fps=_rate_expression(config.fps), round="up", start_time=0)
    if config.short_side:
        landscape_or_square = "gte(iw,ih)"  # evaluated on the (auto-rotated) frames, not on probe metadata
        video = video.filter(
            "scale",
            w=f"if({landscape_or_square},-2,{config.short_side})",  # -2: keep aspect, round to even
            h=f"if({landscape_or_square},{config.short_side},-2)",
        )
        video = video.filter("setsar", "1")  # the even rounding leaves a ~1.0005 SAR; the pixels are square
    output = video.filter(f"showinfo@{_SAMPLED}").output(
        "pipe:",
        format="image2pipe",
        vcodec="mjpeg",
        threads=config.ffmpeg_threads,
        **{"q:v": config.jpeg_quality},
        **fps_mode_output_kwargs("passthrough"),  # one JPEG per filtered frame: no muxer-side dup/drop
    )
    global_args = ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"]
    global_args += ["-filter_threads", str(max(config.ffmpeg_threads, 1))]
    return ["ffmpeg", *global_args, *output.get_args()]


def naive_ffmpeg_command(
    path: str | os.PathLike, frames_dir: str | os.PathLike, *, fps: float = 1.0
) -> list[str]:
    """The common baseline (CLIP4Clip's preprocessing, video2dataset): every frame decoded, frame threads,
    one JPEG file per sample. For benchmarks only; it samples with fps's default rounding (nearest)."""
    pattern = os.path.join(os.fspath(frames_dir), "%05d.jpg")
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", _ffmpeg_file_url(os.fspath(path)),
        "-vf", f"fps={_rate_expression(fps)}", "-q:v", "3", pattern,
    ]  # fmt: skip


@functools.cache
def require_nvdec() -> None:
    """Raise RuntimeError unless ffmpeg has the CUDA hwaccel and this machine has an NVIDIA GPU."""
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")):
        raise RuntimeError(
            'decoder="nvdec" needs an NVIDIA GPU and its driver on this machine (no /dev/nvidiactl); '
            'use decoder="cpu" here'
        )
    hwaccels = _run_with_timeout(["ffmpeg", "-hide_banner", "-hwaccels"], timeout_s=30, program="ffmpeg")
    if b"cuda" not in hwaccels.stdout.split():
        raise RuntimeError(
            'decoder="nvdec" needs an ffmpeg built with CUDA hwaccel (`ffmpeg -hwaccels` lists no "cuda")'
        )


def _rate_expression(fps: float) -> str:
    return str(Fraction(fps).limit_denominator(1_000_000))  # "1", "1/2", "30000/1001"


@functools.cache
def _ffmpeg_major_minor() -> tuple[int, int]:
    """(major, minor) of the ffmpeg on PATH; (99, 0) for git builds whose version string has no number."""
    banner = _run_with_timeout(["ffmpeg", "-hide_banner", "-version"], timeout_s=30, program="ffmpeg")
    match = re.search(rb"ffmpeg version n?(\d+)\.(\d+)", banner.stdout)
    return (int(match[1]), int(match[2])) if match else (99, 0)


def fps_mode_output_kwargs(mode: str) -> dict[str, str]:
    """ffmpeg-python output kwargs selecting the frame-rate mode ('passthrough', 'vfr', 'cfr').

    `-fps_mode` replaced the deprecated `-vsync` in ffmpeg 5.1; older builds (4.x) only know `-vsync`.
    """
    option = "fps_mode" if _ffmpeg_major_minor() >= (5, 1) else "vsync"
    return {option: mode}


def _raise_for_failed_decode(
    info: VideoInfo, config: DecodeConfig, returncode: int, stderr: str, *, num_frames: int
) -> None:
    error_lines = _ffmpeg_error_lines(stderr)
    covered_s = num_frames / config.fps  # an upper bound: the last frame stands for up to 1/fps seconds
    had_errors = returncode != 0 or bool(error_lines)
    last_error = error_lines[-1] if error_lines else f"ffmpeg exited with status {returncode}"
    # With no frame at all nothing distinguishes a cut file from an undecodable one: decode_error.
    if num_frames and had_errors and covered_s < TRUNCATION_COVERAGE * info.duration_s:
        raise VideoDecodeError(
            "truncated",
            f"decoded {covered_s:.1f} s of a declared {info.duration_s:.1f} s; {_shorten(last_error)}",
        )
    if returncode != 0 or num_frames == 0:
        raise VideoDecodeError(
            "decode_error", _shorten(last_error if had_errors else "ffmpeg emitted no frames")
        )
    if covered_s < config.min_duration_s:
        raise VideoDecodeError("too_short", f"decoded {num_frames} frames, < {config.min_duration_s} s")


def _decoded_duration(info: VideoInfo, num_frames: int, fps: float) -> float:
    """Seconds the frames cover: n/fps, capped by the declared duration (the last frame covers < 1/fps)."""
    covered_s = num_frames / fps
    return min(covered_s, info.duration_s) if math.isfinite(info.duration_s) else covered_s


_SHOWINFO_PTS_TIME = re.compile(
    r"\[showinfo@(\w+) @ .*?\bn:\s*\d+\s+pts:\s*-?\d+\s+pts_time:\s*(-?[0-9.eE+-]+)"
)
_LOG_LEVEL_PREFIX = re.compile(r"\[(fatal|error|panic)\]")


def _showinfo_timestamps(stderr: str, instance: str) -> list[float]:
    """pts_time (s) of every frame the showinfo filter named `instance` logged, in log order."""
    return [float(match[2]) for match in _SHOWINFO_PTS_TIME.finditer(stderr) if match[1] == instance]


def _ffmpeg_error_lines(stderr: str) -> list[str]:
    """Lines ffmpeg logged at error level or worse (the `level` log flag tags each line)."""
    return [line.strip() for line in stderr.splitlines() if _LOG_LEVEL_PREFIX.search(line)]


def _last_error_line(stderr: bytes, fallback: str) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return _shorten(lines[-1] if lines else fallback)


def _shorten(text: str) -> str:
    text = re.sub(r" @ 0x[0-9a-f]+\]", "]", text)  # drop pointer addresses: stable details across runs
    return text if len(text) <= _DETAIL_MAX_CHARS else text[: _DETAIL_MAX_CHARS - 3] + "..."


# ---------------------------------------------------------------------------------------- processes


def _run_with_timeout(
    args: list[str], *, timeout_s: float, program: str
) -> subprocess.CompletedProcess[bytes]:
    """Run without a shell; on timeout the child is SIGKILLed and reaped (no zombie) before we raise.

    Its output goes to unlinked temporary files, read once it exits: through pipes, every log line and
    JPEG ffmpeg writes would wake this process (~4,500 wake-ups and 0.1-0.2 CPU-s for a 400 s video).
    """
    if timeout_s <= 0:
        raise VideoDecodeError("timeout", f"no time left for {program}")
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            # subprocess.run kills the child on TimeoutExpired or any other exception and waits for it.
            done = subprocess.run(
                args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise VideoDecodeError(
                "timeout", f"{program} did not finish within {timeout_s:.1f} s; killed"
            ) from None
        except FileNotFoundError as error:
            raise RuntimeError(
                f"{program} is not on PATH; install ffmpeg (e.g. apt-get install ffmpeg)"
            ) from error
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, stdout.read(), stderr.read())


# --------------------------------------------------------------------------------------------- JPEGs

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_MARKERS_WITHOUT_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0..7
_START_OF_FRAME = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def split_concatenated_jpegs(stream: bytes) -> list[bytes]:
    """Split back-to-back JPEG files (ffmpeg's image2pipe output) by walking their marker segments.

    Segment lengths are followed rather than searching for the EOI bytes FF D9, which may legally
    occur inside a table or comment segment; inside entropy-coded data FF is always stuffed (FF 00).
    """
    jpegs = []
    start = 0
    while start < len(stream):
        end = _end_of_jpeg(stream, start)
        jpegs.append(stream[start:end])
        start = end
    return jpegs


def _end_of_jpeg(data: bytes, start: int) -> int:
    if data[start : start + 2] != b"\xff\xd8":
        raise VideoDecodeError("decode_error", f"ffmpeg output has no JPEG start marker at byte {start}")
    position = start + 2
    while True:
        position = _skip_fill_bytes(data, position)
        marker = data[position + 1]
        if marker == _EOI:
            return position + 2
        if marker in _MARKERS_WITHOUT_LENGTH:
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == _SOS:
            position = _end_of_entropy_coded_data(data, position)


def _skip_fill_bytes(data: bytes, position: int) -> int:
    """Position of the FF that starts the next marker (FF may be repeated as fill)."""
    if position + 1 >= len(data) or data[position] != 0xFF:
        raise VideoDecodeError(
            "decode_error", f"corrupt or incomplete JPEG in ffmpeg output at byte {position}"
        )
    while data[position + 1] == 0xFF:
        position += 1
        if position + 1 >= len(data):
            raise VideoDecodeError("decode_error", "incomplete JPEG at the end of ffmpeg output")
    return position


def _end_of_entropy_coded_data(data: bytes, position: int) -> int:
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            raise VideoDecodeError("decode_error", "incomplete JPEG scan at the end of ffmpeg output")
        follower = data[position + 1]
        if follower == 0xFF:  # fill byte before a marker
            position += 1
        elif follower == 0x00 or 0xD0 <= follower <= 0xD7:  # stuffed FF or restart marker
            position += 2
        else:
            return position


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment."""
    position = 2
    while position + 9 <= len(jpeg):
        position = _skip_fill_bytes(jpeg, position)
        marker = jpeg[position + 1]
        if marker in _START_OF_FRAME:
            height = int.from_bytes(jpeg[position + 5 : position + 7], "big")
            width = int.from_bytes(jpeg[position + 7 : position + 9], "big")
            return width, height
        if marker in _MARKERS_WITHOUT_LENGTH:
            position += 2
        else:
            position += 2 + int.from_bytes(jpeg[position + 2 : position + 4], "big")
    raise VideoDecodeError("decode_error", "JPEG without a start-of-frame segment in ffmpeg output")


__all__ = [
    "DECODERS",
    "DECODE_MODES",
    "FAILURE_REASONS",
    "TRUNCATION_COVERAGE",
    "DecodeConfig",
    "DecodedVideo",
    "VideoDecodeError",
    "VideoInfo",
    "decode_frames_at_1fps",
    "fps_mode_output_kwargs",
    "jpeg_size",
    "largest_sample_lag",
    "naive_ffmpeg_command",
    "predicted_reference_frame_times",
    "probe_video",
    "require_nvdec",
    "split_concatenated_jpegs",
]
