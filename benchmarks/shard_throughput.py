"""Sharding throughput: the naive ffmpeg baseline vs the project's decode (exact and fast) vs the whole job.

    .venv/bin/python benchmarks/shard_throughput.py [--seconds-per-video 90] [--videos-per-kind 2] [--gpu]

Generates (or reuses, in --corpus-dir) a fixed corpus: per kind `videos_per_kind` files of
`seconds_per_video` s of moving test pattern with temporal noise (testsrc2 + noise, bitrates of typical
uploads). Then, per kind, on the same files and `cores` processes at a time (one video per core):
  (a) naive:  `ffmpeg -i X -vf fps=1 -q:v 3 frames/%05d.jpg` (every frame decoded, frame threads, files);
  (b) decode: `pipelines.video.decode_frames_at_1fps` alone, "exact" and the default "fast" mode;
  (c) job:    the whole sharding job (Ray, JPEG, tar, manifest) on a local Ray cluster of `cores` CPUs.
It prints seconds of video per CPU-second (user + sys of the benchmarked processes and their ffmpeg
children) per kind and overall, the ratios (b)/(a) and (c)/(a), peak RSS, and checks that (b) and (c)
give the naive frame count per video with timestamps within 0.25 s of the naive frame times (i / fps).
It writes benchmarks/results/shard_throughput.json (schema shard_throughput/v1, read by the capacity plan).
With --gpu it also times the fast decode with decoder="nvdec" (`cores` videos at once on one GPU) and
reports video-seconds per GPU-second (wall). CPU figures are noisy on a shared machine: rerun to compare.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import ray
from PIL import Image

from pipelines.cli import parse_config
from pipelines.sharding.job import RayConfig, ShardingConfig, run_sharding_job
from pipelines.sharding.plan import ShardLayoutConfig, SourceConfig
from pipelines.video import DecodeConfig, DecodedVideo, decode_frames_at_1fps, naive_ffmpeg_command

RESULTS = Path(__file__).parent / "results" / "shard_throughput.json"
TIMESTAMP_TOLERANCE_S = 0.25


@dataclass(frozen=True, kw_only=True)
class CorpusKind:
    container: str  # "mp4" (H.264) or "webm" (VP9)
    width: int
    height: int
    fps: int
    bitrate: str  # target video bitrate, like a typical upload of that size
    bframes: int = 3  # H.264 only
    variable_frame_rate: bool = False  # second half keeps every 3rd frame (30 -> 10 fps)


KINDS = {
    # HowTo100M's videos are mostly 240p-360p
    "h264_240p_bframes_30fps": CorpusKind(container="mp4", width=426, height=240, fps=30, bitrate="400k"),
    "h264_360p_bframes_30fps": CorpusKind(container="mp4", width=640, height=360, fps=30, bitrate="700k"),
    "h264_720p_bframes_30fps": CorpusKind(container="mp4", width=1280, height=720, fps=30, bitrate="2000k"),
    "h264_360p_bframes_60fps": CorpusKind(container="mp4", width=640, height=360, fps=60, bitrate="1000k"),
    "h264_720p_no_bframes_25fps": CorpusKind(
        container="mp4", width=1280, height=720, fps=25, bitrate="1500k", bframes=0
    ),
    "h264_360p_vfr": CorpusKind(
        container="mp4", width=640, height=360, fps=30, bitrate="600k", variable_frame_rate=True
    ),
    "vp9_360p_25fps": CorpusKind(container="webm", width=640, height=360, fps=25, bitrate="600k"),
}


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    corpus_dir: Path = Path(tempfile.gettempdir()) / "shard_throughput_corpus"  # reused when present
    seconds_per_video: int = 90
    videos_per_kind: int = 2
    cores: int = 0  # processes at a time; 0 = all of this machine's
    kinds: tuple[str, ...] = ()  # () = all of KINDS
    job: bool = True  # also run the whole sharding job (c)
    gpu: bool = False  # also time decoder="nvdec" (needs an NVIDIA GPU)
    results: Path = RESULTS  # where the JSON goes ("" = do not write)


@dataclass(kw_only=True)
class Measurement:
    video_seconds: float = 0.0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    frames: dict[str, list[float]] = field(default_factory=dict)  # video name -> sample times (s)
    output_bytes: int = 0  # tar bytes written (the job)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Seconds of video per CPU-second."""
        return self.video_seconds / self.cpu_seconds if self.cpu_seconds else 0.0


