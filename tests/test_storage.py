"""pipelines.storage against both backends: a local folder and a real moto S3 server process.

Also infra.s3_server's command line (foreground and --detach), which the quick start relies on.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.storage import (
    LocalStorage,
    ObjectNotFound,
    PreconditionFailed,
    S3Storage,
    S3StorageConfig,
    Storage,
    StorageError,
    open_storage,
)

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "secret-value-that-must-never-appear-1234"


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "out"))
    url = request.getfixturevalue("s3_url")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto accepts any secret
    return open_storage(url)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# Round trip, listing, deletion


def test_round_trip(storage: Storage) -> None:
    data = os.urandom(100_000)
    etag = storage.write_bytes("a/b/c.bin", data)
    assert etag == hashlib.md5(data).hexdigest()  # S3's ETag of a single-part object is the content MD5
    assert storage.exists("a/b/c.bin")
    assert not storage.exists("a/b") and not storage.exists("a/b/missing")
    assert storage.read_bytes("a/b/c.bin") == data
    assert storage.read_with_etag("a/b/c.bin") == (data, etag)
    with storage.open_read("a/b/c.bin") as stream:
        assert b"".join(iter(lambda: stream.read(7000), b"")) == data
    storage.write_bytes("a/b/c.bin", b"replaced")
    assert storage.read_bytes("a/b/c.bin") == b"replaced"


def test_missing_key_raises_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound):
        storage.read_bytes("missing.json")
    with pytest.raises(FileNotFoundError):  # ObjectNotFound is also a FileNotFoundError
        storage.open_read("missing/deeper.json")


def test_size_is_the_stored_byte_count(storage: Storage, tmp_path: Path) -> None:
    storage.write_bytes("sizes/empty", b"")
    storage.write_bytes("sizes/small.bin", b"x" * 1234)
    (tmp_path / "upload.bin").write_bytes(os.urandom(70_000))
    storage.upload_file("sizes/uploaded.bin", tmp_path / "upload.bin")
    assert storage.size("sizes/empty") == 0
    assert storage.size("sizes/small.bin") == 1234
    assert storage.size("sizes/uploaded.bin") == 70_000
    with pytest.raises(ObjectNotFound):
        storage.size("sizes/missing.bin")
    with pytest.raises(ObjectNotFound):  # a folder is not an object
        storage.size("sizes")


def test_uri_addresses_the_object_for_other_tools(storage: Storage) -> None:
    storage.write_bytes("dir/x.txt", b"peer-readable")
    if isinstance(storage, LocalStorage):
        assert Path(storage.uri("dir/x.txt")).read_bytes() == b"peer-readable"
        assert storage.local_path("dir/x.txt") == Path(storage.uri("dir/x.txt"))
        return
    assert isinstance(storage, S3Storage) and storage.local_path("dir/x.txt") is None
    bucket, _, object_key = storage.uri("dir/x.txt").removeprefix("s3://").partition("/")
    body = storage.client.get_object(Bucket=bucket, Key=object_key)["Body"].read()  # plain boto3
    assert body == b"peer-readable"


def test_list_uses_s3_prefix_semantics_and_delete(storage: Storage) -> None:
    keys = ["a/1", "a/2/x", "a/2/y", "ab/3", "b"]
    for key in reversed(keys):
        storage.write_bytes(key, key.encode())
    assert storage.list() == keys
    assert storage.list("a/") == ["a/1", "a/2/x", "a/2/y"]
    assert storage.list("a") == ["a/1", "a/2/x", "a/2/y", "ab/3"]  # a prefix is a string prefix, as in S3
    assert storage.list("a/2") == ["a/2/x", "a/2/y"]
    assert storage.list("nothing/") == []
    storage.delete("a/1")
    storage.delete("a/1")  # a missing key is not an error
    storage.delete_prefix("a/")
    assert storage.list() == ["ab/3", "b"]


def test_list_and_delete_more_than_one_page(storage: Storage) -> None:
    keys = [f"many/{i:05d}" for i in range(1005)]  # S3 returns at most 1000 keys per page
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: storage.write_bytes(key, b""), keys))
    storage.write_bytes("other", b"")
    assert storage.list("many/") == keys
    storage.delete_prefix("many/")  # DeleteObjects takes at most 1000 keys per call
    assert storage.list() == ["other"]


def test_local_temp_leftovers_are_not_listed(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}")
    storage.write_bytes("shards/s-000001.tar", b"tar")
    (tmp_path / "shards" / ".tmp-crashed-writer").write_bytes(b"partial")
    assert storage.list() == ["shards/s-000001.tar"]
    assert sorted(os.listdir(tmp_path / "shards")) == [".tmp-crashed-writer", "s-000001.tar"]
    storage.delete_prefix("shards/")
    assert not (tmp_path / "shards").exists()


# --------------------------------------------------------------------------------------------------
# Conditional writes


def test_conditional_writes(storage: Storage) -> None:
    first = storage.write_bytes("latest.json", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        storage.write_bytes("latest.json", b"2", if_none_match=True)
    assert storage.read_bytes("latest.json") == b"1"
    second = storage.write_bytes("latest.json", b"2", if_match=first)
    with pytest.raises(PreconditionFailed):
        storage.write_bytes("latest.json", b"3", if_match=first)  # stale etag
    assert storage.read_with_etag("latest.json") == (b"2", second)
    with pytest.raises(PreconditionFailed):
        storage.write_bytes("gone.json", b"x", if_match=second)  # nothing to replace
    assert not storage.exists("gone.json")
    with pytest.raises(ValueError):
        storage.write_bytes("latest.json", b"x", if_none_match=True, if_match=second)


def test_exactly_one_racing_creator_wins(storage: Storage) -> None:
    writers = 8
    for round_index in range(3):
        key = f"claims/{round_index}"
        barrier = threading.Barrier(writers)

        def try_create(writer: int, key: str = key, barrier: threading.Barrier = barrier) -> int | None:
            barrier.wait()
            try:
                storage.write_bytes(key, f"writer {writer}".encode(), if_none_match=True)
            except PreconditionFailed:
                return None
            return writer

        with ThreadPoolExecutor(writers) as pool:
            winners = [w for w in pool.map(try_create, range(writers)) if w is not None]
        assert len(winners) == 1
        assert storage.read_bytes(key) == f"writer {winners[0]}".encode()


def test_compare_and_swap_counter_loses_no_increment(storage: Storage) -> None:
    storage.write_bytes("counter", b"0")
    threads, increments_each = 4, 5

    def increment_many(_: int) -> None:
        for _ in range(increments_each):
            while True:
                value, etag = storage.read_with_etag("counter")
                try:
                    storage.write_bytes("counter", str(int(value) + 1).encode(), if_match=etag)
                    break
                except PreconditionFailed:
                    continue  # someone else advanced it: re-read

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(increment_many, range(threads)))
    assert int(storage.read_bytes("counter")) == threads * increments_each


# --------------------------------------------------------------------------------------------------
# upload_file


def test_upload_file_round_trip(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(300_000))
    storage.upload_file("up/small.bin", source)
    assert storage.read_bytes("up/small.bin") == source.read_bytes()
    assert storage.list("up/") == ["up/small.bin"]
    with pytest.raises(FileNotFoundError):
        storage.upload_file("up/never.bin", tmp_path / "does-not-exist")
    assert storage.list("up/") == ["up/small.bin"]
    if isinstance(storage, LocalStorage):  # no temp file is left next to the result
        assert os.listdir(tmp_path / "out" / "up") == ["small.bin"]


def _multipart_etag(data: bytes, part_size: int) -> str:
    """S3's ETag of a multipart object: MD5 of the concatenated part MD5s, then '-<part count>'."""
    parts = [data[start : start + part_size] for start in range(0, len(data), part_size)]
    digest = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in parts)).hexdigest()
    return f"{digest}-{len(parts)}"


