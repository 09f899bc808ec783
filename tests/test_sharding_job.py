"""The sharding job against real components: a Ray head on 127.0.0.1, moto's S3 server, ffmpeg,
and its output read back by the stock webdataset reader."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3

from pipelines.howto100m import SubsetConfig
from pipelines.sharding.job import RayConfig, ShardingConfig, run_sharding_job
from pipelines.sharding.plan import ShardLayoutConfig, SourceConfig
from pipelines.video import DecodeConfig
from tests.sharding_checks import assert_complete_output, expected_reasons, read_manifest_rows

REPO = Path(__file__).resolve().parents[1]
TEST_TIMEOUT_S = 4.0
# Every kind of bad input the issue lists, each with its own code (the sample collection holds one of each).
REQUIRED_REASONS = {
    "missing_file", "empty_file", "truncated", "not_a_video", "no_video_stream", "too_short", "timeout",
    "no_captions", "caption_lengths_mismatch", "no_valid_captions", "no_captions_in_range",
    "unsafe_id", "not_in_metadata",
}  # fmt: skip  # the sample's hanging "video" (a FIFO) must time out quickly in tests


def local_sources(collection) -> SourceConfig:
    return SourceConfig(
        videos=str(collection.videos_dir),
        metadata=str(collection.metadata_csv),
        captions=str(collection.captions_json),
    )


def sharding_config(
    collection, out: str, *, address: str = "", videos_per_shard: int = 3, **decode
) -> ShardingConfig:
    return ShardingConfig(
        source=local_sources(collection),
        out=out,
        selection=SubsetConfig(),
        decoding=DecodeConfig(timeout_s=TEST_TIMEOUT_S, **decode),
        layout=ShardLayoutConfig(videos_per_shard=videos_per_shard),
        ray=RayConfig(ray_address=address),
    )


def job_args(
    collection, out: str, videos_per_shard: int = 3, *, source: SourceConfig | None = None
) -> list[str]:
    """The job's flags for `collection`: its local files, or `source` (e.g. its copy on S3)."""
    source = source or local_sources(collection)
    return [
        "--videos", source.videos, "--metadata", source.metadata, "--captions", source.captions,
        "--out", out, "--videos-per-shard", str(videos_per_shard), "--timeout-s", str(TEST_TIMEOUT_S),
    ]  # fmt: skip


def download_prefix(s3_url: str, target: Path) -> Path:
    """Copy an s3:// prefix to a local folder with plain boto3 (a peer, not our storage code)."""
    bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
    client = boto3.client("s3")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            local = target / obj["Key"][len(prefix) + 1 :]
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(local))
    return target


def test_local_output_is_complete_and_readable_by_stock_reader(sample_collection, ray_driver, tmp_path):
    summary = run_sharding_job(sharding_config(sample_collection, str(tmp_path / "out")))
    assert_complete_output(tmp_path / "out", sample_collection)
    assert summary.ok_videos == len(sample_collection.good_ids)
    assert summary.failed_by_reason == _count(expected_reasons(sample_collection).values())
    assert summary.video_seconds_per_cpu_second > 0 and summary.peak_task_rss_mib > 0
    rerun = run_sharding_job(sharding_config(sample_collection, str(tmp_path / "out")))  # nothing to do
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert rerun.run_shards == 0 and rerun.ok_videos == summary.ok_videos
    assert saved["runs"] == list(summary.runs) and len(summary.runs) == 1  # the first run's figures kept
    assert saved["runs"][0]["peak_task_rss_mib"] == summary.peak_task_rss_mib > 0


def test_each_bad_input_gets_its_own_reason(sample_collection, ray_driver, tmp_path):
    run_sharding_job(sharding_config(sample_collection, str(tmp_path / "out")))
    reasons = {
        row["video_id"]: row["reason"]
        for row in read_manifest_rows(tmp_path / "out")
        if row["status"] == "failed"
    }
    assert reasons == expected_reasons(sample_collection)
    assert set(reasons.values()) >= REQUIRED_REASONS
    assert not any(".." in p.name or p.is_symlink() for p in (tmp_path / "out").rglob("*"))