# -------------------------------------------------------------------------------------------- corpus


def corpus_files(config: BenchmarkConfig, kind: str) -> list[Path]:
    recipe = KINDS[kind]
    folder = config.corpus_dir / f"{config.seconds_per_video}s"
    return [folder / f"{kind}-{index}.{recipe.container}" for index in range(config.videos_per_kind)]


def make_corpus(config: BenchmarkConfig, kinds: list[str]) -> None:
    missing = [
        (path, KINDS[kind], index)
        for kind in kinds
        for index, path in enumerate(corpus_files(config, kind))
        if not path.exists()
    ]
    if missing:
        print(f"encoding {len(missing)} corpus files into {config.corpus_dir} ...", flush=True)
    with ThreadPoolExecutor(max_workers=_cores(config)) as pool:
        for future in [pool.submit(_encode, path, recipe, index, config) for path, recipe, index in missing]:
            future.result()


def _encode(path: Path, recipe: CorpusKind, seed: int, config: BenchmarkConfig) -> None:
    encode_corpus_video(path, recipe, seconds=config.seconds_per_video, seed=seed)


def encode_corpus_video(
    path: Path, recipe: CorpusKind, *, seconds: int, seed: int = 0, pattern: str = "testsrc2"
) -> None:
    """Encode `seconds` of lavfi `pattern` (testsrc2 moves; smptebars is static) + temporal noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size_and_rate = f"size={recipe.width}x{recipe.height}:rate={recipe.fps}"
    source = f"{pattern}={size_and_rate},noise=alls=6:allf=t:all_seed={seed}"
    if recipe.variable_frame_rate:
        source += f",select='if(lt(t,{seconds / 2}),1,not(mod(n,3)))'"
    if recipe.container == "webm":
        codec = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", recipe.bitrate]
    else:
        codec = ["-c:v", "libx264", "-preset", "veryfast", "-b:v", recipe.bitrate, "-bf", str(recipe.bframes)]
    rate_mode = ["-fps_mode", "vfr"] if recipe.variable_frame_rate else []  # else mp4 refills the gaps
    partial = path.with_suffix(".part" + path.suffix)
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source]
    command += ["-t", str(seconds), *codec, "-g", str(5 * recipe.fps), "-pix_fmt", "yuv420p"]
    subprocess.run([*command, *rate_mode, "-threads", "1", str(partial)], check=True)
    partial.rename(path)


def _cores(config: BenchmarkConfig) -> int:
    return config.cores or os.cpu_count() or 1


def _video_seconds(path: Path) -> float:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        check=True,
    )
    return float(probe.stdout)


# ------------------------------------------------------------------------------------ (a) the baseline


def measure_naive(files: list[Path], cores: int) -> Measurement:
    """One naive ffmpeg per video, `cores` at a time; CPU and peak RSS from each process's own rusage."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="naive-") as scratch:
        folders = [Path(scratch) / path.stem for path in files]
        for folder in folders:
            folder.mkdir()
        commands = [naive_ffmpeg_command(path, folder) for path, folder in zip(files, folders, strict=True)]
        with ThreadPoolExecutor(max_workers=cores) as pool:
            usages = list(pool.map(run_and_measure, commands))
        wall = time.monotonic() - started
        frames = {
            path.name: [float(i) for i in range(len(list(folder.glob("*.jpg"))))]
            for path, folder in zip(files, folders, strict=True)
        }
    return Measurement(
        video_seconds=sum(_video_seconds(path) for path in files),
        cpu_seconds=sum(cpu for cpu, _ in usages),
        wall_seconds=wall,
        peak_rss_mib=max(rss for _, rss in usages),
        frames=frames,
    )


