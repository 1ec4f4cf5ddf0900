"""Optimizers with one parameter group per distinct (LR, weight decay, eps), LR schedules, clipping."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.optim._muon as torch_muon

from trainers.config import TrainConfig
from trainers.parameterization import ParamPlan

ATAN2_SCALE = 1.27  # a in a * atan2(m, b * sqrt(v)); b = 1 (the adam-atan2 port's defaults)


class AdamAtan2(torch.optim.Optimizer):
    """Adam with the ratio m / (sqrt(v) + eps) replaced by a * atan2(m, sqrt(v)): invariant to the
    gradient's scale and free of eps (Everett et al. 2024, section 5). Coupled weight decay as AdamW."""

    def __init__(self, params, lr: float, betas: tuple[float, float], weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                m_hat = m / (1 - beta1**t)
                v_hat_sqrt = (v / (1 - beta2**t)).sqrt_()
                p.add_(torch.atan2(m_hat, v_hat_sqrt), alpha=-group["lr"] * ATAN2_SCALE)


def newton_schulz_fp32(
    grad: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> torch.Tensor:
    """Muon's quintic Newton-Schulz orthogonalisation in float32, for CPUs where bf16 is emulated: on an
    AMD EPYC (AVX2) torch's own bf16 iteration took 630 ms a step for one 1024 x 256 matrix, this one 31
    ms (bench/muon_step.py). The same iteration as torch.optim.Muon's, in another precision."""
    a, b, c = coefficients
    x = grad.float()
    wide = x.size(0) > x.size(1)
    if wide:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if wide else x).to(grad.dtype)


class Muon(torch.optim.Muon):
    """torch.optim.Muon with each group's LR taken as the effective one (sweeper's plan already holds the
    shape rule, MUON_RULES, which torch's `adjust_lr_fn` cannot all express), and with the orthogonalisation
    in float32 when `fp32_orthogonalisation` (the trial trains in fp32: bf16 is slow or emulated here)."""

    def __init__(self, params: Any, *, fp32_orthogonalisation: bool, **kw: Any) -> None:
        missing = [f for f in ("_adjust_lr", "_zeropower_via_newtonschulz") if not hasattr(torch_muon, f)]
        if missing:  # a torch whose Muon is laid out differently: refuse rather than scale the LR twice
            raise RuntimeError(
                f"torch {torch.__version__}'s torch.optim._muon has no {', '.join(missing)}: "
                "trainers.optim.Muon needs updating for this torch"
            )
        super().__init__(params, **kw)
        self.fp32_orthogonalisation = fp32_orthogonalisation

    @torch.no_grad()
    def step(self, closure=None):
        with self._rules():
            return super().step(closure)

    @contextlib.contextmanager
    def _rules(self) -> Iterator[None]:
        saved = torch_muon._adjust_lr, torch_muon._zeropower_via_newtonschulz
        torch_muon._adjust_lr = lambda lr, rule, shape: lr
        if self.fp32_orthogonalisation:
            torch_muon._zeropower_via_newtonschulz = newton_schulz_fp32
        try:
            yield
        finally:
            torch_muon._adjust_lr, torch_muon._zeropower_via_newtonschulz = saved


class OptimizerPair:
    """Muon for the hidden matrices and AdamW for the rest, stepped as one optimizer."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = [o for o in optimizers if o.param_groups]

    @property
    def param_groups(self) -> list[dict]:
        return [group for o in self.optimizers for group in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {type(o).__name__: o.state_dict() for o in self.optimizers}


def build_optimizer(
    model: torch.nn.Module, plans: list[ParamPlan], cfg: TrainConfig, fp32: bool = True
) -> torch.optim.Optimizer | OptimizerPair:
    """Groups keyed by each parameter's effective peak LR, weight decay and eps from the plan (and, for
    Muon, its optimizer). `fp32`: the trial trains in float32 (Muon orthogonalises in float32 then).

    Each group remembers its own `peak_lr`; the schedule scales it (never overwrites it with a global LR).
    """
    params = dict(model.named_parameters())
    grouped: dict[tuple[str, float, float, float], list[str]] = {}
    for plan in plans:
        if plan.name in params:  # the tied readout row shares the embedding tensor
            key = (plan.optimizer, plan.lr, plan.weight_decay, plan.eps)
            grouped.setdefault(key, []).append(plan.name)
    groups = [
        {
            "params": [params[n] for n in names],
            "lr": lr,
            "peak_lr": lr,
            "weight_decay": wd,
            "eps": eps,
            "names": names,
            "optimizer": optimizer,
        }
        for (optimizer, lr, wd, eps), names in grouped.items()
    ]
    if cfg.optimizer == "muon":
        muon_groups = [g for g in groups if g["optimizer"] == "muon"]
        adam_groups = [g for g in groups if g["optimizer"] != "muon"]
        for group in groups:
            del group["optimizer"]
        for group in muon_groups:
            del group["eps"]  # Muon's own eps only guards the normalisation
        pair = []
        if muon_groups:
            pair.append(
                Muon(
                    muon_groups,
                    lr=cfg.lr,
                    momentum=cfg.muon_momentum,
                    weight_decay=0.0,
                    fp32_orthogonalisation=fp32,
                )
            )
        if adam_groups:
            pair.append(torch.optim.AdamW(adam_groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=True))
        return OptimizerPair(*pair)
    for group in groups:
        del group["optimizer"]
    if cfg.optimizer == "sgd":
        for group in groups:
            del group["eps"]
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, foreach=True)
    if cfg.eps_mode == "atan2":
        for group in groups:
            del group["eps"]
        return AdamAtan2(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=True)


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
    progress = min((step - warmup + 1) / max(1, total - warmup), 1.0)
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
