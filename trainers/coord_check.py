"""Coordinate check: does each module's activation scale stay put as the width grows?

For each width and seed, the model trains `steps` steps at a constant LR. Forward hooks record the mean
|activation| (l1) of each module kind at every step: t = 1 is the forward pass at initialisation, t = k
the pass after k - 1 updates. Per module kind and step, the slope of log2(l1) against log2(width) should
be about 0 under a parameterization that transfers (muP), and grows under SP once training moves the
weights (TP5; the `mup` package's coord check).

Tolerance: |slope| <= 0.2, i.e. at most about 15% change per doubling of width. Known exception: when the
readout has a+b >= 1 (muP, MFP) and is not zero-initialised, the logits are an init term that vanishes
like m^-1/2 plus an update term of order 1; they start at slope -1/2 (t = 1) and flatten as training
moves the readout. Shrinking logits are stable, so a slope in [-0.5 - tol, tol] passes for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from trainers.config import TrainConfig
from trainers.data import Batches, load_corpus
from trainers.optim import apply_lr, build_optimizer, clip_gradients
from trainers.parameterization import build, width_rules

MODULE_KINDS = ("embedding", "attention", "mlp", "block", "logits")
TOLERANCE = 0.2


@dataclass
class CoordCheckResult:
    passed: bool
    rows: list[dict] = field(default_factory=list)  # module, step, width, l1 (mean over seeds)
    slopes: list[dict] = field(default_factory=list)  # module, step, slope, ok
    tolerance: float = TOLERANCE
    config: dict = field(default_factory=dict)

    def failing(self) -> list[dict]:
        return [s for s in self.slopes if not s["ok"]]

    def as_json(self) -> dict:
        return {"passed": self.passed, "rows": self.rows, "slopes": self.slopes, "tolerance": self.tolerance}


def _attach_hooks(model: torch.nn.Module, record: dict[str, list[float]]) -> list:
    def hook(kind: str):
        def fn(_module, _inputs, output) -> None:
            record[kind].append(output.detach().float().abs().mean().item())

        return fn

    handles = [
        model.embed.register_forward_hook(hook("embedding")),
        model.lm_head.register_forward_hook(hook("logits")),
    ]
    for block in model.blocks:
        handles.append(block.attn.register_forward_hook(hook("attention")))
        handles.append(block.mlp.register_forward_hook(hook("mlp")))
        handles.append(block.register_forward_hook(hook("block")))
    return handles


def measure_width(
    cfg: TrainConfig, steps: int, vocab_size: int, batches: Batches
) -> dict[tuple[str, int], float]:
    """l1 per (module kind, step) for one width and seed; attention, MLP and block outputs averaged over
    the blocks."""
    model, plans = build(cfg, vocab_size)
    optimizer = build_optimizer(model, plans, cfg)
    apply_lr(optimizer, 1.0)
    params = list(model.parameters())
    out: dict[tuple[str, int], float] = {}
    for step in range(1, steps + 1):
        record: dict[str, list[float]] = {kind: [] for kind in MODULE_KINDS}
        handles = _attach_hooks(model, record)
        x, y = batches.train_batch()
        _, loss = model(x, y)
        for handle in handles:
            handle.remove()
        for kind, values in record.items():
            out[(kind, step)] = float(np.mean(values))
        loss.backward()
        clip_gradients(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return out


def slope_of(widths: list[int], l1: list[float]) -> float:
    if all(v == 0 for v in l1):
        return 0.0  # e.g. zero-initialised readout at t = 1: flat at zero
    logs = np.log2(np.maximum(np.asarray(l1), 1e-30))
    return float(np.polyfit(np.log2(widths), logs, 1)[0])


def logits_shrink_at_init(cfg: TrainConfig) -> bool:
    rule = width_rules(cfg)["readout"]
    init = rule.init if rule.init is not None else 0.0
    return rule.multiplier + init >= 1 and not cfg.zero_init_readout


def run_coord_check(
    cfg: TrainConfig,
    widths: list[int],
    steps: int = 5,
    seeds: int = 3,
    lr: float | None = None,
    tolerance: float = TOLERANCE,
    on_model_done: Callable[[int, int], None] | None = None,
) -> CoordCheckResult:
    """Coordinate check of `cfg` over `widths`; base_width defaults to the smallest width."""
    widths = sorted(widths)
    updates: dict = {"base_width": cfg.base_width or widths[0]}
    if lr is not None:
        updates["lr"] = lr
    base = cfg.with_updates(**updates)
    corpus = load_corpus(base.corpus, base.vocab_size)
    sums: dict[tuple[str, int, int], float] = {}
    for width in widths:
        for seed in range(seeds):
            trial = base.with_updates(width=width, seed=seed)
            batches = Batches(corpus, trial.batch_size, trial.seq_len, seed)
            for (kind, step), value in measure_width(trial, steps, corpus.vocab_size, batches).items():
                sums[(kind, step, width)] = sums.get((kind, step, width), 0.0) + value / seeds
            if on_model_done is not None:
                on_model_done(width, seed)

    rows = [
        {"module": kind, "step": step, "width": width, "l1": sums[(kind, step, width)]}
        for kind in MODULE_KINDS
        for step in range(1, steps + 1)
        for width in widths
    ]
    shrink_ok = logits_shrink_at_init(base)
    slopes = []
    for kind in MODULE_KINDS:
        for step in range(1, steps + 1):
            values = [sums[(kind, step, w)] for w in widths]
            slope = slope_of(widths, values)
            ok = math.isfinite(slope) and abs(slope) <= tolerance
            if kind == "logits" and shrink_ok:
                ok = math.isfinite(slope) and -0.5 - tolerance <= slope <= tolerance
            slopes.append({"module": kind, "step": step, "slope": slope, "ok": ok})
    return CoordCheckResult(
        passed=all(s["ok"] for s in slopes),
        rows=rows,
        slopes=slopes,
        tolerance=tolerance,
        config=base.model_dump(),
    )
