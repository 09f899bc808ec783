"""Retrieval metrics on hand-computed similarity matrices (ranks worked out by hand in the comments), and the
clip4clip protocol against CLIP4Clip's published formulas (its metrics.py + main_task_retrieval.eval_epoch,
restated below) on tie-free matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.metrics import (
    best_caption_ranks,
    rerank_scores,
    reranked_metrics,
    retrieval_metrics,
    text_to_video_ranks,
    video_to_text_ranks,
)

# --- CLIP4Clip's formulas (ArrowLuo/CLIP4Clip metrics.py), restated for the comparison ----------------------


def clip4clip_compute_metrics(x: np.ndarray) -> dict[str, float]:
    """metrics.compute_metrics: rows are queries, the diagonal the correct items."""
    ind = np.where(np.sort(-x, axis=1) - np.diag(-x)[:, None] == 0)[1]
    out = {f"R@{k}": float(np.sum(ind < k)) * 100 / len(ind) for k in (1, 5, 10, 50)}
    return {**out, "MdR": float(np.median(ind) + 1), "MnR": float(np.mean(ind) + 1)}


def clip4clip_multi_sentence(sim: np.ndarray, text_to_video: list[int]) -> tuple[dict, dict]:
    """eval_epoch's multi_sentence_ branch: (V, max_len, V) padded with -inf, then
    tensor_text_to_video_metrics and compute_metrics(tensor_video_to_text_sim(...))."""
    n_video = sim.shape[1]
    rows = [sim[[t for t, v in enumerate(text_to_video) if v == video]] for video in range(n_video)]
    longest = max(len(r) for r in rows)
    padded = np.stack([np.concatenate([r, np.full((longest - len(r), n_video), -np.inf)]) for r in rows])
    tensor = torch.tensor(padded)
    second = torch.argsort(torch.argsort(tensor.permute(1, 0, 2), dim=-1, descending=True), dim=-1)
    ranks = torch.flatten(torch.diagonal(second, dim1=1, dim2=2))
    valid = ranks[~torch.isinf(torch.flatten(torch.diagonal(tensor, dim1=0, dim2=2)))]
    t2v = {f"R@{k}": float(torch.sum(valid < k) * 100 / len(valid)) for k in (1, 5, 10, 50)}
    t2v |= {"MdR": float(torch.median(valid + 1)), "MnR": float(np.mean(valid.numpy() + 1))}
    v2t_sim = torch.squeeze(torch.max(tensor, dim=1, keepdim=True)[0]).T.numpy()
    return t2v, clip4clip_compute_metrics(v2t_sim)


def prefixed(metrics: dict, prefix: str) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def multi_caption_matrix(n_video: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Captions grouped by video (1-4 each, as CLIP4Clip's cut-off points need), correct pairs boosted."""
    rng = np.random.default_rng(seed)
    text_to_video = [v for v in range(n_video) for _ in range(int(rng.integers(1, 5)))]
    sim = rng.normal(size=(len(text_to_video), n_video))
    sim[np.arange(len(text_to_video)), text_to_video] += 1.5
    return sim, text_to_video


# --- clip4clip protocol -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip4clip_protocol_equals_clip4clip_code_on_several_captions(seed):
    sim, text_to_video = multi_caption_matrix(25, seed)
    t2v, v2t = clip4clip_multi_sentence(sim, text_to_video)
    ours = retrieval_metrics(sim, text_to_video, "clip4clip")
    assert ours == pytest.approx({**prefixed(t2v, "t2v"), **prefixed(v2t, "v2t")})


@pytest.mark.parametrize("seed", [0, 1])
def test_clip4clip_protocol_equals_clip4clip_code_on_one_caption_per_video(seed):
    sim = np.random.default_rng(seed).normal(size=(30, 30)) + 2 * np.eye(30)
    expected = {
        **prefixed(clip4clip_compute_metrics(sim), "t2v"),
        **prefixed(clip4clip_compute_metrics(sim.T), "v2t"),
    }
    assert retrieval_metrics(sim, np.arange(30), "clip4clip") == pytest.approx(expected)


def test_the_protocols_differ_on_video_to_text_with_several_captions():
    sim, text_to_video = multi_caption_matrix(25, 0)
    clip4clip = retrieval_metrics(sim, text_to_video, "clip4clip")
    all_captions = retrieval_metrics(sim, text_to_video, "all-captions")
    # A video's best caption competes with one caption per other video, not with all of them.
    assert clip4clip["v2t_MnR"] < all_captions["v2t_MnR"]
    assert clip4clip["t2v_MnR"] == all_captions["t2v_MnR"]  # no ties: t2v ranks agree


