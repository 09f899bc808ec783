"""Text-video retrieval metrics: R@1, R@5, R@10, R@50 (percent), median and mean rank, both directions.

Two protocols (ranks start at 1), chosen by name:

- "clip4clip" (default): what CLIP4Clip's `metrics.py` and `main_task_retrieval.py` eval compute, hence what
  the published MSR-VTT, MSVD, LSMDC, ActivityNet and DiDeMo tables (CLIP4Clip and the papers after it) use.
  * Ties are optimistic: the rank is 1 + the number of candidates scoring strictly higher (its
    `np.sort`/`np.where(... == 0)` finds the first position holding the correct score).
  * One caption per video (MSR-VTT 1k-A, LSMDC; ActivityNet and DiDeMo, whose sentences are concatenated into
    one paragraph per video by the dataset readers): `compute_metrics(sim)` and `compute_metrics(sim.T)`.
  * Several captions per video (MSVD; `multi_sentence_per_video`): text->video ranks each caption's video
    among all videos and takes the LOWER middle rank as the median (`torch.median`); video->text first
    reduces each video's captions to their best score against every video (`tensor_video_to_text_sim`),
    then ranks the video's own best caption against each OTHER video's best caption (a V x V matrix).
  * The other medians are `np.median` (mean of the two middle ranks).
- "all-captions" (this project's earlier convention): ties pessimistic (every other candidate scoring >= the
  correct one ranks ahead); video->text ranks the video's best caption against every caption of every other
  video, as image->text retrieval on COCO/Flickr does; medians are `np.median`.

Videos without captions are only distractors: never video->text queries. Where CLIP4Clip's code itself
is ill-defined on exact ties (`compute_metrics` then emits one rank per tied score, counting a query several
times; `torch.argsort` orders ties arbitrarily) we count each query once, at its optimistic rank; with
real-valued scores ties are rare and both agree.

Re-ranking (`rerank_scores`): dual softmax (Cheng et al. 2021, arXiv 2109.04290) and inverted softmax (Smith
et al. 2017; Bogolin et al. 2022) normalise every gallery item's scores over all test queries at once. They
are transductive (a query's result depends on the other test queries), so they are reported separately.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

RECALL_AT = (1, 5, 10, 50)
PROTOCOLS: tuple[str, ...] = ("clip4clip", "all-captions")
RERANKS: tuple[str, ...] = ("none", "dual-softmax", "inverted-softmax")
Protocol = Literal["clip4clip", "all-captions"]
Rerank = Literal["none", "dual-softmax", "inverted-softmax"]


def retrieval_metrics(sim, text_to_video, protocol: str = "clip4clip") -> dict[str, float]:
    """sim (N_text, N_video) scores, higher = more similar; text_to_video (N_text,) each text's video index.

    Returns t2v_R@1, t2v_R@5, t2v_R@10, t2v_R@50, t2v_MdR, t2v_MnR and the same for v2t.
    """
    sim, text_to_video = _check_inputs(sim, text_to_video)
    return {
        **text_to_video_metrics(sim, text_to_video, protocol),
        **video_to_text_metrics(sim, text_to_video, protocol),
    }


def text_to_video_metrics(sim: torch.Tensor, text_to_video: torch.Tensor, protocol: str) -> dict[str, float]:
    _check_protocol(protocol)
    optimistic = protocol == "clip4clip"
    lower_median = optimistic and is_multi_sentence(text_to_video)  # CLIP4Clip's torch.median
    ranks = text_to_video_ranks(sim, text_to_video, optimistic=optimistic)
    return summarise_ranks(ranks, "t2v", lower_median=lower_median)


def video_to_text_metrics(sim: torch.Tensor, text_to_video: torch.Tensor, protocol: str) -> dict[str, float]:
    _check_protocol(protocol)
    if protocol == "clip4clip":
        ranks = best_caption_ranks(sim, text_to_video)
    else:
        ranks = video_to_text_ranks(sim, text_to_video)
    return summarise_ranks(ranks, "v2t")


def is_multi_sentence(text_to_video: torch.Tensor) -> bool:
    """Some video has several captions (CLIP4Clip's `multi_sentence_per_video`)."""
    return bool(torch.bincount(text_to_video).max() > 1)


def text_to_video_ranks(
    sim: torch.Tensor, text_to_video: torch.Tensor, *, optimistic: bool = False
) -> torch.Tensor:
    """(N_text,) rank of each text's video: 1 + other videos scoring > it (optimistic) or >= it."""
    correct = sim.gather(1, text_to_video[:, None])  # (N_text, 1)
    if optimistic:
        return (sim > correct).sum(dim=1) + 1
    return (sim >= correct).sum(dim=1)  # counts the correct video itself, hence 1-based


def video_to_text_ranks(sim: torch.Tensor, text_to_video: torch.Tensor) -> torch.Tensor:
    """all-captions: (N_captioned_videos,) rank of each video's best caption among all captions, pessimistic."""
    own = _own_captions(sim, text_to_video)  # (N_text, N_video)
    best_own = sim.masked_fill(~own, float("-inf")).amax(dim=0)  # (N_video,)
    ahead = ((sim >= best_own[None, :]) & ~own).sum(dim=0)
    return (ahead + 1)[own.any(dim=0)]


def best_caption_ranks(sim: torch.Tensor, text_to_video: torch.Tensor) -> torch.Tensor:
    """clip4clip: (N_captioned_videos,) rank of each video's best caption among the other videos' best ones.

    best[i, k] = max over video i's captions of sim[caption, k] (CLIP4Clip's tensor_video_to_text_sim); video
    k's rank is 1 + the number of videos i != k with best[i, k] > best[k, k] (optimistic ties).
    """
    n_video = sim.shape[1]
    best = torch.full((n_video, n_video), float("-inf"), dtype=sim.dtype, device=sim.device)
    best = best.scatter_reduce(0, text_to_video[:, None].expand_as(sim), sim, reduce="amax")  # (V, V)
    own = best.diagonal()  # (V,) each video's best own caption against itself
    ranks = (best > own[None, :]).sum(dim=0) + 1
    return ranks[torch.bincount(text_to_video, minlength=n_video) > 0]


def rerank_scores(sim: torch.Tensor, method: str, *, over: str, temperature: float = 1.0) -> torch.Tensor:
    """Transductive re-ranking of (N_text, N_video) logits, normalising over all queries of one direction.

    over="texts" (for text->video queries): each video's column is normalised over the texts;
    over="videos" (for video->text queries): each text's row over the videos. dual-softmax multiplies the
    scores by that softmax (the prior), inverted-softmax replaces them with it.
    """
    if method not in RERANKS or method == "none":
        raise ValueError(f"rerank method {method!r} is not one of {list(RERANKS[1:])}")
    if over not in ("texts", "videos"):
        raise ValueError(f"over={over!r} must be 'texts' or 'videos'")
    logits = sim.double()  # exp of logits ~100 overflows nothing in float64; softmax subtracts the max anyway
    prior = torch.softmax(logits * temperature, dim=0 if over == "texts" else 1)
    return logits * prior if method == "dual-softmax" else prior


def reranked_metrics(
    sim, text_to_video, *, method: str, protocol: str = "clip4clip", temperature: float = 1.0
) -> dict[str, float]:
    """The metrics of retrieval_metrics on re-ranked scores: each direction normalised over its own queries."""
    sim, text_to_video = _check_inputs(sim, text_to_video)
    t2v = rerank_scores(sim, method, over="texts", temperature=temperature)
    v2t = rerank_scores(sim, method, over="videos", temperature=temperature)
    return {
        **text_to_video_metrics(t2v, text_to_video, protocol),
        **video_to_text_metrics(v2t, text_to_video, protocol),
    }


def summarise_ranks(ranks: torch.Tensor, prefix: str, *, lower_median: bool = False) -> dict[str, float]:
    values = ranks.cpu().numpy().astype(np.float64)
    metrics = {f"{prefix}_R@{k}": float(100.0 * np.mean(values <= k)) for k in RECALL_AT}
    metrics[f"{prefix}_MdR"] = (
        float(np.sort(values)[(len(values) - 1) // 2]) if lower_median else float(np.median(values))
    )
    metrics[f"{prefix}_MnR"] = float(np.mean(values))
    return metrics


def _own_captions(sim: torch.Tensor, text_to_video: torch.Tensor) -> torch.Tensor:
    return text_to_video[:, None] == torch.arange(sim.shape[1], device=sim.device)[None, :]


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {list(PROTOCOLS)}")


def _check_inputs(sim, text_to_video) -> tuple[torch.Tensor, torch.Tensor]:
    sim = torch.as_tensor(sim).detach()
    sim = sim if sim.is_floating_point() else sim.double()  # compared as given: no rounding, no new ties
    text_to_video = torch.as_tensor(text_to_video, device=sim.device).long()
    if sim.ndim != 2 or text_to_video.shape != (sim.shape[0],):
        raise ValueError(
            f"need sim (N_text, N_video) and text_to_video (N_text,), got {tuple(sim.shape)}, "
            f"{tuple(text_to_video.shape)}"
        )
    if sim.shape[0] == 0 or bool(torch.isnan(sim).any()):
        raise ValueError("sim must be non-empty and free of NaN")
    if bool((text_to_video < 0).any()) or bool((text_to_video >= sim.shape[1]).any()):
        raise ValueError(f"text_to_video entries must be video indices in [0, {sim.shape[1]})")
    return sim, text_to_video
