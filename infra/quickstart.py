"""The quick start, end to end on one machine with real components:

1. generate a small HowTo100M-layout collection (real H.264/VP9 files made by ffmpeg, CSV, caption.json);
2. start an S3-compatible server (moto) and a Ray head, both on 127.0.0.1;
3. `ray job submit` the sharding job, writing shards + manifest to the S3 server;
4. draw a contact sheet from a shard;
5. `ray job submit` a short MIL-NCE post-pretraining of the debug model (2 CPU workers, DDP over
   gloo) on those shards, checkpoints to the S3 server;
6. generate a tiny MSR-VTT-layout retrieval set (colour videos, captions naming the colours) and
   `ray job submit` the retrieval fine-tuning from that checkpoint, which evaluates zero-shot and
   fine-tuned and prints the metrics table;
7. export the fine-tuned model as an open_clip `local-dir:` folder; print where everything is and the loss curve.

    bash infra/quickstart.sh          # install + run
    bash infra/quickstart.sh stop     # stop the Ray head and the S3 server
"""

from __future__ import annotations

import os
import shutil
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
    ray_port: int = 6379  # the head's GCS port; `--stop` finds the head by it (pass the same one)
    stop: bool = False  # stop the services a previous quick start left running, then exit


def main(argv: list[str] | None = None) -> int:
    config = parse_config(QuickstartConfig, argv)
    workdir = (REPO / config.workdir).resolve()
    if config.stop:
        stop_services(workdir, config.ray_port)
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    collection = _step(
        "1/7 generating a HowTo100M-style sample collection", lambda: _generate(workdir, config)
    )
    head, endpoint = _step(
        "2/7 starting the S3-compatible server and the Ray head", lambda: _start_services(workdir, config)
    )
    shards, runs = f"s3://{config.bucket}/howto100m-sample-1fps", f"s3://{config.bucket}/runs"
    print(f"\n== 3/7 ray job submit -> {head.dashboard_url}: sharding into {shards}", flush=True)
    if not _submitted(head, "jobs/shard_howto100m.py", _job_args(collection, shards), workdir):
        return 1
    sheet = _step("4/7 drawing a contact sheet from the first shard", lambda: _contact_sheet(shards, workdir))
    print(
        f"\n== 5/7 ray job submit: MIL-NCE post-pretraining of the debug model -> {runs}/{RUN_NAME}",
        flush=True,
    )
    if not _submitted(head, "jobs/post_pretrain.py", _training_args(shards, runs), workdir):
        return 1
    print(f"\n== 6/7 ray job submit: fine-tune {RUN_NAME} for retrieval, evaluate zero-shot and fine-tuned")
    retrieval = _generate_retrieval(workdir)
    if not _submitted(head, "jobs/finetune_retrieval.py", _finetune_args(runs, retrieval, workdir), workdir):
        return 1
    export = _step(
        "7/7 exporting the fine-tuned model for open_clip", lambda: _export_open_clip(runs, workdir)
    )
    _print_where(shards, endpoint, head, sheet, runs, _download_loss_curve(runs, workdir), export)
    return 0


