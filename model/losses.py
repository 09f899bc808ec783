"""Contrastive losses of CLIP4Clip training, distributed the way open_clip's `local_loss` is.

Every rank all-gathers the features of the global batch *with gradients* (the backward sums the gradients
of all ranks into the owner's features, as torch.distributed.nn.functional.all_gather does) and computes
only the rows of its own clips. A rank's loss is its share of the global
loss: (sum of its rows) / (global batch), so the per-rank losses add up to the single-process loss on the
whole batch, and so do their gradients. DDP *averages* gradients over ranks: a DDP trainer that wants the
single-process gradient multiplies the loss by `world_size` (equivalently: uses the mean over local rows).
Local batches must have the same size on every rank (all_gather's contract).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient of the gathered tensor and keeps our rows.

    (torch.distributed.nn.functional.all_gather does the same but is deprecated, and on gloo its backward
    scatters into buffers shaped like non-contiguous gradients, which corrupts them.)
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        parts = [torch.empty_like(local, memory_format=torch.contiguous_format) for _ in range(world_size)]
        dist.all_gather(parts, local.contiguous())
        ctx.rows = slice(rank * local.shape[0], (rank + 1) * local.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rows], None, None


def gather_with_grad(local: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """(B, ...) on each rank -> (world_size * B, ...), rank-major; gradients flow back to every owner."""
    if world_size == 1:
        return local
    return _AllGatherWithGrad.apply(local, rank, world_size)


def gather_no_grad(local: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts, dim=0)


class _DistributedLoss(nn.Module):
    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.rank = rank
        self.world_size = world_size

    def _global_indices(self, local_batch: int, device: torch.device) -> torch.Tensor:
        """Positions of this rank's clips in the gathered (rank-major) global batch."""
        return torch.arange(local_batch, device=device) + self.rank * local_batch