def test_large_s3_upload_is_multipart_and_invisible_until_complete(s3_url: str, tmp_path: Path) -> None:
    storage = open_storage(s3_url)
    observer = open_storage(s3_url)  # a second client, as another reader would have
    assert isinstance(storage, S3Storage) and isinstance(observer, S3Storage)
    data = os.urandom(12 * MiB)
    (tmp_path / "big.tar").write_bytes(data)
    seen_mid_upload = []

    def observe(**_: object) -> None:  # runs as each part's UploadPart returns, i.e. mid-upload
        uploads = observer.client.list_multipart_uploads(Bucket=observer.bucket, Prefix=observer.prefix)
        in_progress = [upload["Key"] for upload in uploads.get("Uploads", [])]
        seen_mid_upload.append((observer.exists("big.tar"), observer.list(), in_progress))

    storage.client.meta.events.register("after-call.s3.UploadPart", observe)
    storage.upload_file("big.tar", tmp_path / "big.tar")

    part_size = S3StorageConfig().part_size_bytes
    assert len(seen_mid_upload) == -(-len(data) // part_size) == 2
    assert all(seen == (False, [], [f"{storage.prefix}/big.tar"]) for seen in seen_mid_upload)
    assert observer.read_with_etag("big.tar") == (data, _multipart_etag(data, part_size))


def test_failed_s3_multipart_upload_leaves_nothing(s3_url: str, tmp_path: Path) -> None:
    storage = open_storage(s3_url)
    assert isinstance(storage, S3Storage)
    (tmp_path / "big.tar").write_bytes(os.urandom(12 * MiB))

    def fail_second_part(params: dict, **_: object) -> None:
        if params.get("PartNumber") == 2:
            raise ConnectionAbortedError("injected: the uploader lost its connection")

    storage.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    with pytest.raises(ConnectionAbortedError):
        storage.upload_file("big.tar", tmp_path / "big.tar")
    assert not storage.exists("big.tar") and storage.list() == []
    uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.prefix)
    assert uploads.get("Uploads", []) == []  # the upload was aborted, no parts are kept


