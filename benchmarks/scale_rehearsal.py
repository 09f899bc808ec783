"""A dress rehearsal of sharding HowTo100M-380k at a fraction of full size, on this machine, output on S3.

    .venv/bin/python benchmarks/scale_rehearsal.py                          # --scales 0.02 0.1
    .venv/bin/python benchmarks/scale_rehearsal.py --scales 0.05 0.25 --shards-run 4   # the committed run: 0.05 0.25
    .venv/bin/python benchmarks/scale_rehearsal.py --sources s3             # sources uploaded to the server
    .venv/bin/python benchmarks/scale_rehearsal.py --tiny                   # < 1 min; tests/test_scale_rehearsal.py

Per size (`scale` = fraction of the full run), it generates a HowTo100M-shaped source under
`work_dir`: `HowTo100M_v1.csv` in the real column layout (1.22M rows x scale, 380k x scale of them in
"Food and Entertaining"), a `caption.json` (written streamed) with a record for every CSV id, as
HowTo100M's has (`--captions-for selected`: the selected ids only), at HowTo100M's density (~110 segments
of ~4 words; ~4 GB at scale 1), and a videos folder with one symlink per selected id into a small pool
of real H.264 files (240p and 360p, B-frames). The output (plan, shards, manifest)
goes to a loopback moto S3 server (infra/s3_server.py). With `--sources s3` the sources are uploaded
there too (real bytes for the ids of the shards that run, zero-byte objects for the rest: moto holds
objects in memory) and the planner gets s3:// URLs; a build whose planner refuses them says so in one
line and skips the stages that need a plan.

Each stage runs in a fresh process, so its peak RSS (ru_maxrss) is that stage's alone; object-store
requests are counted by a botocore `before-send` hook on the clients pipelines/storage.py makes:

  plan           the job's planning: caption indexing, CSV, listing videos, selection, plan.parquet
                 (load_or_create_plan), with the time of each step
  shards         `shards_run` real shards (process_shard, as shard_in_process runs them): video-s per CPU-s;
                 with `--sources s3` also the same shards from the local copies of the sources
                 (`shards_local_sources`), alternated, and the S3/local ratio per CPU-second
  resume_read    the manifest a resumed job reads when no consolidated file covers any part (a crash
                 before the job's first periodic rewrite of manifest.parquet): every part, concurrently
                 (the parts of the shards not run are copies of a real part with the shard rewritten)
  summary        the end of a fresh job over the full count of parts: the rows its tasks returned are in
                 memory (built before the clock starts), one LIST per 1000 parts checks them, then
                 manifest.parquet, summarize, summary.json
  train_startup  the training stream's start-up for `ranks` ranks x `loader_workers` workers: manifest
                 read + shard split (ClipStream and its first epoch's loader); the time is the slowest
                 rank's (ranks start in parallel on a cluster), requests are all ranks'

Scaled stages run `repeats` times per size, the fastest counting. With two sizes it fits each scaled
figure linearly (a + b x scale) and extrapolates it to the full run (scale 1), the seconds also
proportionally from the larger size, then compares the slower reading with the goals: planning <= 5 min and <= 4 GiB, summary and training
start-up <= 30 s each. Results: benchmarks/results/scale_rehearsal.json. Run by hand, not in CI: the
figures depend on the machine (and on its other load).
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipelines.cli import parse_config

FULL_CSV_ROWS = 1_220_000
FULL_SELECTED = 380_000
CATEGORY = "Food and Entertaining"
OTHER_CATEGORIES = ("Hobbies and Crafts", "Home and Garden", "Sports and Fitness", "Cars & Other Vehicles")
WORDS = ("cut", "the", "onion", "add", "salt", "stir", "pan", "heat", "oil", "mix", "bowl", "water", "slowly",
         "then", "now", "we", "you", "it", "and", "so", "just", "little", "bit", "going", "to")  # fmt: skip
RESULTS = Path(__file__).parent / "results" / "scale_rehearsal.json"
REPO = Path(__file__).resolve().parents[1]
STAGE_NAMES = ("plan", "shards", "resume_read", "summary", "train_startup")
SCALED_STAGES = ("plan", "resume_read", "summary", "train_startup")  # `shards` runs a fixed number of shards
GOALS = {  # stage: (seconds, peak RSS MiB or None); resume_read has none (it is the case the job avoids)
    "plan": (300.0, 4096.0),
    "summary": (30.0, None),
    "train_startup": (30.0, None),
}


@dataclass(frozen=True, kw_only=True)
class RehearsalConfig:
    """A dress rehearsal of HowTo100M-380k sharding at a fraction of full size (see the module docstring)."""

    scales: tuple[float, ...] = (0.02, 0.1)  # fractions of the full run; two or more give an extrapolation
    repeats: int = 2  # runs of each scaled stage per size; the fastest counts (the machine may be shared)
    shards_run: int = 2  # real shards sharded per size
    videos_per_shard: int = 32  # the job's default: ~12k shards at full size
    segments_per_video: int = 110  # caption segments per caption.json record (HowTo100M: ~110)
    words_per_segment: int = 4
    pool_videos: int = 4  # distinct real video files the ids point at
    pool_seconds: int = 20
    ranks: int = 8
    loader_workers: int = 4
    batch_size: int = 32  # clips per rank per step
    captions_for: Literal["all", "selected"] = "all"  # caption.json records: every CSV id (as HowTo100M's)
    sources: Literal["local", "s3"] = "local"
    work_dir: Path = Path(tempfile.gettempdir()) / "scale_rehearsal"  # generated sources; removed per size
    results: Path = RESULTS  # "" = do not write
    tiny: bool = False  # seconds: two tiny sizes, 1 shard of 4 videos of 3 s (what the test runs)


def tiny(config: RehearsalConfig) -> RehearsalConfig:
    return replace(config, scales=(0.001, 0.002), repeats=1, shards_run=1, videos_per_shard=4,
                   segments_per_video=6, pool_videos=1, pool_seconds=3, batch_size=4)  # fmt: skip


# --------------------------------------------------------------------------------------------- sources


def selected_count(scale: float) -> int:
    return max(8, round(FULL_SELECTED * scale))


def video_ids(scale: float) -> tuple[list[str], list[str]]:
    """(selected ids, other CSV ids): distinct 11-character YouTube-shaped ids, deterministic."""
    rng = random.Random(1234)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    total = max(selected_count(scale) + 8, round(FULL_CSV_ROWS * scale))
    ids: set[str] = set()
    while len(ids) < total:
        ids.add("".join(rng.choices(alphabet, k=11)))
    ordered = sorted(ids)
    rng.shuffle(ordered)
    selected = selected_count(scale)
    return sorted(ordered[:selected]), ordered[selected:]


def write_csv(path: Path, selected: list[str], others: list[str]) -> None:
    """HowTo100M_v1.csv's header and row shape: video_id,category_1,category_2,rank,task_id."""
    rng = random.Random(5)
    rows = [(video_id, CATEGORY) for video_id in selected] + [
        (v, rng.choice(OTHER_CATEGORIES)) for v in others
    ]
    rng.shuffle(rows)
    with open(path, "w") as file:
        file.write("video_id,category_1,category_2,rank,task_id\n")
        for video_id, category in rows:
            file.write(f"{video_id},{category},Recipes,{rng.randint(1, 200)},{rng.randint(1, 23000)}\n")


