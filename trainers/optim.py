"""Optimizers with one parameter group per distinct (LR, weight decay), LR schedules, gradient clipping."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from trainers.config import TrainConfig
from trainers.parameterization import ParamPlan


def build_optimizer(
    model: torch.nn.Module, plans: list[ParamPlan], cfg: TrainConfig
) -> torch.optim.Optimizer:
    """Groups keyed by each parameter's effective peak LR and weight decay from the plan.

    Each group remembers its own `peak_lr`; the schedule scales it (never overwrites it with a global LR).
    """
    params = dict(model.named_parameters())
    grouped: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    names: dict[tuple[float, float], list[str]] = {}
    for plan in plans:
        if plan.name not in params:  # the tied readout row shares the embedding tensor
            continue
        key = (plan.lr, plan.weight_decay)
        grouped.setdefault(key, []).append(params[plan.name])
        names.setdefault(key, []).append(plan.name)
    groups = [
        {"params": ps, "lr": lr, "peak_lr": lr, "weight_decay": wd, "names": names[(lr, wd)]}
        for (lr, wd), ps in grouped.items()
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=True)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, foreach=True)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak LR at `step` (0-based): linear warmup, then the decay schedule."""
    total, warmup = cfg.total_steps, min(cfg.warmup_steps, cfg.total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_frac * total))
        decay_start = max(warmup, total - decay_steps)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start + 1) / max(1, total - decay_start)
        return 1.0 - (1.0 - floor) * min(progress, 1.0)
    progress = (step - warmup + 1) / max(1, total - warmup)
    progress = min(progress, 1.0)
    if cfg.schedule == "linear":
        return 1.0 - (1.0 - floor) * progress
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global grad norm before clipping (a 0-d tensor); clips in place when max_norm > 0."""
    with_grad = [p for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad], foreach=True)
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(with_grad, max_norm, norm, foreach=True)
    return norm
