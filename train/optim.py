"""AdamW and its learning-rate schedule (sec. 4: AdamW, lr 1.5e-4, weight decay 0.05).

The paper gives no warm-up or decay; the defaults here (linear warm-up over 3% of the steps, then cosine
decay to zero) are the usual choice for fine-tuning GPT-2 / Swin and are fields of the TrainConfig.
Biases and normalisation gains (parameters with fewer than two dimensions) get no weight decay, as is
conventional; the paper does not say.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from train.config import TrainConfig


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over every parameter that requires a gradient now (call with the image encoder unfrozen)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.adam_betas))


def learning_rate_factor(step: int, *, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimiser ``step`` (0-based).

    Args:
        step: steps taken so far.
        total_steps: steps of the whole run (both stages).
        warmup_steps: steps of linear warm-up from 0.
        kind: "cosine" or "linear" decay to 0 after warm-up, or "constant".
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> LambdaLR:
    """The learning-rate schedule over ``total_steps`` optimiser steps; its state dict is plain numbers."""
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    return LambdaLR(
        optimizer,
        lambda step: learning_rate_factor(
            step, total_steps=total_steps, warmup_steps=warmup_steps, kind=config.lr_scheduler
        ),
    )
