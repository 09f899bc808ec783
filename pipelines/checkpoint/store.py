"""The checkpoint store: atomic, committed, resumable checkpoints in a local folder or on S3.

Layout under `<root>/<run>/` (every file name: pipelines.checkpoint.layout):

    step-00001000/model.safetensors, train_state.pt, config.json, metrics.json, ...   (what the trainer wrote)
    step-00001000/COMMITTED.json     written LAST: every file's size and sha256 -> the checkpoint is committed
    latest.json                      {"step": 1000, "path": "step-00001000", ...}; advanced after the marker

Readers trust only committed checkpoints whose files match the marker; anything else (a save killed
half-way, a truncated file, a pointer at a deleted folder) is skipped with a warning and the newest
older good checkpoint is used. `latest.json` only ever moves forward (compare-and-swap), so a slow
or stale writer cannot roll a run back. Pruning deletes a checkpoint's marker before its files, so
a crash while pruning leaves an uncommitted folder, never a committed one with holes.

A save first writes `SAVING.json` (start time, host, pid; kept as provenance) into its folder, so
pruning can tell a save in flight (another writer of the run, e.g. a stale job still running) from the
leftovers of a crash: uncommitted folders are deleted only once that file is older than
`stale_save_after_s` (or absent). Should a folder still vanish under a save, the save raises
CheckpointError rather than commit it, and readers verify every file against the marker anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pipelines.checkpoint.layout import (
    COMMIT_MARKER,
    IN_PROGRESS,
    LATEST,
    LATEST_ALIASES,
    STEP_FOLDER,
    step_folder_name,
    step_of,
)
from pipelines.config_values import PositiveFloat, PositiveInt
from pipelines.failpoints import failpoint
from pipelines.storage import (
    TEMP_PREFIX,
    ObjectNotFound,
    PreconditionFailed,
    S3StorageConfig,
    Storage,
    open_storage,
    validate_key,
)

logger = logging.getLogger(__name__)

MARKER_FORMAT = "clip4clip-checkpoint/1"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK_BYTES = 8 * 1024 * 1024
_CAS_ATTEMPTS = 50  # each lost race means another writer advanced latest.json; it converges fast
_DOWNLOAD_THREADS = 4  # files fetched at once: one GET stream per file is bound by one connection
_T = TypeVar("_T")


class CheckpointError(Exception):
    """A checkpoint could not be saved or used; the message says which and why."""


class CheckpointCorrupt(CheckpointError):
    """A committed checkpoint's files do not match its commit marker (missing, truncated, altered)."""


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """When to checkpoint and how many to keep."""

    every_steps: PositiveInt = 1000  # the trainer saves when step % every_steps == 0, and at the end
    keep_last: PositiveInt = 3  # committed checkpoints kept (plus whichever latest.json points at)
    # False for S3-compatible stores without If-Match / If-None-Match: latest.json is then advanced by
    # read-compare-write, safe with one writer (the normal case) but not against concurrent ones.
    conditional_writes: bool = True
    # An uncommitted folder whose save started longer ago than this is a crash leftover (prunable);
    # younger ones may be a save still uploading. Longer than any single save takes.
    stale_save_after_s: PositiveFloat = 3600.0

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {self.every_steps}")
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 (the checkpoint to resume from), got {self.keep_last}")

    def is_due(self, step: int) -> bool:
        return step > 0 and step % self.every_steps == 0


@dataclass(frozen=True, kw_only=True)
class CheckpointRef:
    """A committed checkpoint, as its commit marker describes it."""

    url: str  # full URL (or local path) of the step folder
    step: int
    name: str  # folder name, "step-00001000"
    files: dict[str, int]  # file name (relative to the folder) -> bytes
    sha256: dict[str, str] = field(repr=False)  # file name -> hex digest
    committed_utc: str = ""  # ISO 8601 time the marker was written


@dataclass(frozen=True, kw_only=True)
class _LocalFile:
    name: str  # '/'-separated, relative to the checkpoint folder
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class _StepListing:
    name: str
    keys: frozenset[str]  # keys relative to the step folder

    @property
    def has_marker(self) -> bool:
        return COMMIT_MARKER in self.keys


@dataclass(frozen=True, kw_only=True)
class _LatestPointer:
    step: int
    path: str