def _start_services(workdir: Path, config: QuickstartConfig) -> tuple[LocalRayHead, str]:
    endpoint = _start_s3(workdir, config)
    env = {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    os.environ.update(env)  # this process reads the results back from the same server
    head = LocalRayHead(
        LocalRayConfig(num_cpus=2, dashboard_port=config.dashboard_port, port=config.ray_port), env=env
    )
    head.stop()  # a Ray head left over from an earlier run would not have this run's environment
    return head.start(), endpoint


def _submitted(head: LocalRayHead, job: str, args: list[str], workdir: Path) -> bool:
    chatter = workdir / "ray-job-submit.log"
    result = head.submit_job([sys.executable, job, *args], working_dir=REPO, chatter_log=chatter)
    if result.returncode != 0:
        print(f"{job} failed (exit {result.returncode}); see its output above and {chatter}", file=sys.stderr)
    else:
        print(f"{job} succeeded (Ray's submission log: {chatter})", flush=True)
    return result.returncode == 0


def _step(title: str, action):
    print(f"\n== {title}", flush=True)
    return action()


def _generate(workdir: Path, config: QuickstartConfig):
    from infra.sample_collection import SampleCollectionSpec, generate_sample_collection

    root = workdir / "howto100m-sample"
    shutil.rmtree(root, ignore_errors=True)  # ours from an earlier run: regenerated, so a rerun just works
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


RUN_NAME = "quickstart-debug-meanP-milnce"
FINETUNE_RUN_NAME = "quickstart-debug-seqTransf-msrvtt"


def _training_args(shards: str, runs: str) -> list[str]:
    # The debug model is random-init, so every weight trains at lr (coef_lr 1); real runs start
    # from CLIP (--model ViT-B-32, pretrained openai) with the paper's lr 1e-4 and coef_lr 1e-3.
    return [
        "--shards", shards, "--checkpoints", runs, "--run-name", RUN_NAME,
        "--num-workers", "2", "--model", "debug", "--pretrained", "", "--head", "meanP",
        "--max-frames", "6", "--candidates", "3", "--batch-size", "4", "--clips-per-video", "4",
        "--loader-workers", "0", "--lr", "1e-3", "--coef-lr", "1.0",
        "--max-steps", "40", "--every-steps", "20", "--log-every", "5",
    ]  # fmt: skip


def _generate_retrieval(workdir: Path) -> Path:
    from infra.sample_msrvtt import generate_sample_msrvtt

    shutil.rmtree(workdir / "msrvtt-sample", ignore_errors=True)  # ours from an earlier run
    sample = generate_sample_msrvtt(workdir / "msrvtt-sample")
    print(f"{len(sample.train_ids)} training + {len(sample.test_ids)} test videos in {sample.root}")
    return sample.root


def _finetune_args(runs: str, data: Path, workdir: Path) -> list[str]:
    # Real runs keep the paper's defaults (lr 1e-4, coef_lr 1e-3, batch 128, 12 frames, 5 epochs).
    return [
        "--init", f"{runs}/{RUN_NAME}/latest", "--dataset", "msrvtt", "--data-root", str(data), "--split", "9k",
        "--head", "seqTransf", "--epochs", "5", "--num-workers", "2", "--checkpoints", runs,
        "--run-name", FINETUNE_RUN_NAME, "--max-frames", "4", "--batch-size", "8", "--loader-workers", "0",
        "--short-side", "64", "--frame-cache", str(workdir / "frame-cache"), "--lr", "1e-3", "--coef-lr", "1.0",
        "--log-every", "9",
    ]  # fmt: skip


def _export_open_clip(runs: str, workdir: Path) -> Path:
    from pipelines.checkpoint.exports import ExportConfig, export_checkpoint
    from pipelines.checkpoint.init_model import InitConfig

    out = workdir / "export-open_clip"
    init = InitConfig(init=f"{runs}/{FINETUNE_RUN_NAME}/latest")
    return export_checkpoint(ExportConfig(init=init, format="open_clip", out=str(out)))


def _download_loss_curve(runs: str, workdir: Path) -> Path:
    from pipelines.checkpoint.layout import LOSS_CURVE_FILE
    from pipelines.checkpoint.store import CheckpointStore

    store = CheckpointStore(runs, RUN_NAME)
    latest = store.latest()
    assert latest is not None, "the training job succeeded, so it committed a checkpoint"
    target = workdir / LOSS_CURVE_FILE
    target.write_bytes(store.read_file(latest, LOSS_CURVE_FILE))
    return target


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


def _print_where(
    out: str, endpoint: str, head: LocalRayHead, sheet: Path, runs: str, curve: Path, export: Path
) -> None:
    from pipelines.checkpoint.layout import (
        LATEST,
        METRICS_FILE,
        RUN_CONFIG_FILE,
        TRAIN_STATE_FILE,
        WEIGHTS_FILE,
    )

    files = ", ".join((WEIGHTS_FILE, TRAIN_STATE_FILE, RUN_CONFIG_FILE, METRICS_FILE))
    print(
        f"""
== done
checkpoints   {runs}/{RUN_NAME}/step-NNNNNNNN/ ({files}; {LATEST})
fine-tuned    {runs}/{FINETUNE_RUN_NAME}/ (checkpoints; eval/zero-shot.json, eval/fine-tuned.json, eval/metrics.md)
open_clip     {export}  (open_clip.create_model_and_transforms('local-dir:{export}'): README, Exports)
loss curve    {curve}
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


def stop_services(workdir: Path, ray_port: int) -> None:
    LocalRayHead(LocalRayConfig(port=ray_port)).stop()
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
