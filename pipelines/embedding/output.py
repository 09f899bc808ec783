"""The embedding job's output folder (local or s3://), owned here: names, typed writes and reads.

    <out>/settings.json                what was asked (inputs, model identity, frame settings) + its digest; once
    <out>/plan.parquet                 every item: id, kind, source, part; written once, read on resume
    <out>/embeddings/<part>.parquet    id, embedding (float32[D], L2-normalised), model (identity digest)
                                       [+ text for queries]; the model identity also in the file's metadata
    <out>/manifest/<part>.parquet      one row per planned item: id, kind, status ok|failed, reason, detail;
                                       written LAST: the part's commit marker (as the sharding job's manifest)

A part is complete iff its manifest part exists; a rerun skips complete parts and redoes the others whole
(their embeddings file is simply replaced), so nothing is lost or duplicated.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.embedding.inputs import EmbedItem, Part
from pipelines.storage import Storage

SETTINGS_KEY = "settings.json"
PLAN_KEY = "plan.parquet"
EMBEDDINGS_PREFIX = "embeddings/"
MANIFEST_PREFIX = "manifest/"
_MODEL_METADATA_KEY = b"clip4clip_model"


class SettingsMismatchError(ValueError):
    """The output folder was made with other settings; resuming would mix two models' embeddings."""


@dataclass(frozen=True, kw_only=True)
class ItemOutcome:
    id: str
    kind: str
    status: str  # ok | failed
    reason: str = ""  # stable code: missing_file, truncated, decode_error, ..., unreadable_shard, empty_text
    detail: str = ""


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def write_or_check_settings(storage: Storage, settings: dict) -> None:
    digest = settings_digest(settings)
    if storage.exists(SETTINGS_KEY):
        saved = json.loads(storage.read_bytes(SETTINGS_KEY))
        if saved["digest"] != digest:
            changed = sorted(k for k in settings if saved["settings"].get(k) != settings[k])
            raise SettingsMismatchError(
                f"{storage.uri('')} was written with other settings (changed: {changed}); use a new --out"
            )
        return
    storage.write_bytes(SETTINGS_KEY, json.dumps({"digest": digest, "settings": settings}, indent=2).encode())


def write_plan(storage: Storage, parts: Sequence[Part]) -> None:
    rows = [{**asdict(item), "part": part.name} for part in parts for item in part.items]
    storage.write_bytes(PLAN_KEY, _parquet(pa.Table.from_pylist(rows, schema=_PLAN_SCHEMA)))


def read_plan(storage: Storage) -> list[Part]:
    rows = pq.read_table(io.BytesIO(storage.read_bytes(PLAN_KEY))).to_pylist()
    by_part: dict[str, list[EmbedItem]] = {}
    for row in rows:
        by_part.setdefault(row.pop("part"), []).append(EmbedItem(**row))
    return [Part(name=name, items=tuple(items)) for name, items in sorted(by_part.items())]


def completed_parts(storage: Storage) -> set[str]:
    return {
        key.rsplit("/", 1)[-1].removesuffix(".parquet")
        for key in storage.list(MANIFEST_PREFIX)
        if key.endswith(".parquet")
    }


def commit_part(
    storage: Storage,
    part: Part,
    embedded: Sequence[tuple[EmbedItem, np.ndarray]],
    outcomes: Sequence[ItemOutcome],
    *,
    model: dict,
) -> None:
    """The part's embeddings, then its manifest (the commit marker)."""
    storage.write_bytes(f"{EMBEDDINGS_PREFIX}{part.name}.parquet", _embeddings_table(embedded, model))
    table = pa.Table.from_pylist([asdict(o) for o in outcomes], schema=_MANIFEST_SCHEMA)
    storage.write_bytes(f"{MANIFEST_PREFIX}{part.name}.parquet", _parquet(table))


def read_embeddings(storage: Storage, kind: str = "video") -> tuple[list[str], np.ndarray, dict]:
    """(ids, (N, D) float32 embeddings, model identity) of the committed parts of one kind (video/text)."""
    ids: list[str] = []
    blocks, model = [], {}
    for name in sorted(completed_parts(storage)):
        if name.startswith("texts-") != (kind == "text"):
            continue
        table = pq.read_table(io.BytesIO(storage.read_bytes(f"{EMBEDDINGS_PREFIX}{name}.parquet")))
        model = json.loads((table.schema.metadata or {}).get(_MODEL_METADATA_KEY, b"{}"))
        ids += table.column("id").to_pylist()
        if table.num_rows:
            blocks.append(
                np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
            )
    embeddings = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)
    return ids, embeddings, model


def read_outcomes(storage: Storage) -> pa.Table:
    parts = [
        pq.read_table(io.BytesIO(storage.read_bytes(key)))
        for key in sorted(storage.list(MANIFEST_PREFIX))
        if key.endswith(".parquet")
    ]
    return pa.concat_tables(parts) if parts else _MANIFEST_SCHEMA.empty_table()


def model_digest(model: dict) -> str:
    return settings_digest(model)


def _embeddings_table(embedded: Sequence[tuple[EmbedItem, np.ndarray]], model: dict) -> bytes:
    dim = int(embedded[0][1].shape[0]) if embedded else 0
    columns = {
        "id": pa.array([item.id for item, _ in embedded], pa.string()),
        "embedding": pa.array(
            [vector.astype(np.float32) for _, vector in embedded],
            pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32()),
        ),
        "model": pa.array([model_digest(model)] * len(embedded), pa.string()).dictionary_encode(),
    }
    if any(item.kind == "text" for item, _ in embedded):
        columns["text"] = pa.array([item.text for item, _ in embedded], pa.string())
    table = pa.table(columns).replace_schema_metadata(
        {_MODEL_METADATA_KEY: json.dumps(model, sort_keys=True)}
    )
    return _parquet(table)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


_PLAN_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("kind", pa.string()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("sample_key", pa.string()),
        ("part", pa.string()),
    ]
)
_MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("kind", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