def run_and_measure(command: list[str]) -> tuple[float, float]:
    """Run `command`; (its CPU seconds, user + sys; its peak RSS in MiB), from wait4's rusage."""
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


# --------------------------------------------------------------------------------- (b) decode function


@dataclass(frozen=True, kw_only=True)
class DecodeRun:
    path: Path
    decoded: DecodedVideo
    cpu_seconds: float  # the pool worker's and its ffmpeg children's user + sys during this decode
    ffmpeg_rss_mib: float  # the largest ffmpeg/ffprobe child of the worker so far


def _decode_one(path: Path, config: DecodeConfig) -> DecodeRun:
    """In a pool worker (fresh per measurement, so its children's peak RSS is this run's)."""
    before = _own_and_children_cpu_seconds()
    decoded = decode_frames_at_1fps(path, config)
    return DecodeRun(
        path=path,
        decoded=decoded,
        cpu_seconds=_own_and_children_cpu_seconds() - before,
        ffmpeg_rss_mib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )


def _own_and_children_cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_decode(
    files: list[Path], cores: int, config: DecodeConfig
) -> tuple[Measurement, list[DecodeRun]]:
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=cores) as pool:
        runs = list(pool.map(_decode_one, files, [config] * len(files)))
    measurement = Measurement(
        video_seconds=sum(run.decoded.duration_s for run in runs),
        cpu_seconds=sum(run.cpu_seconds for run in runs),
        wall_seconds=time.monotonic() - started,
        # ffmpeg only: a pool worker is a fork of this process (Ray, numpy loaded), not a shard task.
        peak_rss_mib=max(run.ffmpeg_rss_mib for run in runs),
        frames={run.path.name: run.decoded.timestamps_s for run in runs},
        notes={
            "paths": sorted({run.decoded.decode_path for run in runs}),
            "max_lag_s": round(max(run.decoded.max_frame_lag_s for run in runs), 3),
        },
    )
    return measurement, runs


def mean_abs_pixel_difference(first: list[DecodeRun], second: list[DecodeRun]) -> float:
    """Mean |RGB difference| (0..255) between two decodes of the same files, frame by frame."""
    differences = []
    for a, b in zip(first, second, strict=True):
        for jpeg_a, jpeg_b in zip(a.decoded.jpegs, b.decoded.jpegs, strict=False):
            image_a = np.asarray(Image.open(io.BytesIO(jpeg_a)).convert("RGB"), dtype=np.float32)
            image_b = np.asarray(Image.open(io.BytesIO(jpeg_b)).convert("RGB"), dtype=np.float32)
            differences.append(float(np.abs(image_a - image_b).mean()))
    return float(np.mean(differences)) if differences else 0.0


# -------------------------------------------------------------------------------------- (c) the job


def measure_job(files: list[Path], kind: str, scratch: Path, ray_address: str) -> Measurement:
    source = _job_source(files, scratch / kind)
    out = scratch / kind / "out"
    summary = run_sharding_job(
        ShardingConfig(
            source=source,
            out=str(out),
            layout=ShardLayoutConfig(videos_per_shard=1),  # one shard task per video: one video per core
            ray=RayConfig(ray_address=ray_address),
        )
    )
    rows = pads.dataset(out / "manifest", format="parquet").to_table().to_pylist()
    samples = _sample_timestamps(out)
    return Measurement(
        video_seconds=summary.run_video_seconds,
        cpu_seconds=summary.run_cpu_seconds,
        wall_seconds=summary.run_wall_seconds,
        peak_rss_mib=summary.peak_task_rss_mib,
        output_bytes=sum(path.stat().st_size for path in (out / "shards").glob("*.tar")),
        frames={
            f"{row['video_id']}": samples.get(row["video_id"], []) for row in rows if row["status"] == "ok"
        },
        notes={
            "failed": [row["video_id"] for row in rows if row["status"] != "ok"],
        },
    )


