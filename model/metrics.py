"""Text-video retrieval metrics: R@1, R@5, R@10 (percent), median and mean rank, both directions.

Conventions (ranks start at 1):
- Ties are pessimistic: every other candidate scoring >= the correct one ranks ahead of it. A model that
  gives everything the same score therefore gets rank N, not rank 1. (CLIP4Clip's code, through
  np.sort/np.where, is optimistic on ties; with real-valued scores ties are rare and both agree.)
- Several captions per video (MSVD-style): text->video ranks each caption's video among all videos;
  video->text takes the best-ranked of the video's own captions -- the rank of the first correct caption in
  the video's result list, other captions of the same video not counting against it. A video query succeeds
  when any of its captions is retrieved, as in image->text retrieval on COCO/Flickr (5 captions per image).
  (CLIP4Clip's MSVD evaluation instead ranks each caption separately, which penalises videos with many
  captions and makes v2t a per-caption number.) Videos without captions are left out of video->text.
"""

from __future__ import annotations

import numpy as np
import torch

RECALL_AT = (1, 5, 10)


def retrieval_metrics(sim, text_to_video) -> dict[str, float]:
    """sim (N_text, N_video) scores, higher = more similar; text_to_video (N_text,) each text's video index.

    Returns t2v_R@1, t2v_R@5, t2v_R@10, t2v_MdR, t2v_MnR and the same for v2t.
    """
    sim, text_to_video = _check_inputs(sim, text_to_video)
    metrics = summarise_ranks(text_to_video_ranks(sim, text_to_video), "t2v")
    metrics.update(summarise_ranks(video_to_text_ranks(sim, text_to_video), "v2t"))
    return metrics


def text_to_video_ranks(sim: torch.Tensor, text_to_video: torch.Tensor) -> torch.Tensor:
    """(N_text,) rank of each text's video: 1 + number of other videos scoring >= it."""
    correct = sim.gather(1, text_to_video[:, None])  # (N_text, 1)
    return (sim >= correct).sum(dim=1)  # counts the correct video itself, hence 1-based


def video_to_text_ranks(sim: torch.Tensor, text_to_video: torch.Tensor) -> torch.Tensor:
    """(N_captioned_videos,) rank of each video's best caption: 1 + other videos' captions scoring >= it."""
    own = (
        text_to_video[:, None] == torch.arange(sim.shape[1], device=sim.device)[None, :]
    )  # (N_text, N_video)
    best_own = sim.masked_fill(~own, float("-inf")).amax(dim=0)  # (N_video,)
    ahead = ((sim >= best_own[None, :]) & ~own).sum(dim=0)
    return (ahead + 1)[own.any(dim=0)]


def summarise_ranks(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    values = ranks.cpu().numpy().astype(np.float64)
    metrics = {f"{prefix}_R@{k}": float(100.0 * np.mean(values <= k)) for k in RECALL_AT}
    metrics[f"{prefix}_MdR"] = float(np.median(values))
    metrics[f"{prefix}_MnR"] = float(np.mean(values))
    return metrics


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