class CheckpointStore:
    """Checkpoints of one run, `<root_url>/<run_name>/`, on a local folder or s3://bucket/prefix."""

    def __init__(
        self,
        root_url: str,
        run_name: str,
        *,
        config: CheckpointConfig | None = None,
        s3: S3StorageConfig | None = None,
    ) -> None:
        if not isinstance(run_name, str) or not _RUN_NAME.match(run_name):
            raise ValueError(
                f"run name {run_name!r} must be one folder name of letters, digits, '.', '_', '-'"
            )
        self.config = config or CheckpointConfig()
        self.run_name = run_name
        # Opened now: an unreachable or misconfigured store fails here with a StorageError naming the
        # endpoint and bucket, before any training time is spent.
        self.storage: Storage = open_storage(_join_url(root_url, run_name), s3=s3)
        self.url = self.storage.url
        self._jitter = random.Random()  # own instance: saving must not perturb the trainer's RNG

    def __repr__(self) -> str:
        return f"CheckpointStore({self.url!r})"

    # ---------------------------------------------------------------------------------------------
    # Writing

    def save(self, step: int, folder: str | os.PathLike[str]) -> CheckpointRef:
        """Upload every file of the local `folder` as checkpoint `step`, commit it, advance latest.json
        (forward only) and prune. Saving an already committed step with identical files only
        re-does the last two (a retried save); with different files it replaces the checkpoint."""
        _check_step(step)
        local_files = _describe_local_folder(Path(folder))
        name = step_folder_name(step)
        marker = _marker_for(step, local_files)
        existing = self._marker_if_readable(name)
        if existing is not None and _same_files(existing, marker):
            logger.info(
                "%s is already committed with these files; not uploading again", self.storage.uri(name)
            )
            marker = existing
        else:
            replacing = self.storage.exists(f"{name}/{COMMIT_MARKER}")  # committed, maybe garbled
            self._upload_and_commit(name, local_files, marker, replacing=replacing)
        failpoint("checkpoint_before_latest")
        self._advance_latest(step, name)
        self.prune(protect=(step,))
        return _ref_from_marker(self.storage.uri(name), name, marker)

    def prune(self, *, protect: Iterable[int] = ()) -> None:
        """Keep the newest `keep_last` committed checkpoints, the one latest.json points at and the
        `protect`ed steps; delete older committed ones, and uncommitted folders older than the newest
        committed one unless their SAVING.json is younger than `stale_save_after_s` (a save in flight
        rather than a crash leftover). Newer uncommitted folders are left alone: saves in flight."""
        listings = self._scan()
        committed_steps = sorted(step for step, listing in listings.items() if listing.has_marker)
        if not committed_steps:
            return
        keep = set(committed_steps[-self.config.keep_last :]) | set(protect)
        pointer, _, _ = self._read_latest()
        if pointer is not None:
            keep.add(pointer.step)
        for step, listing in sorted(listings.items()):
            if step in keep:
                continue
            if listing.has_marker or (step < committed_steps[-1] and not self._save_in_flight(listing)):
                self._delete_step_folder(listing)

    def _upload_and_commit(
        self, name: str, local_files: list[_LocalFile], marker: dict[str, Any], *, replacing: bool
    ) -> None:
        if replacing:
            logger.warning(
                "%s is committed with different files: replacing it (uncommitted until the new marker lands)",
                self.storage.uri(name),
            )
            self.storage.delete(f"{name}/{COMMIT_MARKER}")  # readers stop trusting it before files change
        self.storage.delete_prefix(f"{name}/")  # leftovers of an interrupted save of this step
        self.storage.write_bytes(f"{name}/{IN_PROGRESS}", _in_progress_record())
        for file in local_files:  # one at a time: S3 multipart uploads already send parts in parallel
            self.storage.upload_file(f"{name}/{file.name}", file.path)
        failpoint("checkpoint_before_marker")
        self._write_marker(name, marker)
        self._check_still_complete(name, local_files)

    def _write_marker(self, name: str, marker: dict[str, Any]) -> None:
        key = f"{name}/{COMMIT_MARKER}"
        body = json.dumps(marker, indent=1, sort_keys=True).encode()
        try:
            self.storage.write_bytes(key, body, if_none_match=self.config.conditional_writes)
        except PreconditionFailed:  # another writer committed this step between our check and now
            winner = self._marker_or_none(name)
            if winner is None or not _same_files(winner, marker):
                raise CheckpointError(
                    f"{self.storage.uri(name)} was committed by another writer with different files while "
                    "this save was uploading: two trainers are writing the same run; use distinct --run-name"
                ) from None

    def _check_still_complete(self, name: str, local_files: list[_LocalFile]) -> None:
        present = set(self.storage.list(f"{name}/"))
        missing = sorted(f.name for f in local_files if f"{name}/{f.name}" not in present)
        if missing:
            self.storage.delete(f"{name}/{COMMIT_MARKER}")
            raise CheckpointError(
                f"{self.storage.uri(name)}: {missing} vanished while it was being saved (another writer of "
                "this run pruned it?); the checkpoint was not committed"
            )

    def _advance_latest(self, step: int, name: str) -> None:
        """Compare-and-swap loop: move latest.json to `step` unless it already names a step >= it."""
        for attempt in range(_CAS_ATTEMPTS):
            pointer, etag, _ = self._read_latest()
            if pointer is not None and pointer.step >= step:
                if pointer.step > step:
                    logger.info("%s stays at step %d (newer than step %d)", LATEST, pointer.step, step)
                return
            if self._try_write_latest(step, name, etag):
                return
            time.sleep(self._jitter.uniform(0, 0.02 * (attempt + 1)))
        raise CheckpointError(
            f"could not advance {self.storage.uri(LATEST)} to step {step}: lost {_CAS_ATTEMPTS} compare-and-"
            "swap races in a row; several writers are saving this run at once"
        )

    def _try_write_latest(self, step: int, name: str, etag: str | None) -> bool:
        body = json.dumps({"step": step, "path": name, "updated_utc": _utc_now()}, sort_keys=True).encode()
        try:
            if not self.config.conditional_writes:
                self.storage.write_bytes(LATEST, body)
            elif etag is None:
                self.storage.write_bytes(LATEST, body, if_none_match=True)
            else:
                self.storage.write_bytes(LATEST, body, if_match=etag)
        except PreconditionFailed:
            return False
        return True

    def _save_in_flight(self, listing: _StepListing) -> bool:
        """Whether an uncommitted folder's save started less than `stale_save_after_s` ago."""
        if IN_PROGRESS not in listing.keys:
            return False
        try:
            started = float(
                json.loads(self.storage.read_bytes(f"{listing.name}/{IN_PROGRESS}"))["started_unix"]
            )
        except (ObjectNotFound, ValueError, KeyError, TypeError):
            return False  # gone meanwhile, or unreadable: nothing vouches for it
        return time.time() - started < self.config.stale_save_after_s

    def _delete_step_folder(self, listing: _StepListing) -> None:
        if listing.has_marker:  # uncommit first: a crash mid-delete must not leave a committed husk
            self.storage.delete(f"{listing.name}/{COMMIT_MARKER}")
        self.storage.delete_prefix(f"{listing.name}/")
        logger.info("pruned %s", self.storage.uri(listing.name))

    # ---------------------------------------------------------------------------------------------
    # Reading

    def latest(self, *, verify_sha256: bool = False) -> CheckpointRef | None:
        """The checkpoint latest.json points at, verified (sizes; also sha256 if asked, which reads every
        byte); if it is missing or broken, a WARNING says why and the newest older good one is used.
        None when the run has no committed checkpoint. A committed checkpoint newer than the pointer
        (a save killed between its marker and latest.json) is not used: the pointer is the truth."""
        pointer, _, problem = self._read_latest()
        listings = self._scan()
        older_than = None
        if pointer is not None:
            ref, why = self._verified_ref(pointer.path, verify_sha256=verify_sha256)
            if ref is not None:
                return ref
            logger.warning(
                "%s points at %s, which %s; falling back", self.storage.uri(LATEST), pointer.path, why
            )
            older_than = pointer.step
        elif problem and any(listing.has_marker for listing in listings.values()):
            logger.warning("%s; using the newest committed checkpoint", problem)
        return self._newest_verified(listings, older_than=older_than, verify_sha256=verify_sha256)

    def committed(self) -> list[CheckpointRef]:
        """Every committed checkpoint of the run (marker present and readable), ascending step; files
        are not verified here (latest() and download() do that)."""
        refs = []
        for _, listing in sorted(self._scan().items()):
            if listing.has_marker:
                with contextlib.suppress(CheckpointCorrupt):
                    refs.append(self._ref_from_stored_marker(listing.name))
        return refs

    def download(self, ref: CheckpointRef, target: str | os.PathLike[str]) -> Path:
        """Stream every file of `ref` into the local folder `target` (created), checking each file's size
        and sha256 against the marker; CheckpointCorrupt if one differs. Returns `target`."""
        if ref.url == self.storage.uri(ref.name):
            return _download_files(self.storage, f"{ref.name}/", ref, Path(target))
        return download_checkpoint(ref, target)

    def read_file(self, ref: CheckpointRef, file: str) -> bytes:
        """One (small) file of a committed checkpoint of this run, e.g. its metrics or loss curve, checked
        against the commit marker; ValueError if the checkpoint has no such file."""
        if file not in ref.files:
            raise ValueError(f"checkpoint {ref.url} has no {file} (its files: {sorted(ref.files)})")
        data = self.storage.read_bytes(f"{ref.name}/{file}")
        if hashlib.sha256(data).hexdigest() != ref.sha256[file]:
            raise CheckpointCorrupt(
                f"{ref.url}/{file} does not match its commit marker; the checkpoint is damaged"
            )
        return data

    def _newest_verified(
        self, listings: dict[int, _StepListing], *, older_than: int | None, verify_sha256: bool
    ) -> CheckpointRef | None:
        for step in sorted(listings, reverse=True):
            if older_than is not None and step >= older_than:
                continue
            ref, why = self._verified_ref(listings[step].name, verify_sha256=verify_sha256)
            if ref is not None:
                return ref
            if listings[step].has_marker:
                logger.warning("skipping checkpoint %s: it %s", self.storage.uri(listings[step].name), why)
            else:
                logger.info("skipping %s: %s", self.storage.uri(listings[step].name), why)
        return None

    def _verified_ref(self, name: str, *, verify_sha256: bool) -> tuple[CheckpointRef | None, str]:
        """(ref, "") if `name` is committed and its files match the marker, else (None, what is wrong)."""
        try:
            ref = self._ref_from_stored_marker(name)
        except ObjectNotFound:
            return None, f"has no commit marker {COMMIT_MARKER} (an interrupted save, or deleted)"
        except CheckpointCorrupt as err:
            return None, str(err)
        problem = _verify_files(self.storage, f"{name}/", ref, verify_sha256=verify_sha256)
        return (None, problem) if problem else (ref, "")

    def _ref_from_stored_marker(self, name: str) -> CheckpointRef:
        marker = self._marker_or_none(name)
        if marker is None:
            raise ObjectNotFound(f"no {COMMIT_MARKER} in {self.storage.uri(name)}")
        return _ref_from_marker(self.storage.uri(name), name, marker)

    def _marker_if_readable(self, name: str) -> dict[str, Any] | None:
        try:
            return self._marker_or_none(name)
        except CheckpointCorrupt:
            return None

    def _marker_or_none(self, name: str) -> dict[str, Any] | None:
        """The parsed commit marker; None if absent; CheckpointCorrupt if unreadable or inconsistent."""
        try:
            raw = self.storage.read_bytes(f"{name}/{COMMIT_MARKER}")
        except ObjectNotFound:
            return None
        return _parse_marker(raw, self.storage.uri(f"{name}/{COMMIT_MARKER}"), expected_name=name)

    def _read_latest(self) -> tuple[_LatestPointer | None, str | None, str]:
        """(pointer, etag, problem): pointer None when latest.json is absent or unreadable, and then
        `problem` says which (etag is set whenever the object exists, for compare-and-swap)."""
        uri = self.storage.uri(LATEST)
        try:
            raw, etag = self.storage.read_with_etag(LATEST)
        except ObjectNotFound:
            return None, None, f"{uri} is missing"
        try:
            data = json.loads(raw)
            pointer = _LatestPointer(step=int(data["step"]), path=str(data["path"]))
        except (ValueError, KeyError, TypeError) as err:
            return None, etag, f"{uri} is unreadable ({type(err).__name__}: {err})"
        if pointer.path != step_folder_name(pointer.step):
            return None, etag, f"{uri} is inconsistent: step {pointer.step} but path {pointer.path!r}"
        return pointer, etag, ""

    def _scan(self) -> dict[int, _StepListing]:
        """Step folders of the run (committed or not) from one listing."""
        keys_by_folder: dict[str, set[str]] = {}
        for key in self.storage.list():
            folder, _, rest = key.partition("/")
            if rest and STEP_FOLDER.match(folder):
                keys_by_folder.setdefault(folder, set()).add(rest)
        return {
            step_of(folder): _StepListing(name=folder, keys=frozenset(keys))
            for folder, keys in keys_by_folder.items()
        }