class SymmetricCrossEntropyLoss(_DistributedLoss):
    """CLIP's InfoNCE both ways over the B x B similarity s_ij = logit_scale * <v_i, t_j> of the global batch:
    L = 1/2 (mean_i CE(row i of S, i) + mean_j CE(column j of S, j)) (CLIP4Clip eq. 9-11)."""

    def forward(self, video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        """video (B, D), text (B, D) normalised features of paired clips; logit_scale exp'd scalar."""
        if video.shape != text.shape or video.ndim != 2:
            raise ValueError(
                f"video and text must both be (B, D), got {tuple(video.shape)}, {tuple(text.shape)}"
            )
        all_video = gather_with_grad(video, self.rank, self.world_size)
        all_text = gather_with_grad(text, self.rank, self.world_size)
        targets = self._global_indices(video.shape[0], video.device)
        video_to_text = logit_scale * video @ all_text.T  # (B, B_global): this rank's rows of S
        text_to_video = logit_scale * text @ all_video.T  # (B, B_global): this rank's columns of S
        row_sum = F.cross_entropy(video_to_text, targets, reduction="sum")
        column_sum = F.cross_entropy(text_to_video, targets, reduction="sum")
        return (row_sum + column_sum) / (2 * all_video.shape[0])


def symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The same loss on an already computed local (N, N) score matrix, matched pairs on the diagonal
    (tightTransf's pair scores, which are not dot products of gatherable features)."""
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be square (N, N), got {tuple(logits.shape)}")
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class MILNCELoss(_DistributedLoss):
    """MIL-NCE (Miech et al. 2020, eq. 1) with K candidate captions per clip, scores s = logit_scale * <v, t>.

    For clip i with candidate captions P_i:
        loss_i = -log( sum_{p in P_i} e^{s(v_i, t_p)} /
                       ( sum_{p in P_i} e^{s(v_i, t_p)} + sum_{(v', t') in N_i} e^{s(v', t')} ) )
    N_i = {(v_i, t) : t a candidate of another clip} u {(v_j, t_p) : j != i, p in P_i} -- the clip's row and
    column of the global clip x caption score matrix. L = mean_i loss_i over the global batch.
    """

    def forward(
        self,
        video: torch.Tensor,
        text: torch.Tensor,
        logit_scale: torch.Tensor,
        candidate_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """video (B, D), text (B, K, D) normalised; candidate_mask (B, K) bool, False for missing candidates."""
        candidate_mask = self._check_inputs(video, text, candidate_mask)
        all_video = gather_with_grad(video, self.rank, self.world_size)  # (Bg, D)
        all_text = gather_with_grad(text, self.rank, self.world_size)  # (Bg, K, D)
        all_mask = gather_no_grad(candidate_mask, self.world_size)  # (Bg, K)
        own = self._global_indices(video.shape[0], video.device)
        is_own = torch.arange(all_video.shape[0], device=video.device)[None, :] == own[:, None]  # (B, Bg)

        row = logit_scale * torch.einsum("id,jkd->ijk", video, all_text)  # (B, Bg, K): s(v_i, t_jk)
        column = logit_scale * torch.einsum("jd,ikd->ijk", all_video, text)  # (B, Bg, K): s(v_j, t_ik)
        positives = row[torch.arange(video.shape[0], device=video.device), own]  # (B, K): s(v_i, t_ik)
        row_terms = row.masked_fill(~all_mask.unsqueeze(0), float("-inf"))  # positives + row negatives
        column_negatives = ~is_own.unsqueeze(-1) & candidate_mask.unsqueeze(1)  # (B, Bg, K)
        column_terms = column.masked_fill(~column_negatives, float("-inf"))

        log_numerator = torch.logsumexp(positives.masked_fill(~candidate_mask, float("-inf")), dim=-1)
        log_denominator = torch.logsumexp(
            torch.cat([row_terms.flatten(1), column_terms.flatten(1)], dim=1), dim=-1
        )
        return (log_denominator - log_numerator).sum() / all_video.shape[0]

    @staticmethod
    def _check_inputs(
        video: torch.Tensor, text: torch.Tensor, candidate_mask: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            video.ndim != 2
            or text.ndim != 3
            or text.shape[0] != video.shape[0]
            or text.shape[2] != video.shape[1]
        ):
            raise ValueError(
                f"need video (B, D) and text (B, K, D), got {tuple(video.shape)}, {tuple(text.shape)}"
            )
        if candidate_mask is None:
            return torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        if candidate_mask.shape != text.shape[:2]:
            raise ValueError(
                f"candidate_mask must be (B, K) = {tuple(text.shape[:2])}, got {tuple(candidate_mask.shape)}"
            )
        candidate_mask = candidate_mask.bool()
        if not bool(candidate_mask.any(dim=1).all()):
            raise ValueError(
                "every clip needs at least one candidate caption (a True in its candidate_mask row)"
            )
        return candidate_mask


def milnce_from_pair_scores(scores: torch.Tensor, candidate_mask: torch.Tensor) -> torch.Tensor:
    """MIL-NCE from cross-encoder scores (B, K, B): scores[i, k, j] = s(caption k of clip i, clip j).

    MILNCELoss's formula (positives: clip i's candidates; negatives: its row and column) for heads
    that score pairs instead of embedding each side (tightTransf), over one process's batch: scoring
    every pair of a global batch with a cross-encoder costs (B x world)^2 forward passes. Returns the
    mean over the B clips.
    """
    clips = scores.shape[0]
    own = torch.eye(clips, dtype=torch.bool, device=scores.device)  # (B, B): j == i
    # (i, j, k): every caption against clip i -- its positives and its row negatives
    row = scores.permute(2, 0, 1).masked_fill(~candidate_mask.unsqueeze(0), float("-inf"))
    # (i, j, k): clip i's captions against the other clips j -- its column negatives
    column_mask = ~own.unsqueeze(-1) & candidate_mask.unsqueeze(1)
    column = scores.permute(0, 2, 1).masked_fill(~column_mask, float("-inf"))
    positives = scores[torch.arange(clips), :, torch.arange(clips)].masked_fill(
        ~candidate_mask, float("-inf")
    )
    log_denominator = torch.logsumexp(torch.cat([row.flatten(1), column.flatten(1)], dim=1), dim=1)
    return (log_denominator - torch.logsumexp(positives, dim=1)).mean()
