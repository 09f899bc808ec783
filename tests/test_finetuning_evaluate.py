"""Evaluation: metrics from a hand-built similarity matrix, blocked tightTransf scoring equal to one pass, the
report's table and its loud flag when fewer videos were evaluated than the split declares."""

from __future__ import annotations

import pytest
import torch

from model.clip4clip import CLIP4Clip
from model.config import CLIP4ClipConfig
from model.metrics import retrieval_metrics
from pipelines.finetuning.evaluate import (
    TRANSDUCTIVE_NOTE,
    EvalConfig,
    Features,
    incomplete_warning,
    metrics_table,
    rerank_report,
    similarity,
)


def test_hand_built_matrix_two_captions_per_video():
    # 3 videos; captions 0,1 -> video 0, 2,3 -> video 1, 4 -> video 2.
    sim = torch.tensor([
        [0.9, 0.1, 0.0],  # t2v rank 1
        [0.2, 0.8, 0.1],  # rank 2
        [0.3, 0.7, 0.1],  # rank 1
        [0.5, 0.4, 0.6],  # rank 3
        [0.0, 0.2, 0.1],  # rank 2
    ])  # fmt: skip
    metrics = retrieval_metrics(sim, torch.tensor([0, 0, 1, 1, 2]), "all-captions")
    assert metrics["t2v_R@1"] == pytest.approx(40.0) and metrics["t2v_R@5"] == 100.0
    assert metrics["t2v_MdR"] == 2.0 and metrics["t2v_MnR"] == pytest.approx(9 / 5)
    # v2t: video 0's best own caption 0.9 -> rank 1; video 1: best own 0.7, other captions >= 0.7: caption 1
    # (0.8) -> rank 2; video 2: own 0.1, others >= 0.1: captions 0,1,2 -> rank 4.
    assert metrics["v2t_R@1"] == pytest.approx(100 / 3) and metrics["v2t_MdR"] == 2.0
    assert metrics["v2t_MnR"] == pytest.approx(7 / 3)


@pytest.mark.parametrize("blocks", [(1, 4), (2, 3), (64, 16)])
def test_blocked_tight_scoring_equals_one_pass(blocks):
    torch.manual_seed(0)
    model = CLIP4Clip.from_config(
        CLIP4ClipConfig(backbone="debug", pretrained="", head="tightTransf", max_frames=3)
    ).eval()
    text, frames = torch.randn(5, model.embed_dim), torch.randn(4, 3, model.embed_dim)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    features = Features(text=text, video=frames, mask=mask, text_to_video=torch.tensor([0, 1, 2, 3, 0]))
    with torch.no_grad():
        whole = model.score_pairs(text, frames, mask)
    blocked = similarity(
        model, features, EvalConfig(text_block=blocks[0], video_block=blocks[1]), device=torch.device("cpu")
    )
    torch.testing.assert_close(blocked, whole)


def report(mode: str, evaluated: int, declared: int) -> dict:
    metrics = {f"{d}_{m}": 1.0 for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")}
    return {
        "mode": mode,
        "protocol": "clip4clip",
        "metrics": metrics,
        "model": {"checkpoint": "s3://b/runs/x/step-00000010", "config": {"head": "meanP"}},
        "data": {"dataset": "msrvtt", "split": "test", "source": "MSRVTT_JSFUSION_test.csv", "videos_in_split": declared,
                 "videos_evaluated": evaluated, "captions_evaluated": evaluated, "skipped": [], "complete": evaluated == declared},
    }  # fmt: skip


def test_table_names_model_and_data_and_flags_incomplete_evaluation():
    table = metrics_table([report("zero-shot", 1000, 1000), report("fine-tuned", 1000, 1000)])
    assert "| zero-shot | meanP |" in table and "| fine-tuned | meanP |" in table
    assert "s3://b/runs/x/step-00000010" in table and "1000 videos" in table and "WARNING" not in table
    flagged = metrics_table([report("fine-tuned", 990, 1000)])
    assert incomplete_warning(report("fine-tuned", 990, 1000)) in flagged and "NOT comparable" in flagged


def test_table_records_the_protocol_and_labels_reranked_rows_transductive():
    plain = metrics_table([report("fine-tuned", 1000, 1000)])
    assert "protocol: clip4clip" in plain and "R@50" in plain and "transductive" not in plain
    reranked = report("fine-tuned", 1000, 1000)
    reranked["reranked"] = {"method": "dual-softmax", "metrics": reranked["metrics"], "transductive": True}
    table = metrics_table([reranked])
    assert "| fine-tuned | meanP |" in table and "| fine-tuned + dual-softmax (*) | meanP |" in table
    assert TRANSDUCTIVE_NOTE in table


def test_loose_scores_are_clip4clip_logits():
    torch.manual_seed(0)
    model = CLIP4Clip.from_config(CLIP4ClipConfig(backbone="debug", pretrained="", head="meanP")).eval()
    text = torch.nn.functional.normalize(torch.randn(3, model.embed_dim), dim=-1)
    video = torch.nn.functional.normalize(torch.randn(2, model.embed_dim), dim=-1)
    features = Features(
        text=text, video=video, mask=torch.ones(2, 1, dtype=torch.bool), text_to_video=torch.tensor([0, 1, 1])
    )
    scores = similarity(model, features, EvalConfig(), device=torch.device("cpu"))
    torch.testing.assert_close(scores, model.clip.logit_scale.exp().detach() * text @ video.T)


def test_rerank_report_is_separate_and_labelled_transductive():
    scores = torch.tensor([[5.0, 1.0], [5.0, 4.5]])  # video 0 is a hub: text 1 retrieves it first
    config = EvalConfig(rerank="inverted-softmax")
    reranked = rerank_report(scores, torch.tensor([0, 1]), config)
    assert reranked["method"] == "inverted-softmax" and reranked["transductive"] is True
    assert reranked["metrics"]["t2v_R@1"] == 100.0