# --------------------------------------------------------------------------------------------------
# Hand-off: resolving a URL, downloading without a store


def resolve_checkpoint(url: str) -> CheckpointRef:
    """The committed checkpoint a URL names: "<root>/<run>/step-00001000", "<root>/<run>/latest" or
    "<root>/<run>" (= latest); local path, file:// or s3://. ValueError (saying what is wrong) for a
    folder without a commit marker, a checkpoint whose files do not match it, or a run with none."""
    trimmed = url.rstrip("/")
    parent, last = _split_last(trimmed)
    if STEP_FOLDER.match(last):
        return _resolve_step(parent, last)
    run_url = parent if last in LATEST_ALIASES else trimmed
    store = _store_for_run_url(run_url)
    ref = store.latest()
    if ref is None:
        raise ValueError(
            f"{store.url} has no committed checkpoint (no step-*/{COMMIT_MARKER} with intact files)"
        )
    return ref


def download_checkpoint(ref: CheckpointRef, target: str | os.PathLike[str]) -> Path:
    """CheckpointStore.download for a ref from resolve_checkpoint (opens the ref's folder directly)."""
    return _download_files(open_storage(ref.url), "", ref, Path(target))


def _resolve_step(run_url: str, name: str) -> CheckpointRef:
    store = _store_for_run_url(run_url)
    ref, why = store._verified_ref(name, verify_sha256=False)
    if ref is not None:
        return ref
    committed = [r.name for r in store.committed()]
    if not committed:
        raise ValueError(
            f"{store.storage.uri(name)} is not a usable checkpoint: it {why}, and {store.url} has no committed "
            f"checkpoint at all; check the path (a run folder holds step-NNNNNNNN/ folders)"
        )
    raise ValueError(
        f"{store.storage.uri(name)} is not a usable checkpoint: it {why}. Committed checkpoints of this run: "
        f"{committed}; pass one of them, or {store.url}/latest for the newest"
    )


