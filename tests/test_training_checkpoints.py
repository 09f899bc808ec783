"""pipelines.checkpoint.store on a local folder and on a real moto S3 server (every test runs on both).

Crashes are real where it is cheap: a `save` in a subprocess is SIGKILLed at a failpoint; otherwise a
crash's leftovers are written through the storage layer as the crashed process would have left them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from pipelines.checkpoint.store import (
    COMMIT_MARKER,
    IN_PROGRESS,
    LATEST,
    CheckpointConfig,
    CheckpointCorrupt,
    CheckpointRef,
    CheckpointStore,
    download_checkpoint,
    resolve_checkpoint,
)
from pipelines.storage import S3StorageConfig, Storage, StorageError

REPO = Path(__file__).resolve().parents[1]
SECRET = "secret-value-that-must-never-appear-5678"
RUN = "run-a"


@pytest.fixture(params=["local", "s3"])
def root_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "local":
        return str(tmp_path / "ckpt")
    url = request.getfixturevalue("s3_url")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto accepts any secret
    return url


def write_checkpoint_folder(folder: Path, step: int, *, model_bytes: int = 300_000) -> Path:
    """What the trainer writes: weights, train state, configs; contents differ per step."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(os.urandom(model_bytes))
    (folder / "train_state.pt").write_bytes(os.urandom(2 * model_bytes))
    (folder / "config.json").write_text(json.dumps({"model": {"head": "meanP"}, "step": step}))
    (folder / "metrics.json").write_text(json.dumps({"loss": 1.0 / (step + 1)}))
    return folder


def save_steps(store: CheckpointStore, tmp_path: Path, steps: list[int]) -> dict[int, Path]:
    folders = {step: write_checkpoint_folder(tmp_path / f"local-{step}", step) for step in steps}
    for step in steps:
        store.save(step, folders[step])
    return folders


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def step_folders(storage: Storage) -> set[str]:
    return {key.split("/")[0] for key in storage.list() if key.startswith("step-")}


def latest_json(store: CheckpointStore) -> dict[str, Any]:
    return json.loads(store.storage.read_bytes(LATEST))


def committed_steps(store: CheckpointStore) -> list[int]:
    return [ref.step for ref in store.committed()]


def upload_without_marker(store: CheckpointStore, step: int, folder: Path) -> None:
    """The state a save leaves when it dies after uploading the files and before the marker."""
    for path in folder.iterdir():
        store.storage.upload_file(f"step-{step:08d}/{path.name}", path)


# --------------------------------------------------------------------------------------------------
# Round trip and commit protocol


