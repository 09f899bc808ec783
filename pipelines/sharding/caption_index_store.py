"""The caption index kept next to the plan (`<out>/caption_index.parquet`), so caption.json is scanned once.

Scanning a multi-GB caption.json is the slowest step of planning; the index is stored in the output
storage with the identity of the caption file it was built from (content, not mtime) and reused by any
later planning of this output whose caption file has the same identity.
"""

from __future__ import annotations

import contextlib
import logging

from pipelines.howto100m import CaptionIndex, index_caption_stream
from pipelines.sharding.sources import captions_identity, open_source_file
from pipelines.storage import Storage, StorageError

log = logging.getLogger(__name__)

CAPTION_INDEX_KEY = "caption_index.parquet"


def load_or_build_caption_index(out: Storage, captions_url: str, identity: str) -> CaptionIndex:
    """The stored index if it was built from a caption file with `identity`, else one scan (then stored)."""
    stored = _stored_index(out, identity)
    if stored is not None:
        log.info("reusing %s (caption file %s)", out.uri(CAPTION_INDEX_KEY), identity)
        return stored
    log.info("indexing %s (one streaming pass)", captions_url)
    storage, key = open_source_file(captions_url)
    with contextlib.closing(storage.open_read(key)) as stream:
        index = index_caption_stream(stream, name=captions_url)
    if captions_identity(captions_url) != identity:
        raise StorageError(f"--captions {captions_url!r} changed while it was being indexed; rerun the job")
    stamp = {"captions_identity": identity, "captions": captions_url}
    out.write_bytes(CAPTION_INDEX_KEY, index.to_parquet_bytes(stamp))
    return index


def _stored_index(out: Storage, identity: str) -> CaptionIndex | None:
    if not out.exists(CAPTION_INDEX_KEY):
        return None
    index, stamp = CaptionIndex.from_parquet_bytes(
        out.read_bytes(CAPTION_INDEX_KEY), name=out.uri(CAPTION_INDEX_KEY)
    )
    if stamp.get("captions_identity") != identity:
        log.warning(
            "%s was built from another caption file (%s, now %s); indexing again",
            out.uri(CAPTION_INDEX_KEY),
            stamp.get("captions_identity"),
            identity,
        )
        return None
    return index