def _store_for_run_url(run_url: str) -> CheckpointStore:
    if "://" not in run_url:
        path = Path(run_url).expanduser().absolute()
        return CheckpointStore(str(path.parent), path.name)
    root, run_name = _split_last(run_url)
    if not root:
        raise ValueError(
            f"{run_url!r} does not name a run folder: expected <root>/<run>[/step-NNNNNNNN|/latest]"
        )
    return CheckpointStore(root, run_name)


def _split_last(url: str) -> tuple[str, str]:
    parent, _, last = url.rstrip("/").rpartition("/")
    if parent.endswith(":/"):  # "s3://bucket": the bucket itself is the last segment, no parent folder
        return "", url
    return parent, last


def _join_url(root_url: str, name: str) -> str:
    if "://" in root_url:
        return f"{root_url.rstrip('/')}/{name}"
    return str(Path(root_url).expanduser() / name)


# --------------------------------------------------------------------------------------------------
# Files and markers


def _describe_local_folder(folder: Path) -> list[_LocalFile]:
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(TEMP_PREFIX))
    if not paths:
        raise ValueError(
            f"checkpoint folder {folder} is empty: write the model and train state into it first"
        )
    files = []
    for path in paths:
        name = validate_key(path.relative_to(folder).as_posix())
        if name in (COMMIT_MARKER, IN_PROGRESS):
            raise ValueError(f"{path}: {name} is reserved for the checkpoint store's own records; rename it")
        files.append(_LocalFile(name=name, path=path, size=path.stat().st_size, sha256=_sha256_of_file(path)))
    return files