def test_clip4clip_video_to_text_ranks_against_each_other_videos_best_caption():
    # 3 videos; captions 0,1 -> v0; 2,3 -> v1; 4 -> v2.
    sim = torch.tensor([
        [0.9, 0.1, 0.0],
        [0.2, 0.8, 0.1],
        [0.3, 0.7, 0.1],
        [0.5, 0.4, 0.6],
        [0.0, 0.2, 0.1],
    ])  # fmt: skip
    t2v = torch.tensor([0, 0, 1, 1, 2])
    # best[i, k]: v0's captions (max of rows 0,1) = (0.9, 0.8, 0.1); v1's (rows 2,3) = (0.5, 0.7, 0.6);
    # v2's (row 4) = (0.0, 0.2, 0.1).
    # v0 query: own 0.9 vs 0.5, 0.0 -> 1; v1: own 0.7 vs 0.8 (v0), 0.2 -> 2; v2: own 0.1 vs 0.1 (v0, a tie:
    # optimistic), 0.6 (v1) -> 2.
    assert best_caption_ranks(sim, t2v).tolist() == [1, 2, 2]
    # all-captions, pessimistic: v2's own 0.1 has captions 0.1 (row 1 tie), 0.1 (row 2 tie), 0.6 ahead -> 4
    assert video_to_text_ranks(sim, t2v).tolist() == [1, 2, 4]
    m = retrieval_metrics(sim, t2v, "clip4clip")
    assert (
        m["v2t_R@1"] == pytest.approx(100 / 3)
        and m["v2t_MdR"] == 2.0
        and m["v2t_MnR"] == pytest.approx(5 / 3)
    )


def test_clip4clip_median_of_several_captions_is_the_lower_middle_rank():
    # 2 videos, 2 captions each; t2v ranks 1, 2, 2, 1 -> sorted 1 1 | 2 2: lower middle 1 (torch.median),
    # where the all-captions protocol averages the middles: 1.5.
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.9, 0.3], [0.1, 0.7]])
    t2v = torch.tensor([0, 0, 1, 1])
    assert text_to_video_ranks(sim, t2v, optimistic=True).tolist() == [1, 2, 2, 1]
    assert retrieval_metrics(sim, t2v, "clip4clip")["t2v_MdR"] == 1.0
    assert retrieval_metrics(sim, t2v, "all-captions")["t2v_MdR"] == 1.5
    # One caption per video: CLIP4Clip's compute_metrics uses np.median (ranks 1, 2 -> 1.5).
    one_each = torch.tensor([[0.9, 0.1], [0.9, 0.3]])
    assert retrieval_metrics(one_each, [0, 1], "clip4clip")["t2v_MdR"] == 1.5


def test_clip4clip_ties_are_optimistic_and_all_captions_ties_pessimistic():
    sim = np.zeros((4, 4))  # everything scores the same
    optimistic = retrieval_metrics(sim, np.arange(4), "clip4clip")
    assert optimistic["t2v_R@1"] == 100.0 and optimistic["v2t_MnR"] == 1.0
    pessimistic = retrieval_metrics(sim, np.arange(4), "all-captions")
    assert pessimistic["t2v_R@1"] == 0.0 and pessimistic["t2v_MdR"] == 4.0 and pessimistic["v2t_MdR"] == 4.0
    partial = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.0, 0.0, 1.0]])
    # text0 ties with v1: optimistic 1, pessimistic 2; text1 ties with v2: 1 / 2; text2 alone on top: 1
    assert text_to_video_ranks(partial, torch.arange(3), optimistic=True).tolist() == [1, 1, 1]
    assert text_to_video_ranks(partial, torch.arange(3)).tolist() == [2, 2, 1]


def test_recall_at_50():
    n = 60
    sim = -torch.ones(3, n)
    sim[:, :3] = 0.0
    for i, rank in enumerate([1, 50, 51]):  # rank r: r - 1 other videos score higher
        others = [j for j in range(n) if j != i][: rank - 1]
        sim[i, others] = 1.0
    m = retrieval_metrics(sim, [0, 1, 2])
    assert m["t2v_R@10"] == pytest.approx(100 / 3) and m["t2v_R@50"] == pytest.approx(200 / 3)


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="all-captions"):
        retrieval_metrics(torch.eye(2), [0, 1], "published")


# --- re-ranking ---------------------------------------------------------------------------------------------


