"""How a shard task should read a video on object storage: spool it to local disk, or stream it over HTTP.

    .venv/bin/python benchmarks/video_access.py [--seconds 120] [--repeats 3] [--latency-ms 30]

Generates one H.264 mp4 with its moov index at the END (ffmpeg's default, as most HowTo100M files are:
a reader must seek to the end before it can decode), uploads it to a moto S3 server on loopback and runs
the reads the sharding decode makes (ffprobe of streams, ffprobe of packet times, the 1 fps decode):
  (a) spool: download the object to a temp file (one GET), then the three reads on the file;
  (b) http:  the three reads on a presigned URL (ffmpeg's http protocol, Range requests when it seeks).
It prints the wall seconds of each (median of --repeats), the ratio http/spool, and the number of HTTP
requests ffmpeg made, and an estimate for a real store: loopback has no latency, so each request is
charged --latency-ms (S3's time to first byte is typically 10-50 ms) on top of the measured time.

The presigned URL in (b) is in ffmpeg's argv: acceptable here (fake moto credentials on loopback), and
exactly what the job must never do (other users can read /proc/*/cmdline). The job spools.

Measured on the shared 2-core development machine (moto on loopback, 640x360 30 fps at 1 Mbit/s, median of 3):

    video   size     spool   http    http/spool  HTTP requests, MB read   est. at 30 ms + 200 Mbit/s
    120 s   15.1 MB  2.94 s  3.07 s  1.04        9 requests, 30.3 MB      3.58 s vs 4.56 s: 1.27
    300 s   37.7 MB  5.29 s  5.43 s  1.03        9 requests, 75.5 MB      6.82 s vs 8.72 s: 1.28
    (a first 120 s run gave 4.11 s vs 3.59 s, 0.87; a 300 s run beside other tests 8.03 s vs 7.57 s, 0.94)

Streaming is no faster even where the network is free: the decode is CPU-bound and reads the file about
twice (the packet scan and the decode each read it all), so over HTTP it moves 2.0x the bytes of the one
download; with a real store's latency and a task's share of bandwidth it is ~1.3x slower, and it needs a
signing proxy to keep credentials out of ffmpeg's argv. So the job spools (pipelines/sharding/video_spool.py).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.s3_server import LocalS3Server, S3ServerConfig
from pipelines.cli import parse_config
from pipelines.storage import S3Storage, open_storage

BUCKET = "video-access-bench"


@dataclass(frozen=True, kw_only=True)
class VideoAccessArgs:
    """Spool vs HTTP streaming of one mp4 (moov at the end) from an S3-compatible server on loopback."""

    seconds: int = 120  # length of the generated video
    repeats: int = 3  # runs of each access path; the median is reported
    latency_ms: float = 30.0  # charged per HTTP request ffmpeg makes, for the real-store estimate
    task_mbit_s: float = 200.0  # one task's share of a node's network (e.g. 25 Gbit/s over 64 tasks is ~400)


def make_video(path: Path, seconds: int) -> None:
    """testsrc2 + temporal noise at a typical upload's bitrate; no +faststart, so the moov is at the end."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
         "-vf", "noise=alls=12:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1M",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip


def decode_reads(source: str) -> list[list[str]]:
    """The three reads `pipelines.video.decode_frames_at_1fps` makes of a file, on `source` (path or URL)."""
    return [
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", source],
        ["ffprobe", "-v", "error", "-select_streams", "0", "-show_entries", "packet=pts_time",
         "-print_format", "json", source],
        ["ffmpeg", "-v", "error", "-skip_frame", "bidir", "-i", source, "-vf", "fps=1,scale=-2:224",
         "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "-"],
    ]  # fmt: skip


def run_reads(source: str, *, count_requests: bool = False) -> tuple[int, int]:
    """Run the reads; if asked, returns (HTTP requests, bytes read) from ffmpeg's debug log, else (0, 0)."""
    requests = bytes_read = 0
    for args in decode_reads(source):
        if count_requests:
            args = [args[0], "-loglevel", "debug", *args[3:]]  # drop "-v error" for the request lines
        result = subprocess.run(args, capture_output=True, check=True)
        requests += result.stderr.count(b"request: GET")
        bytes_read += sum(int(n) for n in re.findall(rb"Statistics: (\d+) bytes read", result.stderr))
    return requests, bytes_read


def timed(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def spool_then_read(url: str, key: str, folder: Path) -> None:
    storage = open_storage(url)
    path = folder / "spooled.mp4"
    try:
        storage.download_file(key, path)
        run_reads(str(path))
    finally:
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_config(VideoAccessArgs, argv)
    with tempfile.TemporaryDirectory() as scratch, LocalS3Server(S3ServerConfig(bucket=BUCKET)) as server:
        os.environ.update(server.env())
        video = Path(scratch) / "moov-at-end.mp4"
        make_video(video, args.seconds)
        bucket = open_storage(f"s3://{BUCKET}")
        assert isinstance(bucket, S3Storage)
        bucket.upload_file("videos/v.mp4", video)
        presigned = bucket.presigned_get_url("videos/v.mp4", expires_s=3600)
        spool_s = timed(
            lambda: spool_then_read(f"s3://{BUCKET}", "videos/v.mp4", Path(scratch)), args.repeats
        )
        http_s = timed(lambda: run_reads(presigned), args.repeats)
        requests, http_bytes = run_reads(presigned, count_requests=True)
        video_bytes = video.stat().st_size
    results = {
        "video_mb": video_bytes / 1e6,
        "spool_s": spool_s,
        "http_s": http_s,
        "http_over_spool": http_s / spool_s,
        "http_requests": float(requests),
        "http_mb_read": http_bytes / 1e6,
    }
    # On loopback transfer and latency are ~free: charge what a real store would add to each path.
    bytes_per_s = args.task_mbit_s * 1e6 / 8
    spool_real = spool_s + args.latency_ms / 1000 + video_bytes / bytes_per_s
    http_real = http_s + requests * args.latency_ms / 1000 + http_bytes / bytes_per_s
    results["estimated_http_over_spool"] = http_real / spool_real
    print(
        f"{args.seconds} s video ({video_bytes / 1e6:.1f} MB): spool {spool_s:.2f} s, http {http_s:.2f} s "
        f"(http/spool {http_s / spool_s:.2f}) on loopback; ffmpeg made {requests} HTTP requests reading "
        f"{http_bytes / 1e6:.1f} MB (spool: 1 GET, {video_bytes / 1e6:.1f} MB). At {args.latency_ms:.0f} ms a "
        f"request and {args.task_mbit_s:.0f} Mbit/s a task: spool {spool_real:.2f} s, http {http_real:.2f} s "
        f"(http/spool {http_real / spool_real:.2f})",
        flush=True,
    )
    return results


if __name__ == "__main__":
    main()