def _in_progress_record() -> bytes:
    record = {
        "started_unix": time.time(),
        "started_utc": _utc_now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    return json.dumps(record, sort_keys=True).encode()


def _marker_for(step: int, files: list[_LocalFile]) -> dict[str, Any]:
    return {
        "format": MARKER_FORMAT,
        "step": step,
        "committed_utc": _utc_now(),
        "files": {f.name: {"bytes": f.size, "sha256": f.sha256} for f in files},
    }


def _same_files(marker: dict[str, Any], other: dict[str, Any]) -> bool:
    return marker["files"] == other["files"]


def _parse_marker(raw: bytes, uri: str, *, expected_name: str) -> dict[str, Any]:
    try:
        marker = json.loads(raw)
        files = marker["files"]
        valid = (
            marker.get("format") == MARKER_FORMAT
            and step_folder_name(int(marker["step"])) == expected_name
            and all(isinstance(v["bytes"], int) and isinstance(v["sha256"], str) for v in files.values())
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointCorrupt(
            f"has an unreadable commit marker {uri} ({type(err).__name__}: {err})"
        ) from None
    if not valid:
        raise CheckpointCorrupt(f"has a commit marker {uri} of another format or step")
    return marker


def _ref_from_marker(url: str, name: str, marker: dict[str, Any]) -> CheckpointRef:
    files = marker["files"]
    return CheckpointRef(
        url=url,
        step=int(marker["step"]),
        name=name,
        files={file: entry["bytes"] for file, entry in files.items()},
        sha256={file: entry["sha256"] for file, entry in files.items()},
        committed_utc=str(marker.get("committed_utc", "")),
    )


def _verify_files(storage: Storage, prefix: str, ref: CheckpointRef, *, verify_sha256: bool) -> str:
    """ "" if every file of `ref` is there with the marker's size (and sha256), else what is wrong."""
    for file, expected_size in ref.files.items():
        try:
            size = storage.size(prefix + file)
        except ObjectNotFound:
            return f"is missing {file} (listed in its commit marker)"
        if size != expected_size:
            return (
                f"has {file} of {size} bytes, its commit marker says {expected_size} (truncated or replaced)"
            )
        if verify_sha256:
            with storage.open_read(prefix + file) as stream:
                digest = _sha256_of_stream(stream, lambda _: None)
            if digest != ref.sha256[file]:
                return f"has {file} with sha256 {digest}, its commit marker says {ref.sha256[file]}"
    return ""


def _download_files(storage: Storage, prefix: str, ref: CheckpointRef, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    _run_parallel(lambda file: _download_one(storage, prefix + file, ref, file, target), list(ref.files))
    return target


def _download_one(storage: Storage, key: str, ref: CheckpointRef, file: str, target: Path) -> None:
    final_path = target / validate_key(file)  # validated: marker names must not escape the target
    final_path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = final_path.with_name(f"{TEMP_PREFIX}{final_path.name}.{os.getpid()}")
    try:
        digest = _fetch_and_hash(storage, key, temp_path)
        size = temp_path.stat().st_size
        if size != ref.files[file] or digest != ref.sha256[file]:
            raise CheckpointCorrupt(
                f"{storage.uri(key)}: {size} bytes with sha256 {digest}, but the commit marker of {ref.url} "
                f"says {ref.files[file]} bytes with sha256 {ref.sha256[file]}; the checkpoint is damaged"
            )
        os.replace(temp_path, final_path)
    finally:
        temp_path.unlink(missing_ok=True)


def _fetch_and_hash(storage: Storage, key: str, destination: Path) -> str:
    """Copy the object to `destination`; return the sha256 of what landed there."""
    source_path = storage.local_path(key)
    if source_path is None:  # S3: one streamed GET, hashed on the way (never all in memory)
        with storage.open_read(key) as stream, open(destination, "wb") as out:
            return _sha256_of_stream(stream, out.write)
    try:  # local or shared filesystem: an in-kernel copy (copy_file_range / sendfile), then hash the copy
        shutil.copyfile(source_path, destination)
    except FileNotFoundError:
        raise ObjectNotFound(f"no object {key!r} in {storage.url}") from None
    return _sha256_of_file(destination)


def _sha256_of_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return _sha256_of_stream(stream, lambda _: None)


def _sha256_of_stream(stream: BinaryIO, sink: Callable[[bytes], Any]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK_BYTES):
        digest.update(chunk)
        sink(chunk)
    return digest.hexdigest()


def _run_parallel(work: Callable[[_T], Any], items: list[_T]) -> None:
    """Run `work` on every item, a few at a time; re-raise the first failure after all have finished."""
    with ThreadPoolExecutor(max_workers=max(1, min(_DOWNLOAD_THREADS, len(items)))) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


def _check_step(step: int) -> None:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
