"""Where jobs read and write: a local folder or an S3-compatible bucket, behind one small interface.

Every write is atomic (a reader sees the old object or the new one, never a partial one), which is
what the sharding job's "a shard is complete iff its manifest part exists" rests on. Conditional
writes (`if_none_match` / `if_match`) give compare-and-swap for pointers such as `latest.json`.

Keys are relative '/'-separated paths under the storage root. Local writes go through a temp file
named `.tmp-*` in the destination folder; such files (leftovers of a crash) are never listed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

TEMP_PREFIX = ".tmp-"  # reserved: temp files of in-flight (or crashed) local writes, never listed
_LOCAL_LOCK_NAME = f"{TEMP_PREFIX}conditional-writes.lock"
_MiB = 1024 * 1024
_S3_MIN_PART_BYTES = 5 * _MiB  # S3 (and moto) reject smaller non-final multipart parts
_S3_DELETE_BATCH = 1000  # DeleteObjects accepts at most 1000 keys per call
# 412 = the condition did not hold; 409 = AWS's "another conditional write is in flight, retry"
_LOST_CONDITION_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StorageError(Exception):
    """A storage operation failed; the message says what to fix and never contains credentials."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object already exists, or its etag is no longer the expected one."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The key does not exist (also a FileNotFoundError, so either can be caught)."""


@dataclass(frozen=True, kw_only=True)
class S3StorageConfig:
    """Client settings for S3-compatible endpoints; the endpoint and credentials come from the environment."""

    max_attempts: int = 5  # total tries per request, botocore "standard" retry mode
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    multipart_threshold_bytes: int = 8 * _MiB  # files at least this large go up as a multipart upload
    part_size_bytes: int = 8 * _MiB
    max_upload_concurrency: int = 8  # parts of one upload in flight at once

    def __post_init__(self) -> None:
        if self.part_size_bytes < _S3_MIN_PART_BYTES:
            raise ValueError(f"part_size_bytes={self.part_size_bytes} is below S3's 5 MiB minimum part size")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


@runtime_checkable
class Storage(Protocol):
    """A root (local folder or s3://bucket/prefix) holding objects addressed by relative keys."""

    url: str

    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...  # bytes; ObjectNotFound if absent (a HEAD on S3, not a GET)
    def read_bytes(self, key: str) -> bytes: ...
    def read_with_etag(self, key: str) -> tuple[bytes, str]: ...
    def read_range(self, key: str, offset: int, length: int) -> bytes: ...  # a Range GET on S3
    def content_identity(self, key: str) -> str: ...  # same bytes -> same string, mtime plays no part
    def open_read(self, key: str) -> BinaryIO: ...
    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None: ...
    def write_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str: ...
    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...


def open_storage(url: str, *, s3: S3StorageConfig | None = None) -> LocalStorage | S3Storage:
    """Open "/path", "relative/path", "file:///path" or "s3://bucket/prefix", failing early if unusable."""
    if "://" not in url:
        return LocalStorage(url)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "s3":
        storage = S3Storage(bucket=parsed.netloc, prefix=parsed.path, config=s3 or S3StorageConfig())
        storage.check_bucket()
        return storage
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url!r}: file:// URLs must name a local path (file:///abs/path)")
        return LocalStorage(urllib.parse.unquote(parsed.path))
    raise ValueError(
        f"{url!r}: unsupported storage URL; use a local path, file:///path or s3://bucket/prefix"
    )


def validate_key(key: str) -> str:
    """Return `key` if it is a canonical relative key that cannot escape the root, else raise ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"storage key must be a non-empty string, got {key!r}")
    _validate_segments(key, what="key")
    return key


def validate_prefix(prefix: str) -> str:
    """Like validate_key, but "" (everything) and a trailing '/' (a folder) are allowed."""
    if prefix:
        _validate_segments(prefix[:-1] if prefix.endswith("/") else prefix, what="prefix")
    return prefix


def _validate_segments(path: str, *, what: str) -> None:
    if "\\" in path or "\x00" in path:
        raise ValueError(f"storage {what} {path!r} must not contain backslashes or NUL characters")
    if path.startswith("/"):
        raise ValueError(f"storage {what} {path!r} must be relative to the storage root (no leading '/')")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"storage {what} {path!r} has an empty, '.' or '..' segment")
        if segment.startswith(TEMP_PREFIX):
            raise ValueError(f"storage {what} {path!r}: names starting with {TEMP_PREFIX!r} are reserved")


def md5_hex(data: bytes) -> str:
    """S3's etag of a single-part object; LocalStorage uses it as its etag too."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# --------------------------------------------------------------------------------------------------
