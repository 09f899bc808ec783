"""jobs/embed.py with real components: the generated MSR-VTT-layout colour videos (real ffmpeg files) plus a
broken one, Ray actors on a loopback head, a model fine-tuned here; Parquet read back with pyarrow."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from infra.sample_msrvtt import generate_sample_msrvtt
from jobs.embed import main
from jobs.finetune_retrieval import main as finetune_main
from model.backbone import create_clip
from pipelines.checkpoint.init_model import InitConfig
from pipelines.embedding.embedder import TIGHT_REFUSAL
from pipelines.embedding.job import EmbedConfig, EmbedInputsConfig, run_embedding
from pipelines.embedding.output import read_embeddings, read_outcomes
from pipelines.finetuning.frame_cache import FrameCacheConfig
from pipelines.sharding.manifest import read_manifest
from pipelines.storage import open_storage
from tests.test_post_pretrain import shards  # noqa: F401  (the sharding job's output)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    data = generate_sample_msrvtt(root / "msrvtt")
    folder = root / "videos"
    shutil.copytree(data.root / "videos", folder)
    (folder / "broken.mp4").write_bytes(b"this is not a video")
    torch.manual_seed(0)
    clip_file = root / "clip.pt"
    torch.save(create_clip("debug", "", quick_gelu=True).state_dict(), clip_file)
    return {"root": root, "data": data, "folder": folder, "clip": clip_file}


def embed_args(sample, init: str, out: Path, *extra: str) -> list[str]:
    return [
        "--init", init, "--backbone", "debug", "--max-frames", "4", "--short-side", "64",
        "--frame-cache", str(sample["root"] / "frames"), "--out", str(out), *extra,
    ]  # fmt: skip


def test_folder_embedded_twice_on_ray_is_identical_and_records_the_broken_video(sample, ray_driver, tmp_path):
    args = ("--videos", str(sample["folder"]), "--videos-per-part", "10", "--num-workers", "2")
    for name in ("first", "second"):
        assert main(embed_args(sample, str(sample["clip"]), tmp_path / name, *args)) == 0
    first_ids, first, model = read_embeddings(open_storage(str(tmp_path / "first")))
    second_ids, second, _ = read_embeddings(open_storage(str(tmp_path / "second")))
    assert first_ids == second_ids and len(first_ids) == 36 and "all/video0" in first_ids
    assert first.shape == (36, 64) and np.abs(first - second).max() <= 1e-6
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert model["init"] == str(sample["clip"]) and model["config"]["head"] == "meanP"

    outcomes = read_outcomes(open_storage(str(tmp_path / "first"))).to_pylist()
    failed = [row for row in outcomes if row["status"] == "failed"]
    assert [(row["id"], row["reason"]) for row in failed] == [("broken", "not_a_video")]
    assert len(outcomes) == 37

    part = pq.read_table(
        io.BytesIO((tmp_path / "first" / "embeddings" / "videos-000000.parquet").read_bytes())
    )
    assert part.column_names == ["id", "embedding", "model"] and b"clip4clip_model" in part.schema.metadata

    resumed = run_embedding(
        EmbedConfig(
            init=InitConfig(init=str(sample["clip"]), backbone="debug", max_frames=4),
            inputs=EmbedInputsConfig(videos=str(sample["folder"])),
            frames=FrameCacheConfig(frame_cache=str(sample["root"] / "frames"), short_side=64),
            out=str(tmp_path / "first"),
            videos_per_part=10,
        ),
        use_ray=False,
    )
    assert resumed.parts == resumed.parts_done_before == 4 and resumed.ok == 0


def test_changed_settings_are_refused_on_resume(sample, tmp_path, capsys):
    out = tmp_path / "out"
    (sample["root"] / "one").mkdir(exist_ok=True)
    shutil.copy(sample["folder"] / "all" / "video0.mp4", sample["root"] / "one" / "video0.mp4")
    args = ("--videos", str(sample["root"] / "one"))
    assert main(embed_args(sample, str(sample["clip"]), out, *args), use_ray=False) == 0
    assert (
        main(embed_args(sample, str(sample["clip"]), out, *args, "--head", "seqTransf"), use_ray=False) == 2
    )
    assert "other settings" in capsys.readouterr().err


def test_tight_transf_is_refused_with_the_reason(sample, tmp_path, capsys):
    args = embed_args(sample, str(sample["clip"]), tmp_path / "out", "--head", "tightTransf", "--texts", "x")
    assert main(args, use_ray=False) == 2
    assert TIGHT_REFUSAL in capsys.readouterr().err
    assert not (tmp_path / "out" / "settings.json").exists()


def test_query_red_ranks_red_videos_first_with_a_model_fine_tuned_here(sample, tmp_path, capsys):
    data = sample["data"]
    finetune = [
        "--init", str(sample["clip"]), "--backbone", "debug", "--head", "meanP", "--dataset", "msrvtt",
        "--data-root", str(data.root), "--max-frames", "4", "--batch-size", "8", "--loader-workers", "0",
        "--short-side", "64", "--frame-cache", str(sample["root"] / "frames"), "--checkpoints",
        str(tmp_path / "runs"), "--run-name", "ft", "--lr", "1e-3", "--coef-lr", "1.0", "--epochs", "6",
        "--no-zero-shot-baseline",
    ]  # fmt: skip
    assert finetune_main(finetune, use_ray=False) == 0
    out = tmp_path / "embeddings"
    texts = tmp_path / "queries.txt"
    texts.write_text("red\n\nblue then green\n")
    dataset = ("--dataset", "msrvtt", "--data-root", str(data.root), "--texts", str(texts))
    assert main(embed_args(sample, str(tmp_path / "runs" / "ft"), out, *dataset), use_ray=False) == 0
    text_ids, text_embeddings, _ = read_embeddings(open_storage(str(out)), kind="text")
    assert text_ids == ["line-000001", "line-000003"] and text_embeddings.shape == (2, 64)

    capsys.readouterr()
    assert main(["--out", str(out), "--query", "red", "--top-k", "36"], use_ray=False) == 0
    ranked = [line.split()[-1] for line in capsys.readouterr().out.strip().splitlines()]
    red = {vid for vid, captions in data.captions.items() if "red" in captions[0].split()}
    assert len(ranked) == 36 and len(red) == 11
    assert set(ranked[:3]) <= red, ranked  # the best matches are red videos
    # and red videos rank ahead of the others: most (red, other) pairs are in order (1.0 = all of them)
    positions = {vid: n for n, vid in enumerate(ranked)}
    in_order = np.mean([positions[r] < positions[o] for r in red for o in set(ranked) - red])
    assert in_order > 0.85, (in_order, ranked)


def test_shards_of_the_sharding_job_are_embedded_from_their_frames(sample, shards, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert main(embed_args(sample, str(sample["clip"]), out, "--shards", shards), use_ray=False) == 0
    ids, embeddings, _ = read_embeddings(open_storage(str(out)))
    manifest = read_manifest(open_storage(shards)).to_pylist()
    assert sorted(ids) == sorted(row["video_id"] for row in manifest if row["status"] == "ok")
    assert embeddings.shape == (len(ids), 64) and np.isfinite(embeddings).all()