def _job_source(files: list[Path], folder: Path) -> SourceConfig:
    folder.mkdir(parents=True, exist_ok=True)
    videos = folder / "videos"
    videos.mkdir(exist_ok=True)
    captions = {}
    with (folder / "HowTo100M_v1.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "category_1", "category_2", "rank", "task_id"])
        for index, path in enumerate(files):
            link = videos / path.name
            if not link.exists():
                link.symlink_to(path)
            writer.writerow([path.stem, "Benchmark", "Corpus", index + 1, 100_000 + index])
            captions[path.stem] = {"start": [0.0], "end": [5.0], "text": ["benchmark corpus video"]}
    (folder / "caption.json").write_text(json.dumps(captions))
    return SourceConfig(
        videos=str(videos), metadata=str(folder / "HowTo100M_v1.csv"), captions=str(folder / "caption.json")
    )


def _sample_timestamps(out: Path) -> dict[str, list[float]]:
    found = {}
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    sample = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    found[sample["video_id"]] = sample["frame_timestamps_s"]
    return found


# ------------------------------------------------------------------------------------------- checks


def frame_mismatches(naive: Measurement, other: Measurement, *, key=lambda name: name) -> list[str]:
    """Videos whose frame count differs from the naive one, or whose sample i is > 0.25 s from i/fps."""
    problems = []
    for name, naive_times in naive.frames.items():
        times = other.frames.get(key(name))
        if times is None:
            problems.append(f"{name}: missing")
        elif len(times) != len(naive_times):
            problems.append(f"{name}: {len(times)} frames, naive {len(naive_times)}")
        elif any(abs(a - b) > TIMESTAMP_TOLERANCE_S for a, b in zip(times, naive_times, strict=True)):
            problems.append(f"{name}: a timestamp is > {TIMESTAMP_TOLERANCE_S} s off")
    return problems


# --------------------------------------------------------------------------------------------- main


def run(config: BenchmarkConfig) -> dict:
    kinds = list(config.kinds or KINDS)
    cores = _cores(config)
    make_corpus(config, kinds)
    fast, exact = DecodeConfig(), DecodeConfig(decode_mode="exact")
    per_kind: dict[str, dict[str, Measurement]] = {}
    report: dict[str, dict] = {}
    scratch = Path(tempfile.mkdtemp(prefix="shard-throughput-"))
    if config.job:
        ray.init(
            address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False
        )  # our own cluster
    try:
        for kind in kinds:
            files = corpus_files(config, kind)
            naive = measure_naive(files, cores)
            exact_m, exact_results = measure_decode(files, cores, exact)
            fast_m, fast_results = measure_decode(files, cores, fast)
            measurements = {"naive": naive, "exact": exact_m, "decode": fast_m}
            if config.job:
                measurements["job"] = measure_job(files, kind, scratch, ray_address="")
            if config.gpu:
                gpu_m, _ = measure_decode(files, cores, replace(fast, decoder="nvdec"))
                measurements["gpu"] = gpu_m
            per_kind[kind] = measurements
            report[kind] = {
                "mad_fast_vs_exact": mean_abs_pixel_difference(exact_results, fast_results),
                "mismatches": {
                    "decode": frame_mismatches(naive, fast_m),
                    "exact": frame_mismatches(naive, exact_m),
                    **(
                        {"job": frame_mismatches(naive, measurements["job"], key=lambda n: Path(n).stem)}
                        if config.job
                        else {}
                    ),
                },
                "fast_paths": fast_m.notes,
            }
            print_kind(kind, measurements, report[kind], cores)
    finally:
        if config.job:
            ray.shutdown()  # the local cluster this run started, nothing else
        shutil.rmtree(scratch, ignore_errors=True)
    result = results_json(per_kind, cores, config)
    print_overall(per_kind, result)
    if config.results != Path(""):  # "" parses as Path(".")
        config.results.parent.mkdir(parents=True, exist_ok=True)
        config.results.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {config.results}")
    return result


def _total(per_kind: dict[str, dict[str, Measurement]], name: str) -> Measurement:
    total = Measurement()
    for measurements in per_kind.values():
        if name in measurements:
            m = measurements[name]
            total.video_seconds += m.video_seconds
            total.cpu_seconds += m.cpu_seconds
            total.wall_seconds += m.wall_seconds
            total.peak_rss_mib = max(total.peak_rss_mib, m.peak_rss_mib)
    return total


def task_peak_rss_mib(measurements: dict[str, Measurement]) -> float:
    """A shard task's peak: its Ray worker's (the job's summary) + its ffmpeg child's (the fast decode's)."""
    return measurements["decode"].peak_rss_mib + (
        measurements["job"].peak_rss_mib if "job" in measurements else 0
    )


def print_kind(kind: str, measurements: dict[str, Measurement], checks: dict, cores: int) -> None:
    naive = measurements["naive"].rate
    line = [f"{kind:28s}"]
    for name, m in measurements.items():
        rate = m.rate if name != "gpu" else m.video_seconds / m.wall_seconds
        unit = "video-s/GPU-s" if name == "gpu" else "video-s/CPU-s"
        line.append(
            f"{name} {rate:6.1f} {unit} (x{rate / naive:.2f}, {m.wall_seconds:.1f} s wall, {m.peak_rss_mib:.0f} MiB)"
        )
    print("\n  ".join(line))
    print(
        f"  fast vs exact: mean |pixel diff| {checks['mad_fast_vs_exact']:.2f}/255, paths {checks['fast_paths']}"
    )
    for name, problems in checks["mismatches"].items():
        print(f"  {name} frames vs naive: {problems or 'OK'}")


def print_overall(per_kind: dict[str, dict[str, Measurement]], result: dict) -> None:
    cpu = result["cpu"]
    naive = cpu["naive"]["video_seconds_per_cpu_second"]
    print(
        "overall (video-s per CPU-s): "
        + ", ".join(
            f"{k} {v['video_seconds_per_cpu_second']:.1f} (x{v['video_seconds_per_cpu_second'] / naive:.2f})"
            for k, v in cpu.items()
        )
    )
    print(f"peak RSS per task {result['peak_rss_mib_per_task']:.0f} MiB; gpu {result['gpu']}")


def results_json(per_kind: dict[str, dict[str, Measurement]], cores: int, config: BenchmarkConfig) -> dict:
    names = ["naive", "exact", "decode", *(["job"] if config.job else [])]
    totals = {name: _total(per_kind, name) for name in names}
    gpu = None
    if config.gpu:
        gpu_total = _total(per_kind, "gpu")
        gpu = {
            "device": _gpu_name(),
            "video_seconds_per_gpu_second": gpu_total.video_seconds / gpu_total.wall_seconds,
        }
    return {
        "schema": "shard_throughput/v1",
        "measured_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{cores}-core {platform.machine()} (shared, noisy)",
        "cores": cores,
        "cpu": {name: {"video_seconds_per_cpu_second": round(m.rate, 2)} for name, m in totals.items()},
        "per_kind": {
            kind: {name: round(m.rate, 2) for name, m in measurements.items() if name in names}
            for kind, measurements in per_kind.items()
        },
        "peak_rss_mib_per_task": round(max(task_peak_rss_mib(m) for m in per_kind.values()), 1),
        "output_bytes_per_video_second": _output_bytes_per_video_second(per_kind),
        "gpu": gpu,
    }


def _output_bytes_per_video_second(per_kind: dict[str, dict[str, Measurement]]) -> float:
    """Tar bytes the job wrote per second of video (0.0 without the job)."""
    jobs = [m["job"] for m in per_kind.values() if "job" in m]
    video_seconds = sum(job.video_seconds for job in jobs)
    return round(sum(job.output_bytes for job in jobs) / video_seconds, 1) if video_seconds else 0.0


def _gpu_name() -> str:
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, check=False
    )
    return result.stdout.decode().strip().splitlines()[0] if result.returncode == 0 else "unknown NVIDIA GPU"


def main() -> None:
    run(parse_config(BenchmarkConfig))


if __name__ == "__main__":
    main()