def caption_records(config: RehearsalConfig, variants: int = 64) -> list[str]:
    """`variants` distinct record bodies {"start": [...], "end": [...], "text": [...]} at HowTo100M's density
    (ids take them in turn: the file is written at disk speed, and the scan sees the real byte volume)."""
    rng = random.Random(7)
    records = []
    for _ in range(variants):
        starts = sorted(
            round(rng.uniform(0, config.pool_seconds), 2) for _ in range(config.segments_per_video)
        )
        ends = [round(start + rng.uniform(1, 6), 2) for start in starts]
        texts = [" ".join(rng.choices(WORDS, k=config.words_per_segment)) for _ in starts]
        records.append(json.dumps({"start": starts, "end": ends, "text": texts}, separators=(",", ":")))
    return records


def write_caption_json(path: Path, selected: list[str], records: list[str]) -> None:
    """Streamed: one record at a time, never the whole file in memory (several GB at full size)."""
    with open(path, "w", buffering=1 << 20) as file:
        file.write("{")
        for index, video_id in enumerate(selected):
            file.write(("," if index else "") + json.dumps(video_id) + ":" + records[index % len(records)])
        file.write("}")


def make_pool(folder: Path, count: int, seconds: int) -> list[Path]:
    """Real H.264 files with B-frames at HowTo100M's sizes (240p, 360p), with audio; reused when present."""
    folder.mkdir(parents=True, exist_ok=True)
    pool = []
    for index in range(count):
        width, height = ((426, 240), (640, 360))[index % 2]
        path = folder / f"pool-{index}-{seconds}s.mp4"
        if not path.exists():
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                 f"testsrc2=s={width}x{height}:r=30:d={seconds},noise=alls=20:allf=t+u", "-f", "lavfi",
                 "-i", f"sine=d={seconds}", "-c:v", "libx264", "-bf", "3", "-b:v", "500k", "-preset",
                 "veryfast", "-c:a", "aac", "-shortest", str(path)],
                check=True,
            )  # fmt: skip
        pool.append(path)
    return pool


