"""Retrieval datasets in their published layouts, one reader per file, all returning a RetrievalSplit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines.finetuning.datasets.activitynet import read_activitynet
from pipelines.finetuning.datasets.base import RetrievalItem, RetrievalSplit, SkippedItem
from pipelines.finetuning.datasets.didemo import read_didemo
from pipelines.finetuning.datasets.generic import read_generic
from pipelines.finetuning.datasets.lsmdc import read_lsmdc
from pipelines.finetuning.datasets.msrvtt import read_msrvtt
from pipelines.finetuning.datasets.msvd import read_msvd

# dataset name -> reader(root, part "train"|"test", variant) -> RetrievalSplit
READERS: dict[str, Callable[[Path, str, str], RetrievalSplit]] = {
    "msrvtt": read_msrvtt,
    "msvd": read_msvd,
    "lsmdc": read_lsmdc,
    "activitynet": read_activitynet,
    "didemo": read_didemo,
    "generic": read_generic,
}
PARTS = ("train", "test")


def read_split(dataset: str, root: str | Path, part: str, variant: str = "9k") -> RetrievalSplit:
    """The `part` split of `dataset` under `root`; variant: MSR-VTT's training split ("9k" or "7k")."""
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; one of {sorted(READERS)}")
    if part not in PARTS:
        raise ValueError(f"split part must be one of {PARTS}, got {part!r}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist")
    return READERS[dataset](root, part, variant)


__all__ = ["READERS", "RetrievalItem", "RetrievalSplit", "SkippedItem", "read_split"]