# --------------------------------------------------------------------------------------------------
# Keys and URLs

BAD_KEYS = [
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/./b",
    "a//b",
    "a\\..\\b",
    "a\x00b",
    "",
    ".tmp-x",
]


@pytest.mark.parametrize("bad_key", BAD_KEYS)
def test_keys_cannot_escape_the_root(storage: Storage, bad_key: str) -> None:
    for operation in (
        storage.read_bytes,
        storage.exists,
        storage.delete,
        storage.local_path,
        lambda key: storage.write_bytes(key, b"x"),
        lambda key: storage.write_bytes(key, b"x", if_none_match=True),
    ):
        with pytest.raises(ValueError):
            operation(bad_key)
    if bad_key:  # "" is the whole root as a prefix
        with pytest.raises(ValueError):
            storage.list(bad_key)
    assert storage.list() == []


@pytest.mark.parametrize("url", ["gs://bucket/x", "s3://bucket/../x", "s3://Bad_Bucket/x", "file://host/x"])
def test_unsupported_or_malformed_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        open_storage(url)


def test_local_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="not a folder"):
        open_storage(str(tmp_path / "file"))


def test_local_urls_normalise_to_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert open_storage("rel/out").url == str(tmp_path / "rel" / "out")
    assert open_storage(f"file://{tmp_path}/x").url == str(tmp_path / "x")


# --------------------------------------------------------------------------------------------------
# Pickling (Storage objects travel into Ray tasks)


def test_pickled_copy_works_in_another_process(storage: Storage) -> None:
    storage.write_bytes("greeting", b"hello")
    blob = pickle.dumps(storage)
    assert SECRET.encode() not in blob
    reader = (
        "import pickle, sys; sys.stdout.buffer.write(pickle.load(sys.stdin.buffer).read_bytes('greeting'))"
    )
    child = subprocess.run(
        [sys.executable, "-c", reader], input=blob, capture_output=True, cwd=REPO_ROOT, timeout=60
    )
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout == b"hello"
    copy = pickle.loads(blob)
    copy.write_bytes("from-copy", b"x")
    assert storage.read_bytes("from-copy") == b"x"


# --------------------------------------------------------------------------------------------------
# Errors say what to fix, never the credentials


def test_unreachable_endpoint_names_endpoint_and_bucket_not_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with pytest.raises(StorageError) as caught:
        open_storage("s3://unreachable-bucket/run", s3=S3StorageConfig(max_attempts=2))
    message = str(caught.value)
    assert endpoint in message and "unreachable-bucket" in message and "AWS_ENDPOINT_URL" in message
    assert SECRET not in "".join(traceback.format_exception(caught.value))  # chained causes included