def video_key(video_id: str) -> str:
    return f"{video_id[0]}/{video_id}.mp4"  # 64 sub-folders, as a downloaded collection might be split


def generate(config: RehearsalConfig, scale: float, src: Path) -> dict:
    """The local sources under `src`: CSV, caption.json, videos/ (symlinks into the pool)."""
    started = time.monotonic()
    selected, others = video_ids(scale)
    src.mkdir(parents=True, exist_ok=True)
    write_csv(src / "HowTo100M_v1.csv", selected, others)
    captioned = selected if config.captions_for == "selected" else sorted(selected + others)
    write_caption_json(src / "caption.json", captioned, caption_records(config))
    pool = make_pool(config.work_dir / "pool", config.pool_videos, config.pool_seconds)
    for index, video_id in enumerate(selected):
        link = src / "videos" / video_key(video_id)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(pool[index % len(pool)])
    return {
        "csv_rows": len(selected) + len(others),
        "selected": len(selected),
        "caption_records": len(captioned),
        "csv_bytes": (src / "HowTo100M_v1.csv").stat().st_size,
        "caption_json_bytes": (src / "caption.json").stat().st_size,
        "pool": [path.name for path in pool],
        "seconds": round(time.monotonic() - started, 2),
    }


def upload_sources(config: RehearsalConfig, src: Path, s3_src: str, selected: list[str]) -> float:
    """The sources as objects under `s3_src`: real bytes for the ids of the shards that run, zero-byte
    objects for the others (listed by the planner, never decoded). Returns the seconds it took."""
    from pipelines.storage import open_storage

    started = time.monotonic()
    storage = open_storage(s3_src)
    storage.upload_file("HowTo100M_v1.csv", src / "HowTo100M_v1.csv")
    storage.upload_file("caption.json", src / "caption.json")
    run = set(selected[: config.shards_run * config.videos_per_shard])  # the plan's first shards (sorted ids)

    def put(video_id: str) -> None:
        key = video_key(video_id)
        body = (src / "videos" / key).read_bytes() if video_id in run else b""
        storage.write_bytes(f"videos/{key}", body)

    with ThreadPoolExecutor(16) as threads:
        list(threads.map(put, selected))
    return round(time.monotonic() - started, 2)


# ---------------------------------------------------------------------------------------------- stages
# Each runs in a fresh process (`--stage NAME ARGS_JSON`) and prints one JSON line.


REQUESTS: dict[str, int] = {}  # this stage process's S3 requests by operation (count_s3_requests)


def count_s3_requests() -> dict[str, int]:
    """A botocore before-send hook on every client pipelines/storage.py makes from now on: HTTP requests
    sent (retries included), by operation; returns the live counts (REQUESTS)."""
    import pipelines.storage as storage

    counts = REQUESTS
    make = storage._make_s3_client

    def count(event_name: str, **_: object) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        counts[operation] = counts.get(operation, 0) + 1

    def counting_client(*args: Any, **kwargs: Any) -> Any:
        client = make(*args, **kwargs)
        client.meta.events.register("before-send.s3.*", count)
        return client

    storage._make_s3_client = counting_client
    return counts


