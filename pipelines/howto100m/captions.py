"""ASR captions of one video: validate, repair and sort them, then clip them to the decoded duration."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

# Counted kinds, always all present in the counts `clean_captions` returns (a stable schema).
DROPPED_KINDS = ("negative_time", "nan_time", "end_before_start", "empty_text")
REPAIRED_KINDS = ("invalid_utf8",)

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON "\udXXX" escapes that are not a valid pair
_REPLACEMENT_CHARACTER = "\ufffd"  # what errors="replace" leaves where bytes were not UTF-8


class CaptionError(Exception):
    """One video's captions cannot be used; `reason` is a short stable code for the manifest.

    reason: "malformed_captions" (not {"start": [...], "end": [...], "text": [...]}),
    "caption_lengths_mismatch", "no_valid_captions" or "no_captions_in_range".
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep both fields when the error crosses a Ray/multiprocessing boundary
        return type(self), (self.reason, self.detail)


@dataclass(frozen=True, kw_only=True)
class CaptionSegments:
    """Parallel tuples, sorted by start; times in seconds from the start of the video."""

    start: tuple[float, ...]
    end: tuple[float, ...]
    text: tuple[str, ...]

    def __post_init__(self) -> None:
        assert len(self.start) == len(self.end) == len(self.text), "caption tuples must be parallel"

    def __len__(self) -> int:
        return len(self.start)


def clean_captions(raw: object) -> tuple[CaptionSegments, dict[str, int]]:
    """Keep the usable entries of one caption.json record, sorted by start time.

    Dropped (counted by kind): a start/end that is not a finite number ("nan_time"), negative
    ("negative_time"), an end before its start ("end_before_start"), a text that is not a string
    or is blank ("empty_text"). Repaired and kept: text with undecodable bytes or lone
    surrogates ("invalid_utf8", both become U+FFFD). Whitespace runs become one space.
    Raises CaptionError when the record is malformed or nothing valid is left.
    """
    start, end, text = _parallel_lists(raw)
    counts: Counter[str] = Counter({kind: 0 for kind in DROPPED_KINDS + REPAIRED_KINDS})
    kept: list[tuple[float, float, str]] = []
    for entry in zip(start, end, text, strict=True):
        segment, kind = _clean_entry(*entry)
        if kind is not None:
            counts[kind] += 1
        if segment is not None:
            kept.append(segment)
    if not kept:
        raise CaptionError("no_valid_captions", _describe_counts(len(start), counts))
    kept.sort(key=lambda segment: (segment[0], segment[1]))  # stable: ties keep file order
    return _to_segments(kept), dict(counts)


def clip_captions(segments: CaptionSegments, duration_s: float) -> CaptionSegments:
    """Segments that start before `duration_s`, their ends clipped to it (the decoded duration)."""
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration_s must be a finite number of seconds >= 0, got {duration_s!r}")
    kept = [
        (s, min(e, duration_s), t)
        for s, e, t in zip(segments.start, segments.end, segments.text, strict=True)
        if s < duration_s
    ]
    if not kept:
        first = f"{segments.start[0]:.3f}" if len(segments) else "none"
        raise CaptionError(
            "no_captions_in_range",
            f"none of {len(segments)} captions starts before {duration_s:.3f}s (first starts at {first}s)",
        )
    return _to_segments(kept)


def _parallel_lists(raw: object) -> tuple[list, list, list]:
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(key), list) for key in ("start", "end", "text")
    ):
        shape = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise CaptionError(
            "malformed_captions", f'expected {{"start": [...], "end": [...], "text": [...]}}, got {shape}'
        )
    start, end, text = raw["start"], raw["end"], raw["text"]
    if not len(start) == len(end) == len(text):
        raise CaptionError(
            "caption_lengths_mismatch", f"start has {len(start)}, end {len(end)}, text {len(text)} entries"
        )
    return start, end, text


def _clean_entry(
    start: object, end: object, text: object
) -> tuple[tuple[float, float, str] | None, str | None]:
    """((start, end, text) or None if dropped, the counted kind or None)."""
    if not (_is_finite_number(start) and _is_finite_number(end)):
        return None, "nan_time"
    start_s, end_s = float(start), float(end)  # type: ignore[arg-type]
    if start_s < 0 or end_s < 0:
        return None, "negative_time"
    if end_s < start_s:
        return None, "end_before_start"
    if not isinstance(text, str) or not text.strip():
        return None, "empty_text"
    repaired = _LONE_SURROGATE.sub(_REPLACEMENT_CHARACTER, text)
    normalised = " ".join(repaired.split())
    kind = "invalid_utf8" if _REPLACEMENT_CHARACTER in repaired else None
    return (start_s, end_s, normalised), kind


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # true/false is not a time
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond the float range
        return False


def _describe_counts(total: int, counts: Counter[str]) -> str:
    dropped = ", ".join(f"{kind}={counts[kind]}" for kind in DROPPED_KINDS if counts[kind])
    return f"0 of {total} entries valid" + (f" ({dropped})" if dropped else "")


def _to_segments(rows: list[tuple[float, float, str]]) -> CaptionSegments:
    return CaptionSegments(
        start=tuple(row[0] for row in rows),
        end=tuple(row[1] for row in rows),
        text=tuple(row[2] for row in rows),
    )
