"""AdamW with CLIP weights at lr * coef_lr and new modules at lr, warmup then cosine decay (CLIP4Clip's recipe)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from pipelines.config_values import Fraction, PositiveFloat


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: PositiveFloat = 1e-4  # new modules (similarity head, 3D patch); CLIP4Clip's default
    coef_lr: float = 1e-3  # CLIP weights train at lr * coef_lr: small steps keep what CLIP knows
    weight_decay: float = 0.2
    optimizer: Literal["adamw", "adam"] = "adamw"  # "adam": the paper's Adam (decay then applies to no group)
    beta1: Fraction = 0.9
    beta2: Fraction = 0.98
    eps: PositiveFloat = 1e-6
    warmup_proportion: Fraction = 0.1  # share of max_steps spent warming up linearly
    max_grad_norm: float = 1.0  # 0 disables clipping

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.coef_lr <= 0:
            raise ValueError(f"lr and coef_lr must be > 0, got {self.lr}, {self.coef_lr}")
        if not 0 <= self.warmup_proportion < 1:
            raise ValueError(f"warmup_proportion must be in [0, 1), got {self.warmup_proportion}")


def build_optimizer(
    param_groups: list[dict], config: OptimConfig, device: torch.device
) -> torch.optim.Optimizer:
    """param_groups: the model's groups (model.param_groups(lr, coef_lr, weight_decay))."""
    groups = param_groups
    if config.optimizer == "adam":
        groups = [{**group, "weight_decay": 0.0} for group in param_groups]
    # fused kernels on GPU (one launch for all parameters); foreach on CPU
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        groups,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        fused=fused,
        foreach=None if fused else True,
    )


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_proportion: float):
    """Linear warmup to each group's lr over warmup_proportion * total_steps, then cosine to 0."""
    warmup = max(1, int(total_steps * warmup_proportion))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