def job_config(args: dict) -> Any:
    from pipelines.howto100m import SubsetConfig
    from pipelines.sharding.job import ShardingConfig
    from pipelines.sharding.plan import ShardLayoutConfig, SourceConfig

    src = args["src"]
    return ShardingConfig(
        source=SourceConfig(
            videos=f"{src}/videos", metadata=f"{src}/HowTo100M_v1.csv", captions=f"{src}/caption.json"
        ),
        out=args["out"],
        selection=SubsetConfig(subset="howto100m-380k"),
        layout=ShardLayoutConfig(videos_per_shard=args["videos_per_shard"]),
    )


def timed_steps(module: Any, names: tuple[str, ...]) -> dict[str, float]:
    """Wraps module.<name> for each name so each call's seconds add up in the returned dict."""
    seconds: dict[str, float] = {}

    def wrap(name: str, function: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] = round(seconds.get(name, 0.0) + time.monotonic() - started, 3)

        return timed

    for name in names:
        setattr(module, name, wrap(name, getattr(module, name)))
    return seconds


def stage_plan(args: dict) -> dict:
    import pipelines.sharding.plan as plan_module
    from pipelines.storage import open_storage

    if args.get("repeat"):  # a repeat plans afresh, beside the first plan (which the later stages use)
        args = {**args, "out": f"{args['out']}-repeat{args['repeat']}"}
    config = job_config(args)
    steps = timed_steps(plan_module, ("_caption_index", "read_source_metadata", "select_subset",
                                      "list_source_videos", "plan_to_bytes"))  # fmt: skip
    plan, created = plan_module.load_or_create_plan(
        open_storage(config.out), config.source, config.selection, config.decoding, config.layout
    )
    return {"videos": len(plan.videos), "shards": plan.num_shards, "created": created, "steps_s": steps,
            "planned_failures": sum(bool(v.planned_failure) for v in plan.videos)}  # fmt: skip


def stage_shards(args: dict) -> dict:
    """The first `shards_run` shards of the plan, each as a shard task does it (what shard_in_process runs),
    written under `shards_out` (default: the plan's output)."""
    from pipelines.sharding.job import shard_task_for
    from pipelines.sharding.plan import PLAN_KEY, plan_from_bytes
    from pipelines.sharding.shard_task import process_shard
    from pipelines.storage import open_storage

    config = job_config(args)
    plan = plan_from_bytes(open_storage(config.out).read_bytes(PLAN_KEY))
    storage = open_storage(args.get("shards_out") or config.out)
    reports = [
        process_shard(shard_task_for(plan, shard, config), storage) for shard in range(args["shards_run"])
    ]
    video_s, cpu_s = sum(r.video_seconds for r in reports), sum(r.cpu_seconds for r in reports)
    return {"videos_ok": sum(r.ok for r in reports), "videos_failed": sum(r.failed for r in reports),
            "video_seconds": round(video_s, 1), "cpu_seconds": round(cpu_s, 2),
            "video_s_per_cpu_s": round(video_s / cpu_s, 2) if cpu_s else 0.0,
            "ffmpeg_peak_rss_mib": _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)}  # fmt: skip


def stage_synthesise_parts(args: dict) -> dict:
    """A manifest part for every shard not run (not one of the measured stages)."""
    from pipelines.sharding.manifest import manifest_key, manifest_part_bytes
    from pipelines.storage import open_storage

    storage = open_storage(args["out"])
    tables, real = part_tables(storage, args["shards_run"])
    missing = [shard for shard in tables if shard not in real]
    with ThreadPoolExecutor(16) as threads:
        list(threads.map(lambda shard: storage.write_bytes(manifest_key(shard), manifest_part_bytes(tables[shard])),
                         missing))  # fmt: skip
    return {"parts": len(tables), "synthesised": len(missing), "real": len(real)}