def test_dual_and_inverted_softmax_by_hand():
    sim = torch.tensor([[2.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    col = torch.softmax(sim, dim=0)  # each video's scores over the texts
    torch.testing.assert_close(rerank_scores(sim, "dual-softmax", over="texts"), sim * col)
    torch.testing.assert_close(rerank_scores(sim, "inverted-softmax", over="texts"), col)
    row = torch.softmax(sim * 2.0, dim=1)
    torch.testing.assert_close(rerank_scores(sim, "inverted-softmax", over="videos", temperature=2.0), row)


def test_rerank_fixes_a_hub_video():
    # Video 0 is a "hub": it scores high with every text, so text1 retrieves it instead of video 1.
    sim = torch.tensor([[5.0, 1.0], [5.0, 4.5]])
    assert retrieval_metrics(sim, [0, 1])["t2v_R@1"] == 50.0
    # Over the texts, video 0's 5.0 is shared by both (softmax 0.5) while video 1 belongs to text 1 (~0.97).
    for method in ("dual-softmax", "inverted-softmax"):
        assert reranked_metrics(sim, [0, 1], method=method)["t2v_R@1"] == 100.0
    with pytest.raises(ValueError, match="dual-softmax"):
        rerank_scores(sim, "none", over="texts")


# --- all-captions protocol (the earlier convention, still selectable) --------------------------------------


def test_hand_computed_three_by_three():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.2, 0.3], [0.1, 0.7, 0.6]])
    # t2v: text0 -> v0 0.9 is top: 1; text1 -> v1 0.2 < 0.8, 0.3: 3; text2 -> v2 0.6 < 0.7: 2
    # v2t: v0 column (0.9, 0.8, 0.1) own 0.9: 1; v1 (0.1, 0.2, 0.7) own 0.2 < 0.7: 2; v2 (0.5, 0.3, 0.6): 1
    for protocol in ("clip4clip", "all-captions"):  # one caption each, no ties: the protocols agree
        m = retrieval_metrics(sim, [0, 1, 2], protocol)
        assert m["t2v_R@1"] == pytest.approx(100 / 3)
        assert m["t2v_R@5"] == m["t2v_R@10"] == m["t2v_R@50"] == 100.0
        assert m["t2v_MdR"] == 2.0 and m["t2v_MnR"] == 2.0
        assert m["v2t_R@1"] == pytest.approx(200 / 3)
        assert m["v2t_MdR"] == 1.0 and m["v2t_MnR"] == pytest.approx(4 / 3)
        keys = ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")
        assert set(m) == {f"{d}_{k}" for d in ("t2v", "v2t") for k in keys}


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
    m = retrieval_metrics(sim, list(range(len(wanted))), "all-captions")
    assert m["t2v_R@1"] == pytest.approx(100 * 1 / 8)
    assert m["t2v_R@5"] == pytest.approx(100 * 4 / 8)  # 1, 2, 5, 3
    assert m["t2v_R@10"] == pytest.approx(100 * 6 / 8)  # + 6, 10
    assert m["t2v_MdR"] == 5.5  # sorted 1 2 3 5 | 6 10 11 12
    assert m["t2v_MnR"] == pytest.approx(50 / 8)


def test_several_captions_per_video_all_captions():
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
    m = retrieval_metrics(sim, t2v, "all-captions")
    assert m["v2t_MnR"] == 2.0 and m["v2t_R@1"] == 50.0
    assert m["t2v_R@1"] == pytest.approx(100 * 1 / 5)  # t1 now ties with v1: ranks 2 2 2 1 2
    # clip4clip: v0's best own 0.3 vs v1's best caption for v0, max(0.4, 0.8) = 0.8 -> 2
    assert best_caption_ranks(sim, t2v).tolist() == [2, 1]


@pytest.mark.parametrize("protocol", ["clip4clip", "all-captions"])
def test_videos_without_captions_are_only_distractors(protocol):
    sim = torch.tensor([[0.9, 0.95, 0.1], [0.2, 0.1, 0.8]])  # v1 has no caption
    m = retrieval_metrics(sim, [0, 2], protocol)
    assert m["t2v_MnR"] == 1.5  # t0 loses to the captionless v1: 2; t1: 1
    assert m["v2t_MnR"] == 1.0  # two video queries (v0, v2), both rank 1


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="text_to_video"):
        retrieval_metrics(torch.zeros(3, 2), [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        retrieval_metrics(torch.zeros(2, 2), [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan"), 0.0]]), [0])
