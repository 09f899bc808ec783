"""The plan: deterministic, complete, persisted with a digest, and a changed config is refused."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from pipelines.howto100m import SubsetConfig
from pipelines.sharding.plan import (
    PlanMismatchError,
    ShardLayoutConfig,
    SourceConfig,
    build_plan,
    load_or_create_plan,
    plan_from_bytes,
    plan_to_bytes,
)
from pipelines.storage import open_storage
from pipelines.video import DecodeConfig


def source_of(collection) -> SourceConfig:
    return SourceConfig(
        videos=str(collection.videos_dir),
        metadata=str(collection.metadata_csv),
        captions=str(collection.captions_json),
    )


def test_plan_is_deterministic_and_places_every_video_once(sample_collection):
    layout = ShardLayoutConfig(videos_per_shard=4)
    first = build_plan(source_of(sample_collection), SubsetConfig(), DecodeConfig(), layout)
    second = build_plan(source_of(sample_collection), SubsetConfig(), DecodeConfig(), layout)
    assert first == second
    ids = [v.video_id for v in first.videos]
    assert len(ids) == len(set(ids))
    assert set(sample_collection.good_ids) | set(sample_collection.expected_failures) <= set(ids)
    per_shard = Counter(v.shard for v in first.videos)
    assert max(per_shard.values()) <= 4 and sorted(per_shard) == list(range(first.num_shards))


def test_plan_round_trips_through_parquet(sample_collection):
    plan = build_plan(source_of(sample_collection), SubsetConfig(), DecodeConfig(), ShardLayoutConfig())
    assert plan_from_bytes(plan_to_bytes(plan)) == plan


def test_unsafe_ids_never_get_a_path(sample_collection):
    plan = build_plan(source_of(sample_collection), SubsetConfig(), DecodeConfig(), ShardLayoutConfig())
    unsafe = [v for v in plan.videos if v.planned_failure == "unsafe_id"]
    assert unsafe and all(v.video_path == "" for v in unsafe)
    assert {v.video_id for v in unsafe} == {
        k for k, r in sample_collection.expected_failures.items() if r == "unsafe_id"
    }


def test_changed_config_is_refused_with_what_changed(sample_collection, tmp_path):
    storage = open_storage(str(tmp_path / "out"))
    source, layout = source_of(sample_collection), ShardLayoutConfig(videos_per_shard=4)
    plan, created = load_or_create_plan(storage, source, SubsetConfig(), DecodeConfig(), layout)
    again, created_again = load_or_create_plan(storage, source, SubsetConfig(), DecodeConfig(), layout)
    assert created and not created_again and again == plan
    with pytest.raises(PlanMismatchError, match=r"decode\.short_side .*224.*112"):
        load_or_create_plan(storage, source, SubsetConfig(), DecodeConfig(short_side=112), layout)
    with pytest.raises(PlanMismatchError, match=r"layout\.videos_per_shard"):
        load_or_create_plan(
            storage, source, SubsetConfig(), DecodeConfig(), replace(layout, videos_per_shard=5)
        )


def test_missing_source_is_named(tmp_path):
    source = SourceConfig(
        videos=str(tmp_path), metadata=str(tmp_path / "nope.csv"), captions=str(tmp_path / "c.json")
    )
    with pytest.raises(FileNotFoundError, match="--metadata"):
        build_plan(source, SubsetConfig(), DecodeConfig(), ShardLayoutConfig())