def part_tables(storage: Any, shards_run: int) -> tuple[dict[int, Any], frozenset[int]]:
    """Every shard's manifest rows as its task returns them, and the shards the `shards` stage committed
    (the first `shards_run`): theirs are read, the others are a real part's rows with video_id, shard and
    key rewritten to the shard's planned videos."""
    import pyarrow as pa

    from pipelines.sharding.manifest import MANIFEST_SCHEMA, manifest_key, read_parts
    from pipelines.sharding.plan import PLAN_KEY, plan_from_bytes

    plan = plan_from_bytes(storage.read_bytes(PLAN_KEY))
    real = frozenset(range(min(shards_run, plan.num_shards)))
    read = dict(
        zip(sorted(real), read_parts(storage, [manifest_key(shard) for shard in sorted(real)]), strict=True)
    )
    template = read[min(real)].to_pylist()
    by_shard: dict[int, list[str]] = {}
    for video in plan.videos:
        by_shard.setdefault(video.shard, []).append(video.video_id)
    tables = {}
    for shard in range(plan.num_shards):
        if shard in read:
            tables[shard] = read[shard]
            continue
        rows = [{**template[i % len(template)], "video_id": video_id, "shard": plan.shard_key(shard),
                 "key": video_id} for i, video_id in enumerate(by_shard[shard])]  # fmt: skip
        tables[shard] = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    return tables, real


def stage_reset_summary(args: dict) -> dict:
    """The state a job's end finds: no consolidated manifest (none when a fresh run starts), no summary."""
    from pipelines.sharding.manifest import drop_consolidated_manifest
    from pipelines.sharding.summary import SUMMARY_KEY
    from pipelines.storage import open_storage

    storage = open_storage(args["out"])
    drop_consolidated_manifest(storage)
    storage.delete(SUMMARY_KEY)
    return {}


def stage_summary(args: dict) -> dict:
    """What run_sharding_job does once the tasks of a fresh run over every shard are done: the rows they
    returned are in memory (built before the clock starts), one LIST checks them, manifest.parquet,
    summarize, summary.json (the plan is the job's already)."""
    import pipelines.sharding.manifest as manifest_module
    from pipelines.sharding.plan import PLAN_KEY, plan_from_bytes
    from pipelines.sharding.summary import summarize
    from pipelines.storage import open_storage

    storage = open_storage(args["out"])
    plan = plan_from_bytes(storage.read_bytes(PLAN_KEY))
    committed, _ = part_tables(storage, args["shards_run"])
    REQUESTS.clear()  # count what the job's end sends, not this set-up
    before = manifest_module.ManifestSnapshot(table=manifest_module.MANIFEST_SCHEMA.empty_table(),
                                              parts=frozenset(), consolidated_current=False)  # fmt: skip
    steps = timed_steps(manifest_module, ("_part_keys", "read_parts", "manifest_with_committed",
                                          "write_consolidated_manifest"))  # fmt: skip
    started = time.monotonic()
    manifest = manifest_module.manifest_after_run(storage, before, committed)
    manifest_module.write_consolidated_manifest(storage, manifest)
    summary = summarize(storage, plan, manifest.table, [], wall_seconds=0.0)
    summary.save(storage)
    return {"seconds": round(time.monotonic() - started, 3), "steps_s": steps, "parts": len(manifest.parts),
            "manifest_rows": summary.manifest_rows, "complete_shards": summary.complete_shards}  # fmt: skip


def stage_resume_read(args: dict) -> dict:
    """The manifest a resumed run reads when no consolidated file covers any part (the worst case: a crash
    before the first of the job's periodic rewrites of manifest.parquet): every part, concurrently."""
    import pipelines.sharding.manifest as manifest_module
    from pipelines.storage import open_storage

    storage = open_storage(args["out"])
    steps = timed_steps(manifest_module, ("_part_keys", "_read_consolidated", "read_parts"))
    started = time.monotonic()
    manifest = manifest_module.load_manifest(storage)
    return {"seconds": round(time.monotonic() - started, 3), "steps_s": steps, "parts": len(manifest.parts),
            "manifest_rows": manifest.table.num_rows}  # fmt: skip