# Local folder


class LocalStorage:
    """A folder on a local or shared filesystem; atomic writes by temp file + fsync + os.replace."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"storage root {self.root} exists but is not a folder; choose another --out")
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStorage({self.url!r})"

    def uri(self, key: str) -> str:
        return str(self._path(key)) if key else self.url

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """Bytes of the object; ObjectNotFound if there is none."""
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.url}")
        try:
            return path.stat().st_size
        except FileNotFoundError:  # deleted between the check and the stat
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from None

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as file:
            return file.read()

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.read_bytes(key)
        return data, md5_hex(data)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        with self.open_read(key) as file:
            file.seek(offset)
            return file.read(length)

    def content_identity(self, key: str) -> str:
        """Size plus a hash of the first and last MiB: reads 2 MiB, not the whole (multi-GB) file."""
        size = self.size(key)
        digest = hashlib.sha256()
        with self.open_read(key) as file:
            digest.update(file.read(_MiB))
            if size > 2 * _MiB:
                file.seek(size - _MiB)
            digest.update(file.read(_MiB))
        return f"size={size} head-tail-sha256={digest.hexdigest()[:32]}"

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller owns (and closes) the stream
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from None

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        with self.open_read(key) as source, open(local_path, "wb") as target:
            shutil.copyfileobj(source, target, 8 * _MiB)

    def write_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        path = self._path(key)
        _check_condition_args(if_none_match, if_match)
        if not if_none_match and if_match is None:
            _write_atomically(path, lambda file: file.write(data))
            return md5_hex(data)
        with self._conditional_write_lock():
            self._check_preconditions(key, if_none_match=if_none_match, if_match=if_match)
            _write_atomically(path, lambda file: file.write(data))
        return md5_hex(data)

    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        path = self._path(key)
        with open(local_path, "rb") as source:
            _write_atomically(path, lambda file: shutil.copyfileobj(source, file, 8 * _MiB))

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        search_dir = self.root / prefix.rpartition("/")[0]  # deepest folder the prefix names in full
        keys = []
        for dirpath, dirnames, filenames in os.walk(search_dir):
            folder_key = Path(dirpath).relative_to(self.root).as_posix()
            folder_key = "" if folder_key == "." else folder_key + "/"
            dirnames[:] = [d for d in dirnames if _folder_may_match(folder_key + d + "/", prefix)]
            keys += [folder_key + f for f in filenames if not f.startswith(TEMP_PREFIX)]
        return sorted(key for key in keys if key.startswith(prefix))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list(prefix):
            self.delete(key)
        if prefix.endswith("/"):  # a whole folder: also drop crash leftovers and the empty folders
            shutil.rmtree(self.root / prefix, ignore_errors=True)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    @contextlib.contextmanager
    def _conditional_write_lock(self) -> Iterator[None]:
        # One lock per root, held only for check-and-replace of small objects: flock excludes other
        # processes and other open() calls in this process alike.
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCAL_LOCK_NAME, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _check_preconditions(self, key: str, *, if_none_match: bool, if_match: str | None) -> None:
        try:
            _, current_etag = self.read_with_etag(key)
        except ObjectNotFound:
            if if_match is not None:
                raise PreconditionFailed(
                    f"{self.uri(key)} does not exist (expected etag {if_match})"
                ) from None
            return
        if if_none_match:
            raise PreconditionFailed(f"{self.uri(key)} already exists")
        if if_match is not None and _strip_quotes(if_match) != current_etag:
            raise PreconditionFailed(f"{self.uri(key)} changed: etag {current_etag}, expected {if_match}")


def _folder_may_match(folder_key: str, prefix: str) -> bool:
    """Whether keys under `folder_key` ("a/b/") can start with `prefix` (worth descending into)."""
    return folder_key.startswith(prefix) or prefix.startswith(folder_key)


def _write_atomically(final_path: Path, fill: Callable[[BinaryIO], Any]) -> None:
    """Write via a unique temp file in the same folder, fsync it, then rename over `final_path`."""
    final_path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = final_path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    try:
        with open(temp_path, "xb") as temp_file:
            fill(temp_file)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_path, final_path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_folder(final_path.parent)  # makes the rename itself survive a power loss


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"byte range needs offset >= 0 and length >= 0, got offset={offset} length={length}")


def _check_condition_args(if_none_match: bool, if_match: str | None) -> None:
    if if_none_match and if_match is not None:
        raise ValueError("pass if_none_match (create only) or if_match (replace only), not both")


def _strip_quotes(etag: str) -> str:
    return etag.strip('"')


# --------------------------------------------------------------------------------------------------
# S3-compatible object store


class S3Storage:
    """s3://bucket/prefix on AWS S3, MinIO, Ceph RGW or moto; picklable (the client is made lazily).

    The endpoint comes from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (read when the object is made, so a
    pickled copy in a Ray worker talks to the same endpoint); credentials come from boto3's standard
    chain in whichever process uses the copy and are never stored in the object.
    """

    def __init__(self, *, bucket: str, prefix: str = "", config: S3StorageConfig | None = None) -> None:
        if not _BUCKET_NAME.match(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.config = config or S3StorageConfig()
        self.endpoint_url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self._endpoint_for_messages()!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # boto3 clients do not pickle; the copy makes its own
        del state["_client_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 S3 client (thread-safe), created on first use in this process."""
        with self._client_lock:
            if self._client is None:
                self._client = _make_s3_client(self.endpoint_url, self.config)
            return self._client

    def check_bucket(self) -> None:
        """One cheap call (HeadBucket) so a wrong endpoint, bucket or credentials fail at start-up."""
        with self._translated_errors("checking the bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}" if key else self.url

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    def exists(self, key: str) -> bool:
        try:
            with self._translated_errors("checking", key):
                self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        with self._translated_errors("checking the size of", key):
            return int(
                self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))["ContentLength"]
            )

    def read_bytes(self, key: str) -> bytes:
        return self.read_with_etag(key)[0]

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        with self._translated_errors("reading", key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            return response["Body"].read(), _strip_quotes(response["ETag"])

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        if length == 0:
            return b""  # "bytes=N-(N-1)" is not a valid Range header
        with self._translated_errors("reading a byte range of", key):
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._object_key(key), Range=f"bytes={offset}-{offset + length - 1}"
            )
            return response["Body"].read()

    def content_identity(self, key: str) -> str:
        """ETag plus size (a HEAD): a byte-identical re-upload with the same part size keeps both."""
        with self._translated_errors("checking", key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        return f"size={int(head['ContentLength'])} etag={_strip_quotes(head['ETag'])}"

    def open_read(self, key: str) -> BinaryIO:
        with self._translated_errors("reading", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))["Body"]

    def presigned_get_url(self, key: str, *, expires_s: int = 900) -> str:
        """A URL that reads `key` without credentials until it expires. It IS a credential: never put it in a
        process's arguments (other users read /proc/*/cmdline), a log or a stored object. The sharding job
        does not use it (it spools); benchmarks/video_access.py does, to measure the alternative."""
        with self._translated_errors("signing a URL for", key):
            return str(
                self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": self._object_key(key)},
                    ExpiresIn=expires_s,
                )
            )

    def _transfer_config(self) -> Any:
        """boto3's managed-transfer settings (part size, threshold, concurrency) for uploads and downloads."""
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.config.multipart_threshold_bytes,
            multipart_chunksize=self.config.part_size_bytes,
            max_concurrency=self.config.max_upload_concurrency,
        )

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        # boto3's managed transfer: ranged parts in parallel for large objects, retried per part.
        transfer = self._transfer_config()
        with self._translated_errors("downloading", key):
            self.client.download_file(
                self.bucket, self._object_key(key), os.fspath(local_path), Config=transfer
            )

    def write_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        _check_condition_args(if_none_match, if_match)
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = f'"{_strip_quotes(if_match)}"'
        with self._translated_errors("writing", key, conditional=bool(conditions)):
            response = self.client.put_object(
                Bucket=self.bucket, Key=self._object_key(key), Body=data, **conditions
            )
        return _strip_quotes(response["ETag"])

    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        # boto3's managed transfer: one PUT below the threshold, else a multipart upload whose object
        # only appears on CompleteMultipartUpload (and which is aborted if any part fails).
        transfer = self._transfer_config()
        with self._translated_errors("uploading", key):
            self.client.upload_file(
                os.fspath(local_path), self.bucket, self._object_key(key), Config=transfer
            )

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        keys = []
        with self._translated_errors("listing", prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
                keys += [item["Key"][len(root) :] for item in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, key: str) -> None:
        with self._translated_errors("deleting", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list(prefix)
        for start in range(0, len(keys), _S3_DELETE_BATCH):
            batch = [{"Key": self._object_key(key)} for key in keys[start : start + _S3_DELETE_BATCH]]
            with self._translated_errors("deleting", prefix):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(
                    f"could not delete {len(response['Errors'])} objects under {self._location(prefix)}, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _location(self, key_or_prefix: str) -> str:
        """s3:// URL of a key or prefix for messages (no validation: it may be the bad input itself)."""
        return f"{self.url}/{key_or_prefix}" if key_or_prefix else self.url

    def _endpoint_for_messages(self) -> str:
        endpoint = self.endpoint_url or (self._client.meta.endpoint_url if self._client else None)
        return _without_userinfo(endpoint) if endpoint else "the default AWS S3 endpoint"

    @contextlib.contextmanager
    def _translated_errors(self, action: str, key: str = "", *, conditional: bool = False) -> Iterator[None]:
        """Turn botocore/boto3 exceptions into StorageError subclasses with what to fix."""
        import boto3.exceptions
        import botocore.exceptions

        try:
            yield
        except botocore.exceptions.ClientError as err:
            raise self._client_error(err, action, key, conditional=conditional) from err
        except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as err:
            raise StorageError(
                self._credentials_message(action, key, "no (complete) credentials found")
            ) from err
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as err:
            raise StorageError(self._unreachable_message(action, key, type(err).__name__)) from err
        except boto3.exceptions.S3UploadFailedError as err:  # wraps a ClientError's text
            raise StorageError(
                f"uploading to {self._location(key)} at {self._endpoint_for_messages()} failed: {err}"
            ) from err

    def _client_error(self, err: Any, action: str, key: str, *, conditional: bool) -> StorageError:
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        where = f"{self._location(key)} at {self._endpoint_for_messages()}"
        if conditional and (code in _LOST_CONDITION_CODES or status in (409, 412)):
            return PreconditionFailed(f"conditional write to {where} lost ({code}): re-read and retry")
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and not key):
            return StorageError(
                f"bucket {self.bucket!r} does not exist at {self._endpoint_for_messages()}: create it "
                f"(e.g. `aws --endpoint-url {self._endpoint_for_messages()} s3 mb s3://{self.bucket}`) or "
                "fix the bucket name / AWS_ENDPOINT_URL"
            )
        if code in ("NoSuchKey", "404", "NotFound"):
            if conditional:  # If-Match on an object that is gone
                return PreconditionFailed(f"conditional write to {where} lost: the object no longer exists")
            return ObjectNotFound(f"no object {self._location(key)} at {self._endpoint_for_messages()}")
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(self._credentials_message(action, key, f"access denied ({code})"))
        return StorageError(
            f"{action} {where} failed: {code} {err.response.get('Error', {}).get('Message', '')}"
        )

    def _credentials_message(self, action: str, key: str, problem: str) -> str:
        return (
            f"{action} {self._location(key)} at {self._endpoint_for_messages()} (bucket {self.bucket!r}): {problem}. "
            "Check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance "
            "role, and that they may access this bucket."
        )

    def _unreachable_message(self, action: str, key: str, error_name: str) -> str:
        return (
            f"{action} {self._location(key)}: cannot reach the S3 endpoint {self._endpoint_for_messages()} "
            f"(bucket {self.bucket!r}; {error_name}). Is the server running? Set AWS_ENDPOINT_URL to the "
            "endpoint of your S3-compatible server (e.g. http://127.0.0.1:9000 for the local quick start)."
        )


def _make_s3_client(endpoint_url: str | None, config: S3StorageConfig) -> Any:
    import boto3.session
    import botocore.config
    import botocore.session

    # botocore says "Found credentials in environment variables" at INFO for every client, in every process
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    client_config = botocore.config.Config(
        retries={"max_attempts": config.max_attempts, "mode": "standard"},
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.read_timeout_s,
        max_pool_connections=max(10, config.max_upload_concurrency),
    )
    # A new session per client resolves credentials afresh; sharing the data loader keeps each new
    # client from re-parsing botocore's service JSON (~0.4 s a client, ~20 ms with the loader shared).
    botocore_session = botocore.session.get_session()
    botocore_session.register_component("data_loader", _shared_data_loader())
    session = boto3.session.Session(botocore_session=botocore_session)
    return session.client("s3", endpoint_url=endpoint_url, config=client_config)


@functools.cache
def _shared_data_loader() -> Any:
    import botocore.loaders

    return botocore.loaders.create_loader()


def _without_userinfo(url: str) -> str:
    """Drop any user:password@ from an endpoint URL before it goes into a message."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