def test_save_latest_download_round_trip(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    assert store.latest() is None and store.committed() == []
    folder = write_checkpoint_folder(tmp_path / "local", 1000)
    (folder / "extra").mkdir()
    (folder / "extra" / "tokenizer.json").write_text("{}")  # sub-folders travel too

    ref = store.save(1000, folder)
    assert ref.step == 1000 and ref.url.endswith(f"{RUN}/step-00001000")
    assert ref.files == {name: len(data) for name, data in folder_bytes(folder).items()}
    assert store.latest() == ref and store.committed() == [ref]
    assert latest_json(store)["step"] == 1000 and latest_json(store)["path"] == "step-00001000"

    target = store.download(ref, tmp_path / "restored")
    assert folder_bytes(target) == folder_bytes(folder)  # exactly the trainer's files, nothing else


def test_marker_lists_every_file_with_size_and_sha256(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    folder = write_checkpoint_folder(tmp_path / "local", 5)
    store.save(5, folder)
    marker = json.loads(store.storage.read_bytes(f"step-00000005/{COMMIT_MARKER}"))
    expected = {
        name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in folder_bytes(folder).items()
    }
    assert marker["step"] == 5 and marker["files"] == expected


class RecordingStorage:
    """The real storage, with the order of the objects it was asked to write recorded."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.written: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def upload_file(self, key: str, local_path: Any) -> None:
        self._inner.upload_file(key, local_path)
        self.written.append(key)

    def write_bytes(self, key: str, data: bytes, **conditions: Any) -> str:
        etag = self._inner.write_bytes(key, data, **conditions)
        self.written.append(key)
        return etag


def test_marker_is_written_after_every_file_and_latest_after_the_marker(
    root_url: str, tmp_path: Path
) -> None:
    store = CheckpointStore(root_url, RUN)
    recorder = RecordingStorage(store.storage)
    store.storage = recorder  # type: ignore[assignment]
    store.save(3, write_checkpoint_folder(tmp_path / "local", 3))
    folder_writes = [key for key in recorder.written if key.startswith("step-00000003/")]
    assert folder_writes[0] == f"step-00000003/{IN_PROGRESS}"
    assert folder_writes[-1] == f"step-00000003/{COMMIT_MARKER}" and len(folder_writes) == 6
    assert recorder.written[-1] == LATEST


def test_files_without_a_marker_are_never_used(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    ref1 = store.save(1, write_checkpoint_folder(tmp_path / "one", 1))
    upload_without_marker(store, 2, write_checkpoint_folder(tmp_path / "two", 2))

    assert store.latest() == ref1 and committed_steps(store) == [1]
    assert latest_json(store)["step"] == 1
    with pytest.raises(ValueError, match=COMMIT_MARKER):
        resolve_checkpoint(f"{store.url}/step-00000002")


def run_save_in_subprocess(
    store: CheckpointStore, step: int, folder: Path, failpoint: str
) -> subprocess.Popen:
    code = (
        "import sys; from pipelines.checkpoint.store import CheckpointStore; "
        "CheckpointStore(sys.argv[1], sys.argv[2]).save(int(sys.argv[3]), sys.argv[4])"
    )
    root = store.url.rsplit("/", 1)[0]
    return subprocess.Popen(
        [sys.executable, "-c", code, root, RUN, str(step), str(folder)],
        cwd=REPO,
        env={**os.environ, "PIPELINE_FAILPOINTS": f"{failpoint}=60"},
    )


def wait_for(condition: Any, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"the save exited early with code {process.returncode}"
        assert time.monotonic() < deadline, "the save did not reach its failpoint in time"
        time.sleep(0.05)


def test_save_killed_before_its_marker_is_invisible_and_redone(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN, config=CheckpointConfig(stale_save_after_s=0))
    ref1 = store.save(1, write_checkpoint_folder(tmp_path / "one", 1))
    folder2 = write_checkpoint_folder(tmp_path / "two", 2)
    saver = run_save_in_subprocess(store, 2, folder2, "checkpoint_before_marker")
    try:
        wait_for(lambda: len(store.storage.list("step-00000002/")) == 5, saver)  # 4 files + SAVING.json
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait()

    assert store.latest() == ref1 and committed_steps(store) == [1] and latest_json(store)["step"] == 1
    folder2 = write_checkpoint_folder(tmp_path / "two-again", 2)  # the resumed run's own step-2 files
    ref2 = store.save(2, folder2)
    assert store.latest() == ref2
    assert folder_bytes(store.download(ref2, tmp_path / "restored")) == folder_bytes(folder2)


def test_save_killed_before_latest_is_committed_but_latest_stays(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    ref1 = store.save(1, write_checkpoint_folder(tmp_path / "one", 1))
    saver = run_save_in_subprocess(
        store, 2, write_checkpoint_folder(tmp_path / "two", 2), "checkpoint_before_latest"
    )
    try:
        wait_for(lambda: store.storage.exists(f"step-00000002/{COMMIT_MARKER}"), saver)
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait()

    assert latest_json(store)["step"] == 1 and store.latest() == ref1  # the pointer is the source of truth
    assert committed_steps(store) == [1, 2]
    store.save(3, write_checkpoint_folder(tmp_path / "three", 3))
    assert latest_json(store)["step"] == 3


def test_retried_save_of_a_committed_step_uploads_nothing(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    folder = write_checkpoint_folder(tmp_path / "local", 4)
    first = store.save(4, folder)
    recorder = RecordingStorage(store.storage)
    store.storage = recorder  # type: ignore[assignment]
    assert store.save(4, folder) == first
    assert not any(key.startswith("step-") for key in recorder.written)


def test_saving_a_committed_step_with_other_files_replaces_it(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    store.save(4, write_checkpoint_folder(tmp_path / "old", 4))
    new_folder = write_checkpoint_folder(tmp_path / "new", 4, model_bytes=1000)
    ref = store.save(4, new_folder)
    assert folder_bytes(store.download(ref, tmp_path / "restored")) == folder_bytes(new_folder)


def test_saving_over_a_garbled_marker_replaces_the_checkpoint(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    store.save(4, write_checkpoint_folder(tmp_path / "old", 4))
    garble_marker(store, "step-00000004")
    new_folder = write_checkpoint_folder(tmp_path / "new", 4)
    ref = store.save(4, new_folder)
    assert store.latest() == ref
    assert folder_bytes(store.download(ref, tmp_path / "restored")) == folder_bytes(new_folder)


# --------------------------------------------------------------------------------------------------
# Damage: fall back to the previous committed checkpoint, with a warning


def truncate_model(store: CheckpointStore, name: str) -> None:
    key = f"{name}/model.safetensors"
    store.storage.write_bytes(key, store.storage.read_bytes(key)[:1000])


def delete_model(store: CheckpointStore, name: str) -> None:
    store.storage.delete(f"{name}/model.safetensors")


def garble_marker(store: CheckpointStore, name: str) -> None:
    store.storage.write_bytes(f"{name}/{COMMIT_MARKER}", b'{"files": {"model.safet')


def delete_folder(store: CheckpointStore, name: str) -> None:
    store.storage.delete_prefix(f"{name}/")


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (truncate_model, "model.safetensors"),
        (delete_model, "model.safetensors"),
        (garble_marker, COMMIT_MARKER),
        (delete_folder, COMMIT_MARKER),  # latest.json points at a deleted folder
    ],
)
def test_damaged_latest_checkpoint_falls_back_with_a_warning(
    root_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, named: str
) -> None:
    store = CheckpointStore(root_url, RUN)
    save_steps(store, tmp_path, [1, 2])
    damage(store, "step-00000002")
    with caplog.at_level(logging.WARNING, logger="pipelines.checkpoint.store"):
        ref = store.latest()
    assert ref is not None and ref.step == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step-00000002" in message and named in message for message in warnings), warnings
    with pytest.raises(ValueError, match="step-00000002"):
        resolve_checkpoint(f"{store.url}/step-00000002")
    assert resolve_checkpoint(store.url).step == 1


def test_same_size_corruption_is_caught_by_sha256(
    root_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(root_url, RUN)
    save_steps(store, tmp_path, [1, 2])
    key = "step-00000002/train_state.pt"
    data = store.storage.read_bytes(key)
    store.storage.write_bytes(key, bytes([data[0] ^ 0xFF]) + data[1:])  # same size, one bit pattern off

    ref2 = store.latest()  # sizes only (the cheap default) cannot see it ...
    assert ref2 is not None and ref2.step == 2
    with caplog.at_level(logging.WARNING, logger="pipelines.checkpoint.store"):
        ref1 = store.latest(verify_sha256=True)  # ... full verification can
    assert ref1 is not None and ref1.step == 1 and "sha256" in caplog.text
    target = tmp_path / "restored"
    with pytest.raises(CheckpointCorrupt, match="train_state.pt"):
        store.download(ref2, target)  # download always checks the digests
    assert not (target / "train_state.pt").exists()


def test_unreadable_latest_json_falls_back_to_the_newest_committed(
    root_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(root_url, RUN)
    save_steps(store, tmp_path, [1, 2])
    store.storage.write_bytes(LATEST, b"not json")
    with caplog.at_level(logging.WARNING, logger="pipelines.checkpoint.store"):
        ref = store.latest()
    assert ref is not None and ref.step == 2 and LATEST in caplog.text
    store.save(3, write_checkpoint_folder(tmp_path / "three", 3))  # the next save repairs the pointer
    assert latest_json(store)["step"] == 3


# --------------------------------------------------------------------------------------------------
# Retention and the forward-only pointer


def test_keep_last_prunes_older_committed_checkpoints(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN, config=CheckpointConfig(keep_last=2))
    save_steps(store, tmp_path, [1, 2, 3, 4, 5])
    assert committed_steps(store) == [4, 5]
    assert step_folders(store.storage) == {"step-00000004", "step-00000005"}


def test_prune_keeps_latest_target_and_in_flight_saves_drops_crash_leftovers(
    root_url: str, tmp_path: Path
) -> None:
    store = CheckpointStore(root_url, RUN, config=CheckpointConfig(keep_last=5))
    save_steps(store, tmp_path, [1, 3, 5])
    store.storage.write_bytes(LATEST, json.dumps({"step": 3, "path": "step-00000003"}).encode())
    upload_without_marker(store, 2, write_checkpoint_folder(tmp_path / "two", 2))  # crash leftover
    upload_without_marker(store, 4, write_checkpoint_folder(tmp_path / "four", 4))  # a save in flight:
    store.storage.write_bytes(
        f"step-00000004/{IN_PROGRESS}", json.dumps({"started_unix": time.time()}).encode()
    )
    upload_without_marker(store, 9, write_checkpoint_folder(tmp_path / "nine", 9))  # newer: maybe in flight

    CheckpointStore(root_url, RUN, config=CheckpointConfig(keep_last=1)).prune()
    assert step_folders(store.storage) == {"step-00000003", "step-00000004", "step-00000005", "step-00000009"}
    assert committed_steps(store) == [3, 5]


def test_latest_never_moves_backwards(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    save_steps(store, tmp_path, [7, 5])
    assert latest_json(store)["step"] == 7
    latest = store.latest()
    assert latest is not None and latest.step == 7
    assert committed_steps(store) == [5, 7]


def test_concurrent_savers_leave_latest_at_the_highest_step(root_url: str, tmp_path: Path) -> None:
    steps = [10, 20, 30, 40]
    folders = {step: write_checkpoint_folder(tmp_path / f"local-{step}", step) for step in steps}
    stores = [CheckpointStore(root_url, RUN, config=CheckpointConfig(keep_last=2)) for _ in steps]
    barrier = threading.Barrier(len(steps))
    results: dict[int, CheckpointRef | BaseException] = {}

    def save(store: CheckpointStore, step: int) -> None:
        barrier.wait()
        try:
            results[step] = store.save(step, folders[step])
        except BaseException as err:  # reported below with its traceback
            results[step] = err

    threads = [threading.Thread(target=save, args=pair) for pair in zip(stores, steps, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    errors = {
        step: "".join(traceback.format_exception(r))
        for step, r in results.items()
        if isinstance(r, BaseException)
    }
    assert not errors, errors
    assert latest_json(stores[0])["step"] == 40
    latest = stores[0].latest()
    assert latest is not None and latest.step == 40
    assert folder_bytes(stores[0].download(latest, tmp_path / "restored")) == folder_bytes(folders[40])


# --------------------------------------------------------------------------------------------------
# Hand-off: resolve_checkpoint


def test_resolve_checkpoint_accepts_the_three_url_forms(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    folders = save_steps(store, tmp_path, [1000, 2000])
    by_step = resolve_checkpoint(f"{store.url}/step-00001000")
    assert by_step.step == 1000
    assert resolve_checkpoint(f"{store.url}/latest").step == 2000
    assert resolve_checkpoint(f"{store.url}/").step == 2000
    target = download_checkpoint(by_step, tmp_path / "restored")  # a hand-off job has no store
    assert folder_bytes(target) == folder_bytes(folders[1000])


def test_resolve_checkpoint_refuses_what_is_not_committed(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    with pytest.raises(ValueError, match="no committed checkpoint"):
        resolve_checkpoint(store.url)
    store.save(1, write_checkpoint_folder(tmp_path / "one", 1))
    upload_without_marker(store, 2, write_checkpoint_folder(tmp_path / "two", 2))
    with pytest.raises(ValueError) as caught:
        resolve_checkpoint(f"{store.url}/step-00000002")
    message = str(caught.value)
    assert "step-00000002" in message and COMMIT_MARKER in message and "step-00000001" in message
    with pytest.raises(ValueError, match=COMMIT_MARKER):
        resolve_checkpoint(f"{store.url}/step-00000003")  # no such folder at all


# --------------------------------------------------------------------------------------------------
# Bad input


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_store_names_endpoint_and_bucket_not_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with pytest.raises(StorageError) as caught:
        CheckpointStore("s3://ckpt-bucket/checkpoints", RUN, s3=S3StorageConfig(max_attempts=2))
    message = str(caught.value)
    assert endpoint in message and "ckpt-bucket" in message
    assert SECRET not in "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize("run_name", ["", "a/b", "..", "-x", "has space"])
def test_bad_run_names_are_refused(tmp_path: Path, run_name: str) -> None:
    with pytest.raises(ValueError, match="run name"):
        CheckpointStore(str(tmp_path), run_name)


def test_bad_folders_and_steps_are_refused(root_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(root_url, RUN)
    with pytest.raises(ValueError, match="does not exist"):
        store.save(1, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        store.save(1, tmp_path / "empty")
    folder = write_checkpoint_folder(tmp_path / "local", 1)
    with pytest.raises(ValueError, match="step"):
        store.save(-1, folder)
    (folder / COMMIT_MARKER).write_text("{}")
    with pytest.raises(ValueError, match="reserved"):
        store.save(1, folder)
    assert store.storage.list() == []