def stage_train_startup(args: dict) -> dict:
    """Every rank's start-up in turn (each its own ClipStream, as on its own node): the manifest read and
    the first epoch's split into `loader_workers` readers; the DataLoader's workers are not started."""
    import pipelines.training.stream as stream_module
    from pipelines.training.stream import ClipStream, DataPosition, StreamConfig

    steps = timed_steps(stream_module, ("read_manifest", "manifest_digest", "usable_shards", "epoch_clip_order",
                                        "plan_generation"))  # fmt: skip
    config = StreamConfig(
        shards=args["out"], num_workers=args["loader_workers"], batch_size=args["batch_size"]
    )
    per_rank = []
    for rank in range(args["ranks"]):
        started = time.monotonic()
        stream = ClipStream(config, no_tokenizer, rank=rank, world_size=args["ranks"])
        loader = stream.loader(DataPosition(epoch=0, batches_in_epoch=0, samples_seen=0))
        per_rank.append(time.monotonic() - started)
    return {"seconds": round(max(per_rank), 3), "all_ranks_s": round(sum(per_rank), 3), "ranks": args["ranks"],
            "steps_s_all_ranks": steps, "shards": len(stream.shards), "clips": stream.total_clips,
            "batches_per_rank": len(loader)}  # fmt: skip


def no_tokenizer(texts: list[str]) -> Any:
    raise AssertionError("start-up tokenizes nothing")


STAGES: dict[str, Callable[[dict], dict]] = {
    "plan": stage_plan,
    "shards": stage_shards,
    "synthesise_parts": stage_synthesise_parts,
    "reset_summary": stage_reset_summary,
    "resume_read": stage_resume_read,
    "summary": stage_summary,
    "train_startup": stage_train_startup,
}


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)  # ru_maxrss is in KiB on Linux


def stage_main(name: str, args_json: str) -> None:
    counts = count_s3_requests()
    started = time.monotonic()
    result = STAGES[name](json.loads(args_json))
    result.setdefault("seconds", round(time.monotonic() - started, 3))
    result["requests"] = sum(counts.values())
    result["requests_by_operation"] = dict(sorted(counts.items()))
    own = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_rss_mib"] = _mib(own.ru_maxrss)
    result["cpu_s"] = round(own.ru_utime + own.ru_stime, 2)  # the whole process, imports included
    print(json.dumps(result), flush=True)


