"""The quick start, end to end on one machine with real components:

1. generate a small HowTo100M-layout collection (real H.264/VP9 files made by ffmpeg, CSV, caption.json);
2. start an S3-compatible server (moto) and a Ray head, both on 127.0.0.1;
3. `ray job submit` the sharding job, writing shards + manifest to the S3 server;
4. draw a contact sheet from a shard, and print where everything is.

    bash infra/quickstart.sh          # install + run
    bash infra/quickstart.sh stop     # stop the Ray head and the S3 server
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from infra.local_ray import LocalRayConfig, LocalRayHead, venv_bin
from pipelines.cli import parse_config

REPO = Path(__file__).resolve().parents[1]
FAKE_CREDENTIALS = {  # moto accepts any keys; real deployments use the standard credential chain
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True, kw_only=True)
class QuickstartConfig:
    workdir: str = "quickstart-output"  # where the generated collection, pid files and pictures go
    num_good_videos: int = 12
    s3_port: int = 9000
    bucket: str = "clip4clip"
    dashboard_port: int = 8265
    stop: bool = False  # stop the services a previous quick start left running, then exit


def main(argv: list[str] | None = None) -> int:
    config = parse_config(QuickstartConfig, argv)
    workdir = (REPO / config.workdir).resolve()
    if config.stop:
        stop_services(workdir)
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    collection = _step(
        "1/4 generating a HowTo100M-style sample collection", lambda: _generate(workdir, config)
    )
    endpoint = _step(
        "2/4 starting the S3-compatible server and the Ray head", lambda: _start_s3(workdir, config)
    )
    env = {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    os.environ.update(env)
    head = LocalRayHead(LocalRayConfig(num_cpus=2, dashboard_port=config.dashboard_port), env=env)
    head.stop()  # a Ray head left over from an earlier run would not have this run's environment
    head.start()
    out = f"s3://{config.bucket}/howto100m-sample-1fps"
    print(f"\n== 3/4 ray job submit -> {head.dashboard_url}: sharding into {out}", flush=True)
    result = head.submit_job(
        [sys.executable, "jobs/shard_howto100m.py", *_job_args(collection, out)], working_dir=REPO
    )
    if result.returncode != 0:
        print(f"the sharding job failed (exit {result.returncode}); see the output above", file=sys.stderr)
        return result.returncode
    sheet = _step("4/4 drawing a contact sheet from the first shard", lambda: _contact_sheet(out, workdir))
    _print_where(out, endpoint, head, sheet)
    return 0


def _step(title: str, action):
    print(f"\n== {title}", flush=True)
    return action()


def _generate(workdir: Path, config: QuickstartConfig):
    from pipelines.sample_collection import SampleCollectionSpec, generate_sample_collection

    root = workdir / "howto100m-sample"
    collection = generate_sample_collection(
        root, SampleCollectionSpec(num_good_videos=config.num_good_videos)
    )
    print(
        f"{len(collection.good_ids)} good videos + {len(collection.expected_failures)} broken cases in {root}"
    )
    return collection


def _job_args(collection, out: str) -> list[str]:
    return [
        "--videos", str(collection.videos_dir),
        "--metadata", str(collection.metadata_csv),
        "--captions", str(collection.captions_json),
        "--subset", "all",
        "--out", out,
        "--videos-per-shard", "4",
        "--timeout-s", "20",  # the sample holds a deliberately hanging "video" (a FIFO)
    ]  # fmt: skip


def _start_s3(workdir: Path, config: QuickstartConfig) -> str:
    pid_file = workdir / "s3_server.pid"
    _stop_pid(pid_file)
    subprocess.run(
        [sys.executable, "-m", "infra.s3_server", "--port", str(config.s3_port), "--bucket", config.bucket,
         "--detach", "--pid-file", str(pid_file)],
        check=True, cwd=REPO,
    )  # fmt: skip
    return f"http://127.0.0.1:{config.s3_port}"


def _contact_sheet(out: str, workdir: Path) -> Path:
    from pipelines.sharding.contact_sheet import ContactSheetConfig, make_contact_sheet
    from pipelines.sharding.manifest import read_manifest
    from pipelines.storage import open_storage

    manifest = read_manifest(open_storage(out)).to_pylist()
    first_ok = min((row for row in manifest if row["status"] == "ok"), key=lambda row: row["shard"])
    return make_contact_sheet(
        ContactSheetConfig(
            shard=f"{out}/{first_ok['shard']}",
            out=str(workdir / "contact_sheet.png"),
            video_id=first_ok["key"],
        )
    )


def _print_where(out: str, endpoint: str, head: LocalRayHead, sheet: Path) -> None:
    print(
        f"""
== done
shards        {out}/shards/            (WebDataset tars: <id>.json + <id>.NNNNNN.jpg at 1 fps)
manifest      {out}/manifest/          (Parquet, one row per planned video: ok | failed + reason)
plan, summary {out}/plan.parquet, {out}/summary.json
contact sheet {sheet}
S3 endpoint   {endpoint}  (moto keeps objects in memory: they go when it stops)
Ray dashboard {head.dashboard_url}
read it back  AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \\
              {venv_bin()}/python -c "import pyarrow.parquet as pq, pyarrow.fs as fs; \\
              print(pq.read_table('{out.removeprefix("s3://")}/manifest', filesystem=fs.S3FileSystem(endpoint_override='{endpoint}')).to_pandas())"
stop          bash infra/quickstart.sh stop""",
        flush=True,
    )


def stop_services(workdir: Path) -> None:
    LocalRayHead().stop()
    _stop_pid(workdir / "s3_server.pid")
    print("stopped the Ray head and the S3 server")


def _stop_pid(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        time.sleep(0.5)
    except (ProcessLookupError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
