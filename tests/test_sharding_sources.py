"""Sources on object storage: the sharding job reading --videos/--metadata/--captions from a real moto S3
server gives the output a run from local sources gives, builds the caption index once, resumes on a
byte-identical caption file, leaves no spooled file and never writes or prints a credential; its driver,
SIGKILLed mid-run and resumed, loses and duplicates no video."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from infra.local_ray import LocalRayConfig, LocalRayHead, _alive
from infra.s3_server import LocalS3Server
from infra.sample_collection import SampleCollectionSpec, generate_sample_collection
from pipelines.howto100m import SubsetConfig
from pipelines.sharding.caption_index_store import CAPTION_INDEX_KEY
from pipelines.sharding.in_process import shard_in_process
from pipelines.sharding.job import ShardingConfig
from pipelines.sharding.plan import (
    PLAN_KEY,
    PlanMismatchError,
    ShardLayoutConfig,
    SourceConfig,
    load_or_create_plan,
)
from pipelines.sharding.video_spool import SPOOL_FOLDER_NAME
from pipelines.storage import open_storage
from pipelines.video import DecodeConfig
from tests.sharding_checks import assert_complete_output, read_manifest_rows, tar_member_names
from tests.test_sharding_job import download_prefix, local_sources
from tests.test_sharding_resilience import keys_under, kill_hard, num_shards, start_driver, wait_for_keys

# Distinctive fake credentials (moto accepts any) so a leak anywhere is found by a plain substring search.
ACCESS_KEY_ID = "AKIASOURCESTEST7Q2X9"
SECRET_ACCESS_KEY = "src-secret-9f3a1c77e2b54d0a-never-print"


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory):
    """A small collection without the FIFO ("timeout" case): a FIFO cannot be uploaded."""
    spec = SampleCollectionSpec(num_good_videos=4, max_duration_s=6.0, include_fifo=False)
    return generate_sample_collection(tmp_path_factory.mktemp("s3src") / "collection", spec)


@pytest.fixture
def s3_sources(collection, s3_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SourceConfig:
    """The collection uploaded under `<s3_url>/src/`, distinctive credentials set, the spool under tmp_path."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the task spools videos
    (tmp_path / "tmp").mkdir()
    bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
    client = boto3.client("s3")
    for path in sorted(p for p in collection.root.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/src/{path.relative_to(collection.root).as_posix()}")
    return SourceConfig(
        videos=f"{s3_url}/src/videos",
        metadata=f"{s3_url}/src/{collection.metadata_csv.name}",
        captions=f"{s3_url}/src/{collection.captions_json.name}",
    )


def config(source: SourceConfig, out: str) -> ShardingConfig:
    return ShardingConfig(
        source=source,
        out=out,
        decoding=DecodeConfig(timeout_s=10.0),
        layout=ShardLayoutConfig(videos_per_shard=4),
    )


def comparable_rows(out_dir: Path, videos_location: str) -> list[tuple]:
    """Manifest rows without timings and attempts, the videos' location replaced by a placeholder."""
    rows = sorted(read_manifest_rows(out_dir), key=lambda row: row["video_id"])
    return [
        (row["video_id"], row["status"], row["reason"], row["detail"].replace(videos_location, "<videos>"),
         row["num_frames"], row["num_captions"], row["duration_s"])
        for row in rows
    ]  # fmt: skip


def assert_no_credentials(*texts: str, folder: Path) -> None:
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY):
        assert not any(secret in text for text in texts)
        leaking = [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert not leaking, leaking


def test_s3_sources_give_the_same_output_as_local_sources_and_leak_nothing(
    collection, s3_sources, s3_url, tmp_path, caplog, capsys
):
    caplog.set_level(logging.INFO)
    shard_in_process(config(local_sources(collection), str(tmp_path / "local")))
    reports = shard_in_process(config(s3_sources, f"{s3_url}/out"))
    assert sum(r.ok for r in reports) == len(collection.good_ids)
    from_s3 = download_prefix(f"{s3_url}/out", tmp_path / "from-s3")

    assert_complete_output(from_s3, collection)
    assert comparable_rows(from_s3, s3_sources.videos) == comparable_rows(
        tmp_path / "local", str(collection.videos_dir)
    )
    assert tar_member_names(from_s3) == tar_member_names(tmp_path / "local")
    assert (from_s3 / CAPTION_INDEX_KEY).is_file() and (from_s3 / PLAN_KEY).is_file()
    spool = tmp_path / "tmp" / SPOOL_FOLDER_NAME
    assert spool.is_dir() and not list(spool.iterdir())  # every spooled video and task folder removed
    captured = capsys.readouterr()
    assert_no_credentials(captured.out, captured.err, caplog.text, folder=from_s3)


def test_caption_index_is_built_once_and_reused_when_the_plan_is_made_again(s3_sources, s3_url, caplog):
    caplog.set_level(logging.INFO, logger="pipelines")
    out = open_storage(f"{s3_url}/out")
    args = (s3_sources, SubsetConfig(), DecodeConfig(), ShardLayoutConfig(videos_per_shard=4))
    plan, created = load_or_create_plan(out, *args)
    index_bytes = out.read_bytes(CAPTION_INDEX_KEY)
    assert created and "one streaming pass" in caplog.text
    caplog.clear()
    out.delete(PLAN_KEY)  # planning again (e.g. after a crash before the plan was written) ...
    time.sleep(1.1)  # ... so a rewrite would show in LastModified (second resolution)
    head_before = boto3.client("s3").head_object(**_bucket_key(f"{s3_url}/out/{CAPTION_INDEX_KEY}"))
    again, created_again = load_or_create_plan(out, *args)
    head_after = boto3.client("s3").head_object(**_bucket_key(f"{s3_url}/out/{CAPTION_INDEX_KEY}"))
    assert created_again and again == plan
    assert "reusing" in caplog.text and "one streaming pass" not in caplog.text
    assert head_after["LastModified"] == head_before["LastModified"]
    assert out.read_bytes(CAPTION_INDEX_KEY) == index_bytes


def test_a_byte_identical_caption_file_resumes_and_a_changed_one_is_refused(collection, tmp_path):
    captions = tmp_path / "caption.json"
    shutil.copyfile(collection.captions_json, captions)
    source = SourceConfig(
        videos=str(collection.videos_dir), metadata=str(collection.metadata_csv), captions=str(captions)
    )
    out = open_storage(str(tmp_path / "out"))
    args = (SubsetConfig(), DecodeConfig(), ShardLayoutConfig(videos_per_shard=4))
    plan, _ = load_or_create_plan(out, source, *args)
    captions.unlink()  # a restore from backup: same bytes, new inode and mtime
    shutil.copyfile(collection.captions_json, captions)
    os.utime(captions, ns=(time.time_ns() + 10**10, time.time_ns() + 10**10))
    resumed, created = load_or_create_plan(out, source, *args)
    assert not created and resumed == plan
    captions.write_bytes(captions.read_bytes().replace(b'"text"', b'"TEXT"', 1))  # same size, new bytes
    with pytest.raises(PlanMismatchError, match="captions_identity"):
        load_or_create_plan(out, source, *args)


def test_a_byte_identical_reupload_of_caption_json_resumes(collection, s3_sources, s3_url):
    out = open_storage(f"{s3_url}/out")
    args = (SubsetConfig(), DecodeConfig(), ShardLayoutConfig(videos_per_shard=4))
    plan, _ = load_or_create_plan(out, s3_sources, *args)
    boto3.client("s3").upload_file(str(collection.captions_json), **_bucket_key(s3_sources.captions))
    resumed, created = load_or_create_plan(out, s3_sources, *args)
    assert not created and resumed == plan


@pytest.mark.parametrize("broken", ["captions_object", "metadata_bucket", "videos_prefix"])
def test_a_missing_s3_source_stops_before_any_work_with_one_line(
    broken, s3_sources, s3_url, tmp_path, capsys
):
    from jobs.shard_howto100m import main

    flags = {"videos": s3_sources.videos, "metadata": s3_sources.metadata, "captions": s3_sources.captions}
    flag, flags[broken.split("_")[0]] = {
        "captions_object": ("--captions", f"{s3_url}/src/no-such-caption.json"),
        "metadata_bucket": ("--metadata", "s3://no-such-bucket-s3src/HowTo100M_v1.csv"),
        "videos_prefix": ("--videos", f"{s3_url}/src/no-videos-here"),
    }[broken]
    argv = [arg for name, url in flags.items() for arg in (f"--{name}", url)]
    code = main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert flag in err
    assert not (tmp_path / "out" / PLAN_KEY).exists()
    assert_no_credentials(err, folder=tmp_path)  # the job's log file is under tmp_path too


def _bucket_key(url: str) -> dict[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return {"Bucket": bucket, "Key": key}


def test_a_plan_that_recorded_size_and_mtime_still_resumes_until_the_file_is_touched(collection, tmp_path):
    from dataclasses import replace

    from pipelines.sharding.plan import config_digest, plan_from_bytes, plan_to_bytes

    source = local_sources(collection)
    out = open_storage(str(tmp_path / "out"))
    args = (SubsetConfig(), DecodeConfig(), ShardLayoutConfig(videos_per_shard=4))
    plan, _ = load_or_create_plan(out, source, *args)
    stat = collection.captions_json.stat()
    legacy_source = {k: v for k, v in plan.config["source"].items() if k != "captions_identity"}
    legacy_source |= {"captions_bytes": stat.st_size, "captions_mtime_ns": stat.st_mtime_ns}
    legacy_config = {**plan.config, "source": legacy_source}  # what plans made before content identity held
    legacy = replace(plan, config=legacy_config, digest=config_digest(legacy_config))
    out.write_bytes(PLAN_KEY, plan_to_bytes(legacy))
    resumed, created = load_or_create_plan(out, source, *args)
    assert not created and resumed == plan_from_bytes(plan_to_bytes(legacy))
    os.utime(collection.captions_json, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        with pytest.raises(PlanMismatchError, match="captions_mtime_ns") as refused:
            load_or_create_plan(out, source, *args)
        assert "captions_identity" not in str(refused.value)  # named in the plan's own terms
    finally:
        os.utime(collection.captions_json, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_ray_job_reads_s3_sources(collection, s3_sources, s3_url, ray_driver, tmp_path, capsys):
    """The deployed path: Ray workers (with the head's environment) list, spool and range-read the sources."""
    from pipelines.sharding.job import run_sharding_job

    started = time.time()
    summary = run_sharding_job(config(s3_sources, f"{s3_url}/out"))
    assert summary.ok_videos == len(collection.good_ids)
    assert_complete_output(download_prefix(f"{s3_url}/out", tmp_path / "from-s3"), collection)
    captured = capsys.readouterr()
    assert_no_credentials(captured.out, captured.err, folder=tmp_path / "from-s3")
    workers_spool = Path(os.environ.get("TMPDIR", "/tmp")) / SPOOL_FOLDER_NAME  # the workers' TMPDIR
    assert not [p for p in workers_spool.glob("*/*") if _modified_since(p, started)]


def _modified_since(path: Path, started: float) -> bool:
    try:
        return path.stat().st_mtime >= started
    except FileNotFoundError:  # removed while we looked
        return False


def test_a_video_deleted_from_the_bucket_after_planning_is_missing_file(
    collection, s3_sources, s3_url, tmp_path
):
    job = config(s3_sources, f"{s3_url}/out")
    plan, _ = load_or_create_plan(open_storage(job.out), job.source, job.selection, job.decoding, job.layout)
    gone = next(v for v in plan.videos if v.video_id == collection.good_ids[0])
    boto3.client("s3").delete_object(**_bucket_key(f"{s3_sources.videos}/{gone.video_path}"))
    shard_in_process(job)
    rows = {
        row["video_id"]: row for row in read_manifest_rows(download_prefix(f"{s3_url}/out", tmp_path / "o"))
    }
    assert rows[gone.video_id]["reason"] == "missing_file"
    assert f"{s3_sources.videos}/{gone.video_path}" in rows[gone.video_id]["detail"]
    assert sum(row["status"] == "ok" for row in rows.values()) == len(collection.good_ids) - 1


@pytest.fixture
def ray_head_spooling_under_tmp_path(
    s3_server: LocalS3Server, s3_sources: SourceConfig, tmp_path: Path
) -> Iterator[LocalRayHead]:
    """A Ray head of the test's own whose workers spool videos where `s3_sources` put the spool (their TMPDIR
    is tmp_path/tmp): the session head's workers share /tmp's spool with every Ray job on the machine."""
    workers_env = {**s3_server.env(), "TMPDIR": str(tmp_path / "tmp")}
    head = LocalRayHead(LocalRayConfig(num_cpus=2, dashboard_port=0), env=workers_env).start()
    yield head
    head.stop()


@pytest.mark.slow
def test_driver_killed_twice_reading_and_writing_s3_then_resumed(
    collection, s3_sources, s3_url, ray_head_spooling_under_tmp_path, tmp_path
):
    """Sources and output on S3; the driver SIGKILLed twice with shards committed and others in flight."""
    head, out, log = ray_head_spooling_under_tmp_path, f"{s3_url}/out", tmp_path / "driver.log"
    bucket, _, prefix = out.removeprefix("s3://").partition("/")
    parts, spool = f"{prefix}/manifest/", tmp_path / "tmp" / SPOOL_FOLDER_NAME
    for _ in range(2):
        committed = len(keys_under(bucket, parts))
        driver = start_driver(collection, out, head.address, log, source=s3_sources)
        try:
            reached = wait_for_keys(bucket, parts, timeout_s=300, count=committed + 2)
            assert len(reached) >= committed + 2, log.read_text()[-4000:]
            running = spooling_processes(spool)  # the workers of this driver's tasks that had begun a video
        finally:
            kill_hard(driver)
        # Ray ends a dead driver's tasks at once (their workers get SIGTERM, SIGKILL 5 s later): none runs on.
        assert not still_running(running, after_s=30)
    assert len(keys_under(bucket, parts)) < num_shards(collection, 2)  # both kills came mid-job
    resumed = start_driver(collection, out, head.address, log, source=s3_sources)
    assert resumed.wait(timeout=600) == 0, log.read_text()[-4000:]

    downloaded = download_prefix(out, tmp_path / "from-s3")
    assert_complete_output(downloaded, collection)  # every planned video once, no duplicate key in the shards
    assert max(row["attempts"] for row in read_manifest_rows(downloaded)) > 1  # shards in flight were redone
    # Each killed task's spool is gone: removed by the task as it exits (Ray's worker turns SIGTERM into
    # SystemExit), or else swept by a later task, as a SIGKILLed one's would be.
    assert spool.is_dir() and not list(spool.iterdir())
    assert_no_credentials(log.read_text(), folder=downloaded)


def spooling_processes(spool: Path) -> set[int]:
    """Pids of the processes whose tasks hold a spool folder (`<pid>-<random>`) now."""
    return {int(folder.name.partition("-")[0]) for folder in spool.glob("*-*")} if spool.is_dir() else set()


def still_running(pids: set[int], after_s: float) -> set[int]:
    """Those of `pids` still alive after up to `after_s` (as soon as none is)."""
    deadline = time.monotonic() + after_s
    while (alive := {pid for pid in pids if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive
