"""The hand-off end to end on the debug model: post-pretrain a few MIL-NCE steps (the real job's worker on
shards made by the sharding job) -> fine-tune on Ray Train (2 gloo workers) on a generated MSR-VTT-layout
set where retrieval is learnable (captions name the colours on screen) -> evaluate: fine-tuned beats
zero-shot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.sample_msrvtt import generate_sample_msrvtt
from jobs.finetune_retrieval import main
from pipelines.training.post_pretrain import post_pretrain_worker
from pipelines.training.runtime import single_process_runtime
from tests.test_post_pretrain import debug_config, shards  # noqa: F401  (shards: the sharding job's output)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def post_pretrained(shards, tmp_path_factory) -> str:  # noqa: F811
    root = tmp_path_factory.mktemp("post-pretrained")
    post_pretrain_worker(
        debug_config(shards, str(root), "pp", max_steps=6, every_steps=3), single_process_runtime()
    )
    return str(root / "pp" / "latest")


def finetune_args(init: str, data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--init", init, "--dataset", "msrvtt", "--data-root", str(data), "--split", "9k", "--head", "seqTransf",
        "--max-frames", "4", "--batch-size", "8", "--loader-workers", "0", "--short-side", "64",
        "--frame-cache", str(tmp_path / "frames"), "--checkpoints", str(tmp_path / "runs"), "--run-name", "ft",
        "--lr", "1e-3", "--coef-lr", "1.0", "--log-every", "9", *extra,
    ]  # fmt: skip


def test_post_pretrain_then_finetune_then_evaluate(post_pretrained, ray_driver, tmp_path, capsys):
    data = generate_sample_msrvtt(tmp_path / "msrvtt").root
    assert main(finetune_args(post_pretrained, data, tmp_path, "--zero-shot")) == 0
    zero_shot = json.loads((tmp_path / "runs" / "ft" / "eval" / "zero-shot.json").read_text())
    assert zero_shot["model"]["checkpoint"].endswith("pp/step-00000006")
    assert zero_shot["data"]["videos_evaluated"] == 12 and zero_shot["data"]["complete"]

    args = finetune_args(
        post_pretrained, data, tmp_path, "--epochs", "6", "--num-workers", "2", "--no-zero-shot-baseline"
    )
    assert main(args) == 0
    finetuned = json.loads((tmp_path / "runs" / "ft" / "eval" / "fine-tuned.json").read_text())
    assert finetuned["model"]["checkpoint"].endswith("ft/step-00000054")  # 6 epochs x 72 pairs // 8
    before, after = zero_shot["metrics"], finetuned["metrics"]
    assert after["t2v_R@1"] > before["t2v_R@1"] and after["t2v_MnR"] < before["t2v_MnR"], (before, after)
    assert after["v2t_R@1"] > before["v2t_R@1"], (before, after)
    assert "| fine-tuned | seqTransf |" in capsys.readouterr().out
