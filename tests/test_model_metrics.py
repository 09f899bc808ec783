"""Retrieval metrics on hand-computed similarity matrices (ranks worked out by hand in the comments)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.metrics import retrieval_metrics, text_to_video_ranks, video_to_text_ranks


def test_hand_computed_three_by_three():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.2, 0.3], [0.1, 0.7, 0.6]])
    # t2v: text0 -> v0 0.9 is top: 1; text1 -> v1 0.2 < 0.8, 0.3: 3; text2 -> v2 0.6 < 0.7: 2
    # v2t: v0 column (0.9, 0.8, 0.1) own 0.9: 1; v1 (0.1, 0.2, 0.7) own 0.2 < 0.7: 2; v2 (0.5, 0.3, 0.6): 1
    m = retrieval_metrics(sim, [0, 1, 2])
    assert m["t2v_R@1"] == pytest.approx(100 / 3)
    assert m["t2v_R@5"] == m["t2v_R@10"] == 100.0
    assert m["t2v_MdR"] == 2.0 and m["t2v_MnR"] == 2.0
    assert m["v2t_R@1"] == pytest.approx(200 / 3)
    assert m["v2t_MdR"] == 1.0 and m["v2t_MnR"] == pytest.approx(4 / 3)
    assert set(m) == {f"{d}_{k}" for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10", "MdR", "MnR")}


def test_ranks_spread_over_recall_cutoffs():
    """Text i's video gets rank r_i by giving r_i - 1 other videos a higher score."""
    wanted = [1, 2, 5, 6, 10, 11, 12, 3]
    n = 12
    sim = -torch.ones(len(wanted), n)
    for i, rank in enumerate(wanted):
        sim[i, i] = 0.0
        others = [j for j in range(n) if j != i][: rank - 1]
        sim[i, others] = 1.0
    assert text_to_video_ranks(sim, torch.arange(len(wanted))).tolist() == wanted
    m = retrieval_metrics(sim, list(range(len(wanted))))
    assert m["t2v_R@1"] == pytest.approx(100 * 1 / 8)
    assert m["t2v_R@5"] == pytest.approx(100 * 4 / 8)  # 1, 2, 5, 3
    assert m["t2v_R@10"] == pytest.approx(100 * 6 / 8)  # + 6, 10
    assert m["t2v_MdR"] == 5.5  # sorted 1 2 3 5 | 6 10 11 12
    assert m["t2v_MnR"] == pytest.approx(50 / 8)


def test_ties_count_against_the_correct_item():
    sim = np.zeros((4, 4))  # a model that scores everything the same retrieves nothing
    m = retrieval_metrics(sim, np.arange(4))
    assert m["t2v_R@1"] == 0.0 and m["t2v_MdR"] == 4.0 and m["t2v_MnR"] == 4.0
    assert m["v2t_R@1"] == 0.0 and m["v2t_MdR"] == 4.0
    partial = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.0, 0.0, 1.0]])
    # text0 ties with v1: 2; text1 ties with v2: 2; text2 alone on top: 1
    assert text_to_video_ranks(partial, torch.arange(3)).tolist() == [2, 2, 1]


def test_several_captions_per_video():
    # 2 videos; texts 0-2 describe v0, texts 3-4 describe v1.
    sim = torch.tensor(
        [
            [0.2, 0.6],  # t0 (v0): v1 ahead -> 2
            [0.9, 0.1],  # t1 (v0): 1
            [0.3, 0.3],  # t2 (v0): tie with v1 -> 2
            [0.4, 0.5],  # t3 (v1): 1
            [0.8, 0.7],  # t4 (v1): 2
        ]
    )
    t2v = torch.tensor([0, 0, 0, 1, 1])
    assert text_to_video_ranks(sim, t2v).tolist() == [2, 1, 2, 1, 2]
    # v0 column (0.2, 0.9, 0.3 | 0.4, 0.8): best own 0.9, no v1 caption >= 0.9 -> 1
    # v1 column (0.6, 0.1, 0.3 | 0.5, 0.7): best own 0.7, v0 captions >= 0.7: none -> 1
    assert video_to_text_ranks(sim, t2v).tolist() == [1, 1]
    sim[1, 0] = 0.1  # v0 now: best own 0.3 (t2); v1 captions 0.4, 0.8 ahead -> 3
    assert video_to_text_ranks(sim, t2v).tolist() == [3, 1]
    m = retrieval_metrics(sim, t2v)
    assert m["v2t_MnR"] == 2.0 and m["v2t_R@1"] == 50.0
    assert m["t2v_R@1"] == pytest.approx(100 * 1 / 5)  # t1 now ties with v1: ranks 2 2 2 1 2


def test_videos_without_captions_are_only_distractors():
    sim = torch.tensor([[0.9, 0.95, 0.1], [0.2, 0.1, 0.8]])  # v1 has no caption
    m = retrieval_metrics(sim, [0, 2])
    assert m["t2v_MnR"] == 1.5  # t0 loses to the captionless v1: 2; t1: 1
    assert m["v2t_MnR"] == 1.0  # two video queries (v0, v2), both rank 1


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="text_to_video"):
        retrieval_metrics(torch.zeros(3, 2), [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        retrieval_metrics(torch.zeros(2, 2), [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan"), 0.0]]), [0])