def test_missing_bucket_says_to_create_it(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StorageError) as caught:
        open_storage(f"s3://{bucket}/run")
    message = str(caught.value)
    assert bucket in message and s3_env["AWS_ENDPOINT_URL"] in message and "create" in message
    assert SECRET not in "".join(traceback.format_exception(caught.value))


def test_missing_credentials_say_to_set_them(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup
    with pytest.raises(StorageError, match="credentials") as caught:
        open_storage(s3_url)
    assert s3_url.split("/")[2] in str(caught.value)


# --------------------------------------------------------------------------------------------------
# infra.s3_server command line (the quick start starts and stops it this way)


def _exported_env(stdout: str) -> dict[str, str]:
    lines = [line.removeprefix("export ") for line in stdout.splitlines() if line.startswith("export ")]
    return dict(line.split("=", 1) for line in lines)


def _wait_until_down(url: str, attempts: int = 100) -> bool:
    for _ in range(attempts):
        if not _answers_http(url):
            return True
        time.sleep(0.1)
    return False


def test_s3_server_cli_detached_serves_until_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "s3.pid"
    command = ["--port", str(_closed_port()), "--bucket", "cli-demo", "--detach", "--pid-file", str(pid_file)]
    started = subprocess.run(
        [sys.executable, "-m", "infra.s3_server", *command],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    env = _exported_env(started.stdout)
    try:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        storage = open_storage("s3://cli-demo/quickstart")
        storage.write_bytes("hello", b"world")
        assert storage.read_bytes("hello") == b"world"
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert _wait_until_down(env["AWS_ENDPOINT_URL"])


def test_s3_server_cli_foreground_stops_on_sigterm() -> None:
    port = _closed_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "infra.s3_server", "--port", str(port), "--bucket", "fg-demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert server.stdout is not None
        exported = "".join(server.stdout.readline() for _ in range(4))  # printed once the bucket exists
        assert _exported_env(exported)["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        assert _answers_http(f"http://127.0.0.1:{port}")
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert _wait_until_down(f"http://127.0.0.1:{port}")  # the moto child went with it
    finally:
        if server.poll() is None:
            server.kill()


def test_size_is_the_byte_count_and_a_missing_object_is_object_not_found(tmp_path, s3_url):
    from pipelines.storage import ObjectNotFound, open_storage

    for storage in (open_storage(str(tmp_path / "local")), open_storage(s3_url)):
        storage.write_bytes("a/blob.bin", b"x" * 12345)
        assert storage.size("a/blob.bin") == 12345
        with pytest.raises(ObjectNotFound):
            storage.size("a/missing.bin")


def test_nothing_but_storage_imports_boto3():
    """The store interface is the one door to boto3 (tests may use it on purpose)."""
    root = Path(__file__).resolve().parents[1]
    offenders = [
        str(path.relative_to(root))
        for folder in ("pipelines", "model", "jobs", "infra", "benchmarks")
        for path in (root / folder).rglob("*.py")
        if re.search(r"^\s*(import|from)\s+(boto3|botocore)\b", path.read_text(), flags=re.M)
    ]
    assert offenders == ["pipelines/storage.py"]


def test_read_range_download_and_content_identity(storage: Storage, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    storage.write_bytes("src/caption.json", data)
    assert storage.read_range("src/caption.json", 5, 10) == data[5:15]
    assert storage.read_range("src/caption.json", len(data) - 3, 10) == data[-3:]  # clipped at the end
    assert storage.read_range("src/caption.json", 7, 0) == b""
    storage.download_file("src/caption.json", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    identity = storage.content_identity("src/caption.json")
    assert f"size={len(data)}" in identity
    storage.write_bytes("src/copy.json", data)  # the same bytes under another name, written later
    assert storage.content_identity("src/copy.json") == identity
    storage.write_bytes("src/changed.json", data[:-1] + b"x")
    assert storage.content_identity("src/changed.json") != identity
    with pytest.raises(ObjectNotFound):
        storage.read_range("src/missing.json", 0, 1)
    with pytest.raises(ObjectNotFound):
        storage.download_file("src/missing.json", tmp_path / "missing")
    with pytest.raises(ObjectNotFound):
        storage.content_identity("src/missing.json")