def process_cpu_seconds(pid: int | None) -> float:
    """user + sys CPU seconds of a running process (the moto server), from /proc; 0 where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_stage(name: str, args: dict, env: dict[str, str], server_pid: int | None = None) -> dict:
    """`name` in a fresh process (its own peak RSS); adds the process's wall time with imports and the
    moto server's CPU seconds meanwhile (is the client or the server the bottleneck?)."""
    server_cpu = process_cpu_seconds(server_pid)
    started = time.monotonic()
    done = subprocess.run([sys.executable, __file__, "--stage", name, json.dumps(args)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"stage {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.monotonic() - started, 2)
    result["server_cpu_s"] = round(process_cpu_seconds(server_pid) - server_cpu, 2)
    return result


def measure(name: str, args: dict, env: dict[str, str], server_pid: int | None, repeats: int) -> dict:
    """The fastest of `repeats` runs of stage `name` (the summary starts each from a job's end state)."""
    runs: list[dict] = []
    for repeat in range(repeats):
        if name == "summary" and repeat:  # the first finds the state the shards left: parts, nothing else
            run_stage("reset_summary", args, env)
        runs.append(run_stage(name, {**args, "repeat": repeat}, env, server_pid))
    best = min(runs, key=lambda run: run["seconds"])
    return {**best, "repeat_seconds": [run["seconds"] for run in runs]}


# ------------------------------------------------------------------------------------------ the driver


def rehearse(config: RehearsalConfig, scale: float, server: Any) -> dict:
    """One size: generate its sources, run every stage, remove the sources again (the objects stay in moto)."""
    root = config.work_dir / f"scale-{scale:g}"
    shutil.rmtree(root, ignore_errors=True)
    s3_root = f"s3://{server.bucket}/scale-{scale:g}"
    made = generate(config, scale, root / "src")
    src = str(root / "src")
    if config.sources == "s3":
        os.environ.update(server.env())
        made["upload_seconds"] = upload_sources(config, root / "src", f"{s3_root}/src", video_ids(scale)[0])
        src = f"{s3_root}/src"
    args = {"src": src, "local_src": str(root / "src"), "out": f"{s3_root}/out", "videos_per_shard": config.videos_per_shard,
            "shards_run": config.shards_run, "ranks": config.ranks, "loader_workers": config.loader_workers,
            "batch_size": config.batch_size}  # fmt: skip
    try:
        stages = run_stages(config, args, {**os.environ, **server.env()}, server.pid)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    made["synthesised_parts"] = stages.pop("synthesise_parts", None)
    return {"scale": scale, "generated": made, "stages": stages}


def run_stages(config: RehearsalConfig, args: dict, env: dict[str, str], server_pid: int | None) -> dict:
    stages = {"plan": measure("plan", args, env, server_pid, config.repeats)}
    if args["src"].startswith("s3://"):
        stages.update(shards_from_both_sources(config, args, env, server_pid))
    else:
        stages["shards"] = run_stage("shards", args, env, server_pid)
    stages["synthesise_parts"] = run_stage("synthesise_parts", args, env, server_pid)
    stages["resume_read"] = measure("resume_read", args, env, server_pid, config.repeats)
    stages["summary"] = measure("summary", args, env, server_pid, config.repeats)
    stages["train_startup"] = measure("train_startup", args, env, server_pid, config.repeats)
    return stages


def shards_from_both_sources(
    config: RehearsalConfig, args: dict, env: dict[str, str], server_pid: int | None
) -> dict[str, dict]:
    """The same shards of the same plan from the S3 sources (`shards`) and from their local copies
    (`shards_local_sources`, written beside the output), alternated `repeats` times: the best rate of
    each, and their ratio (video-s per CPU-s of the task and its ffmpeg children; the server's CPU apart)."""
    local = {**args, "src": args["local_src"], "shards_out": f"{args['out']}-local-sources"}
    runs: dict[str, list[dict]] = {"shards": [], "shards_local_sources": []}
    for _ in range(config.repeats):  # a shard task redoes a committed shard whole, as a rerun does
        for name, stage_args in (("shards_local_sources", local), ("shards", args)):
            runs[name].append(run_stage("shards", stage_args, env, server_pid))
    best = {name: max(found, key=lambda run: run["video_s_per_cpu_s"]) for name, found in runs.items()}
    for name, found in runs.items():
        best[name]["repeat_rates"] = [run["video_s_per_cpu_s"] for run in found]
    local_rate = best["shards_local_sources"]["video_s_per_cpu_s"]
    best["shards"]["s3_vs_local_per_cpu_s"] = (
        round(best["shards"]["video_s_per_cpu_s"] / local_rate, 3) if local_rate else 0.0
    )
    return best


def print_size(result: dict) -> None:
    made = result["generated"]
    uploaded = f", uploaded to S3 in {made['upload_seconds']:.0f} s" if "upload_seconds" in made else ""
    print(f"\n== scale {result['scale']:g}: {made['csv_rows']} CSV rows, {made['selected']} selected, "
          f"caption.json {made['caption_records']} records, {made['caption_json_bytes'] / 2**20:.1f} MiB "
          f"(generated in {made['seconds']:.0f} s{uploaded})")  # fmt: skip
    print(
        f"{'stage':20s} {'seconds':>8s} {'CPU s':>7s} {'moto CPU s':>10s} {'peak RSS MiB':>12s} {'requests':>8s}  notes"
    )
    shown = ("seconds", "cpu_s", "server_cpu_s", "peak_rss_mib", "requests", "requests_by_operation")
    for name, stage in result["stages"].items():
        notes = {k: v for k, v in stage.items() if k not in (*shown, "process_wall_s")}
        print(f"{name:20s} {stage['seconds']:8.2f} {stage['cpu_s']:7.1f} {stage['server_cpu_s']:10.1f} "
              f"{stage['peak_rss_mib']:12.0f} {stage['requests']:8d}  {notes} {stage['requests_by_operation']}")  # fmt: skip


def linear_fit(points: list[tuple[float, float]], at: float = 1.0) -> float:
    """Least-squares a + b x through (x, y) points, evaluated at `at`."""
    n = len(points)
    mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y + slope * (at - mean_x)


def extrapolate(sizes: list[dict]) -> dict:
    """Each scaled stage at the full run: every figure fitted linearly over the sizes (a + b x scale), and its
    seconds also proportionally from the largest size (no fixed part: the pessimistic reading when the small
    size is noisy); the goal is judged on the larger of the two."""
    out = {}
    for name in SCALED_STAGES:
        measured = [(size["scale"], size["stages"][name]) for size in sizes if name in size["stages"]]
        if len(measured) < 2:
            continue
        fit: dict[str, Any] = {what: round(linear_fit([(scale, stage[what]) for scale, stage in measured]), 1)
               for what in ("seconds", "cpu_s", "server_cpu_s", "peak_rss_mib", "requests")}  # fmt: skip
        largest_scale, largest = max(measured, key=lambda point: point[0])
        fit["seconds_proportional"] = round(largest["seconds"] / largest_scale, 1)
        goal_s, goal_mib = GOALS.get(name, (None, None))
        fit["goal_seconds"], fit["goal_peak_rss_mib"] = goal_s, goal_mib
        slowest = max(fit["seconds"], fit["seconds_proportional"])
        fit["meets_goal"] = None if goal_s is None else (
            slowest <= goal_s and (goal_mib is None or fit["peak_rss_mib"] <= goal_mib))  # fmt: skip
        out[name] = fit
    return out


def print_extrapolation(extrapolation: dict) -> None:
    print("\n== full run (scale 1): linear fit over the sizes | proportional to the largest, vs the goals")
    print(f"{'stage':20s} {'seconds':>15s} {'goal':>5s} {'CPU s':>7s} {'moto CPU s':>10s} {'peak RSS MiB':>12s} "
          f"{'goal':>5s} {'requests':>8s}  ok")  # fmt: skip
    for name, fit in extrapolation.items():
        seconds = f"{fit['seconds']:.0f} | {fit['seconds_proportional']:.0f}"
        goal_mib = f"{fit['goal_peak_rss_mib']:.0f}" if fit["goal_peak_rss_mib"] else "-"
        goal_s = f"{fit['goal_seconds']:.0f}" if fit["goal_seconds"] else "-"
        verdict = {True: "yes", False: "NO", None: "-"}[fit["meets_goal"]]
        print(f"{name:20s} {seconds:>15s} {goal_s:>5s} {fit['cpu_s']:7.0f} {fit['server_cpu_s']:10.0f} "
              f"{fit['peak_rss_mib']:12.0f} {goal_mib:>5s} {fit['requests']:8.0f}  {verdict}")  # fmt: skip


def machine() -> str:
    import platform

    return f"{os.cpu_count()}-core {platform.machine()}, load average {os.getloadavg()[0]:.1f} at the start"


def run(config: RehearsalConfig) -> dict:
    from infra.s3_server import LocalS3Server, S3ServerConfig

    config = tiny(config) if config.tiny else config
    config.work_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"schema": "scale_rehearsal/v1", "measured_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": machine(), "config": json.loads(json.dumps(asdict(config), default=str)),
                    "sizes": []}  # fmt: skip
    with LocalS3Server(S3ServerConfig(bucket="rehearsal")) as server:
        for scale in sorted(set(config.scales)):
            report["sizes"].append(rehearse(config, scale, server))
            print_size(report["sizes"][-1])
    report["extrapolation"] = extrapolate(report["sizes"])
    if report["extrapolation"]:
        print_extrapolation(report["extrapolation"])
    if config.results != Path(""):  # "" parses as Path(".")
        config.results.parent.mkdir(parents=True, exist_ok=True)
        config.results.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {config.results}")
    return report


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--stage":
        stage_main(sys.argv[2], sys.argv[3])
        return
    run(parse_config(RehearsalConfig))


if __name__ == "__main__":
    main()
