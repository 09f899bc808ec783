"""Writes WebDataset samples (one per video) into a local tar file.

Members are `<key>.json` then `<key>.000000.jpg`, `<key>.000001.jpg`, ...: the stock reader
groups them by the text before the first dot, and a reader decodes only the frames it samples.
Member metadata is fixed (mtime, owner) so the same input gives byte-identical tars.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

FIXED_MTIME = 1_600_000_000  # constant member mtime: reruns write identical bytes


class ShardTarWriter:
    def __init__(self, path: str | Path) -> None:
        self._tar = tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed by close(), as a writer object)

    def add_sample(self, key: str, metadata: dict, jpegs: list[bytes]) -> int:
        """Append one video; returns the bytes it added (payloads, not tar headers)."""
        written = self._add_member(f"{key}.json", json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
        for index, jpeg in enumerate(jpegs):
            written += self._add_member(f"{key}.{index:06d}.jpg", jpeg)
        return written

    def _add_member(self, name: str, payload: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = FIXED_MTIME
        info.mode = 0o444
        self._tar.addfile(info, io.BytesIO(payload))
        return len(payload)

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ShardTarWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