def test_ray_job_submit_to_s3_then_resume_then_refuse_changed_config(
    sample_collection, ray_head, s3_url, tmp_path
):
    entry = [sys.executable, "jobs/shard_howto100m.py", *job_args(sample_collection, s3_url)]
    first = ray_head.submit_job(entry, working_dir=REPO, capture=True, timeout_s=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert_complete_output(download_prefix(s3_url, tmp_path / "first"), sample_collection)

    again = ray_head.submit_job(entry, working_dir=REPO, capture=True, timeout_s=600)
    assert again.returncode == 0 and "0 to do" in again.stdout, again.stdout[-3000:]

    changed = ray_head.submit_job([*entry, "--fps", "2"], working_dir=REPO, capture=True, timeout_s=600)
    assert changed.returncode != 0
    assert (
        "different settings" in changed.stdout + changed.stderr
        and "decode.fps" in changed.stdout + changed.stderr
    )


def test_unreachable_store_stops_with_a_clear_message(sample_collection, monkeypatch, capsys):
    from jobs.shard_howto100m import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    code = main(job_args(sample_collection, "s3://no-such-bucket/out"))
    err = capsys.readouterr().err
    assert code == 2 and "127.0.0.1:9" in err and "no-such-bucket" in err and "very-secret-value" not in err


def _count(values) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(values))


def test_nvdec_without_a_gpu_share_is_refused_before_planning(sample_collection, tmp_path, capsys):
    from jobs.shard_howto100m import main

    code = main([*job_args(sample_collection, str(tmp_path / "out")), "--decoder", "nvdec"])
    assert code == 2 and "--gpus-per-task" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_in_process_sharding_gives_the_same_complete_output(sample_collection, tmp_path):
    from pipelines.sharding.in_process import shard_in_process

    reports = shard_in_process(sharding_config(sample_collection, str(tmp_path / "out")))
    assert sum(r.ok for r in reports) == len(sample_collection.good_ids)
    assert_complete_output(tmp_path / "out", sample_collection)
    assert shard_in_process(sharding_config(sample_collection, str(tmp_path / "out"))) == []  # all committed


def test_a_shard_whose_videos_all_failed_has_no_tar_and_the_readme_reader_still_works(
    sample_collection, tmp_path
):
    """One video per shard: every failed video's shard commits its manifest part and writes no tar."""
    import pyarrow.compute as pc
    import webdataset as wds

    from pipelines.sharding.in_process import shard_in_process
    from pipelines.sharding.manifest import read_manifest
    from pipelines.storage import open_storage

    out = tmp_path / "out"
    shard_in_process(sharding_config(sample_collection, str(out), videos_per_shard=1))
    manifest = read_manifest(open_storage(str(out)))
    with_ok = set(manifest.filter(pc.equal(manifest["status"], "ok"))["shard"].to_pylist())
    all_failed = set(manifest["shard"].to_pylist()) - with_ok
    assert all_failed and with_ok
    assert {p.relative_to(out).as_posix() for p in (out / "shards").glob("*.tar")} == with_ok
    for shard in sorted(with_ok):  # the README's reader snippet, on every tar there is
        samples = list(wds.WebDataset(str(out / shard), shardshuffle=False).decode("pil"))
        assert samples and all("json" in sample for sample in samples)


def test_the_consolidated_manifest_is_written_at_the_end_kept_when_current_and_rebuilt_on_resume(
    sample_collection, ray_driver, tmp_path
):
    from pipelines.sharding.manifest import CONSOLIDATED_MANIFEST_KEY, load_manifest
    from pipelines.storage import open_storage

    out = tmp_path / "out"
    first = run_sharding_job(sharding_config(sample_collection, str(out)))
    storage = open_storage(str(out))
    assert load_manifest(storage).consolidated_current
    written = (out / CONSOLIDATED_MANIFEST_KEY).stat().st_mtime_ns

    again = run_sharding_job(sharding_config(sample_collection, str(out)))  # nothing left to do
    assert (out / CONSOLIDATED_MANIFEST_KEY).stat().st_mtime_ns == written  # current: not rewritten
    assert again.ok_videos == first.ok_videos and again.failed_by_reason == first.failed_by_reason

    for shard in (0, 1):  # two shards not committed, as after a crash: the consolidated file is stale
        (out / f"manifest/{shard:06d}.parquet").unlink()
    resumed = run_sharding_job(sharding_config(sample_collection, str(out)))
    assert resumed.run_shards == 2
    rebuilt = load_manifest(storage)
    assert rebuilt.consolidated_current and rebuilt.parts == frozenset(range(resumed.total_shards))
    assert sorted(map(str, rebuilt.table.to_pylist())) == sorted(map(str, read_manifest_rows(out)))
    assert_complete_output(out, sample_collection)
