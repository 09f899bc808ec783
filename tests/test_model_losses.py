"""Losses against their closed forms on small hand-built inputs, and distributed == single process."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from model.losses import (
    MILNCELoss,
    SymmetricCrossEntropyLoss,
    milnce_from_pair_scores,
    symmetric_cross_entropy,
)

# --- closed forms on hand-built similarities ------------------------------------------------------------------
# With unit vectors e_k, <v_i, t_j> is whatever we place in a matrix: v_i = e_i and t_j = S[:, j] gives
# <v_i, t_j> = S[i, j] exactly.


def features_for(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """video (B, B) one-hot and text columns so that <video_i, text_j...> = scores[i, j...]."""
    batch = scores.shape[0]
    video = torch.eye(batch, dtype=torch.float64)
    text = scores.movedim(0, -1)  # (B, [K,] B): text[j, (k,) :] = scores[:, j, (k)]
    return video, text


def test_symmetric_cross_entropy_closed_form():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3], [0.7, -0.2, 1.5]], dtype=torch.float64)
    video, text = features_for(s)
    scale = 3.0
    expected = 0.0
    for i in range(3):
        row = -math.log(math.exp(scale * s[i, i]) / sum(math.exp(scale * s[i, j]) for j in range(3)))
        column = -math.log(math.exp(scale * s[i, i]) / sum(math.exp(scale * s[j, i]) for j in range(3)))
        expected += (row + column) / (2 * 3)
    loss = SymmetricCrossEntropyLoss()(video, text, torch.tensor(scale, dtype=torch.float64))
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    assert float(symmetric_cross_entropy(scale * s)) == pytest.approx(expected, rel=1e-12)


def test_mil_nce_with_one_candidate_is_nce_over_row_and_column():
    """K = 1: loss_i = -log e^{s_ii} / (sum_j e^{s_ij} + sum_{j != i} e^{s_ji})."""
    s = torch.tensor([[1.0, 0.2, -0.5], [0.4, 0.9, 0.1], [-0.3, 0.8, 1.2]], dtype=torch.float64)
    video, text = features_for(s.unsqueeze(-1))  # text (B, 1, B)
    expected = 0.0
    for i in range(3):
        row = sum(math.exp(s[i, j]) for j in range(3))
        column = sum(math.exp(s[j, i]) for j in range(3) if j != i)
        expected += -math.log(math.exp(s[i, i]) / (row + column)) / 3
    loss = MILNCELoss()(video, text, torch.tensor(1.0, dtype=torch.float64))
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_mil_nce_with_several_candidates_sums_them_in_the_numerator():
    """K = 3 with missing candidates: numerator over the clip's own candidates; denominator adds every
    candidate of other clips against v_i, and v_j against each own candidate (j != i)."""
    generator = torch.Generator().manual_seed(0)
    s = torch.randn(3, 3, 3, generator=generator, dtype=torch.float64)  # s[i, j, k] = <v_i, t_jk>
    present = torch.tensor([[True, True, True], [True, False, False], [False, True, True]])
    video, text = features_for(s)
    scale = 2.0
    e = lambda i, j, k: math.exp(scale * s[i, j, k])  # noqa: E731
    expected = 0.0
    for i in range(3):
        own = [k for k in range(3) if present[i, k]]
        numerator = sum(e(i, i, k) for k in own)
        row = sum(e(i, j, k) for j in range(3) if j != i for k in range(3) if present[j, k])
        column = sum(e(j, i, k) for j in range(3) if j != i for k in own)
        expected += -math.log(numerator / (numerator + row + column)) / 3
    loss = MILNCELoss()(video, text, torch.tensor(scale, dtype=torch.float64), present)
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_mil_nce_ignores_missing_candidates_content():
    generator = torch.Generator().manual_seed(1)
    video = F.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    text = F.normalize(torch.randn(4, 3, 8, generator=generator), dim=-1)
    present = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    loss = MILNCELoss()(video, text, torch.tensor(10.0), present)
    text[~present] = torch.randn_like(text[~present])
    torch.testing.assert_close(MILNCELoss()(video, text, torch.tensor(10.0), present), loss)


def test_mil_nce_from_pair_scores_equals_mil_nce_on_dot_product_scores():
    # A cross-encoder whose score is logit_scale * <v_j, t_ik> must give MILNCELoss exactly.
    torch.manual_seed(3)
    video = F.normalize(torch.randn(4, 8), dim=-1)
    text = F.normalize(torch.randn(4, 3, 8), dim=-1)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    scale = torch.tensor(7.0)
    scores = scale * torch.einsum("ikd,jd->ikj", text, video)  # (B, K, B)
    expected = MILNCELoss()(video, text, scale, mask)
    assert torch.allclose(milnce_from_pair_scores(scores, mask), expected, atol=1e-6)


def test_losses_reject_bad_inputs():
    with pytest.raises(ValueError, match="at least one candidate"):
        MILNCELoss()(
            torch.zeros(2, 4), torch.zeros(2, 2, 4), torch.tensor(1.0), torch.tensor([[1, 0], [0, 0]])
        )
    with pytest.raises(ValueError, match=r"\(B, K, D\)"):
        MILNCELoss()(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        SymmetricCrossEntropyLoss()(torch.zeros(2, 4), torch.zeros(3, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match="rank"):
        MILNCELoss(rank=2, world_size=2)


# --- distributed: 2 processes on gloo == 1 process on the whole batch ----------------------------------------

GLOBAL_BATCH, K, D_IN, D = 6, 3, 5, 4


def _problem(seed: int = 0):
    """A tiny 'model' (linear encoders + logit scale) and a global batch of inputs."""
    generator = torch.Generator().manual_seed(seed)
    params = {
        "video_proj": torch.randn(D, D_IN, generator=generator, dtype=torch.float64),
        "text_proj": torch.randn(D, D_IN, generator=generator, dtype=torch.float64),
        "log_scale": torch.tensor(math.log(5.0), dtype=torch.float64),
    }
    inputs = {
        "video": torch.randn(GLOBAL_BATCH, D_IN, generator=generator, dtype=torch.float64),
        "text": torch.randn(GLOBAL_BATCH, K, D_IN, generator=generator, dtype=torch.float64),
        "present": torch.rand(GLOBAL_BATCH, K, generator=generator) < 0.7,
    }
    inputs["present"][:, 0] = True
    return params, inputs


def _loss_and_grads(loss_name: str, rank: int, world_size: int, rows: slice):
    params, inputs = _problem()
    for p in params.values():
        p.requires_grad_(True)
    video = F.normalize(inputs["video"][rows] @ params["video_proj"].T, dim=-1)
    text = F.normalize(inputs["text"][rows] @ params["text_proj"].T, dim=-1)
    scale = params["log_scale"].exp()
    if loss_name == "mil_nce":
        loss = MILNCELoss(rank, world_size)(video, text, scale, inputs["present"][rows])
    else:
        loss = SymmetricCrossEntropyLoss(rank, world_size)(video, text[:, 0], scale)
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in params.items()}


def _worker(rank: int, world_size: int, port: int, loss_name: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        local = GLOBAL_BATCH // world_size
        loss, grads = _loss_and_grads(loss_name, rank, world_size, slice(rank * local, (rank + 1) * local))
        torch.save({"loss": loss, **grads}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("loss_name", ["mil_nce", "symmetric_ce"])
def test_two_process_gloo_losses_sum_to_single_process(loss_name, tmp_path):
    single_loss, single_grads = _loss_and_grads(loss_name, 0, 1, slice(None))
    mp.spawn(_worker, args=(2, _free_port(), loss_name, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close(ranks[0]["loss"] + ranks[1]["loss"], single_loss)
    assert not torch.allclose(ranks[0]["loss"], ranks[1]["loss"])  # each rank has its own share
    for name, grad in single_grads.items():
        torch.testing.assert_close(ranks[0][name] + ranks[1][name], grad, msg=name)
