"""The generated command line: flat flags from nested typed configs, aliases, errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipelines.cli import parse_config


@dataclass(frozen=True, kw_only=True)
class Inner:
    backbone: str = "ViT-B-32"
    max_frames: int = 12


@dataclass(frozen=True, kw_only=True)
class Job:
    """A job."""

    out: str
    use_gpu: bool = False
    inner: Inner = field(default_factory=Inner)


def test_nested_fields_are_flat_flags():
    job = parse_config(Job, ["--out", "x", "--max-frames", "8", "--use-gpu"])
    assert job == Job(out="x", use_gpu=True, inner=Inner(max_frames=8))


def test_aliases_rename_flags_in_both_spellings():
    aliases = {"--model": "--backbone"}
    assert parse_config(Job, ["--out", "x", "--model", "debug"], aliases=aliases).inner.backbone == "debug"
    assert parse_config(Job, ["--out", "x", "--model=ViT-B-16"], aliases=aliases).inner.backbone == "ViT-B-16"


def test_missing_required_field_exits_with_usage():
    with pytest.raises(SystemExit) as exited:
        parse_config(Job, [])
    assert exited.value.code != 0
