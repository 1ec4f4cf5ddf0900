"""train(config, report) -> TrainResult: one training run, importable and runnable without Ray."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from trainers.config import TrainConfig
from trainers.data import Batches, load_corpus
from trainers.optim import apply_lr, build_optimizer, clip_gradients, lr_factor
from trainers.parameterization import build
from trainers.precision import resolve_dtype

Report = dict[str, Any]
Reporter = Callable[[Report], None]


@dataclass
class TrainResult:
    status: Literal["completed", "diverged"]
    final_val_loss: float | None  # None when the run diverged
    best_val_loss: float | None
    final_train_loss: float | None
    steps: int  # optimizer steps taken
    tokens: int
    wall_s: float
    tokens_per_s: float  # training throughput, evaluation excluded
    initial_loss: float | None = None
    diverged_at: int | None = None
    divergence_reason: str | None = None
    device: str = "cpu"
    dtype: str = "fp32"  # the precision that ran (dtype: auto resolved)
    n_params: int = 0
    flops_per_token: int = 0
    history: list[Report] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Everything but the curve: what `sweeper train --json` prints."""
        out = asdict(self)
        out.pop("history")
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from trainers.config import ConfigError

        raise ConfigError("device='cuda': no CUDA device is available (use device=auto or cpu)")
    return torch.device(name)


class DivergenceMonitor:
    """Diverged: a non-finite loss, or a train loss above `factor` x the first one for `patience` steps
    in a row. A single spike that recovers is not divergence."""

    def __init__(self, factor: float, patience: int) -> None:
        self.factor, self.patience = factor, patience
        self.initial: float | None = None
        self.streak = 0

    def check(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if self.initial is None:
            self.initial = loss
            return None
        self.streak = self.streak + 1 if loss > self.factor * self.initial else 0
        if self.streak >= self.patience:
            return f"loss {loss:.3g} above {self.factor:g} x initial {self.initial:.3g} for {self.patience} steps"
        return None


def train(config: TrainConfig | dict[str, Any], report: Reporter | None = None) -> TrainResult:
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    corpus = load_corpus(cfg.corpus, cfg.vocab_size)
    batches = Batches(corpus, cfg.batch_size, cfg.seq_len, cfg.seed, device)
    model, plans = build(cfg, corpus.vocab_size)
    model.to(device)
    dtype = resolve_dtype(cfg.dtype, device)
    optimizer = build_optimizer(model, plans, cfg, fp32=dtype != "bf16")
    forward = torch.compile(model) if cfg.compile else model
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if dtype == "bf16"
        else contextlib.nullcontext()
    )
    val_batches = batches.val_batches(cfg.eval_batches)
    params = list(model.parameters())

    def evaluate() -> float:
        with torch.no_grad(), autocast:
            losses = [forward(x, y)[1] for x, y in val_batches]
        return torch.stack(losses).mean().item()

    result = TrainResult(
        status="completed",
        final_val_loss=None,
        best_val_loss=None,
        final_train_loss=None,
        steps=0,
        tokens=0,
        wall_s=0.0,
        tokens_per_s=0.0,
        device=str(device),
        dtype=dtype,
        n_params=sum(p.numel() for p in params),
        flops_per_token=model.flops_per_token(),
    )
    monitor = DivergenceMonitor(cfg.diverge_factor, cfg.diverge_patience)
    train_time = 0.0
    window = {"loss": 0.0, "grad_norm": 0.0, "steps": 0, "time": 0.0}

    def emit(step: int, val_loss: float | None, factor: float) -> None:
        n = max(window["steps"], 1)
        point = {
            "step": step,
            "tokens": step * cfg.tokens_per_step,
            "train_loss": window["loss"] / n if window["steps"] else None,
            "val_loss": val_loss,
            "lr": cfg.lr * factor,
            "grad_norm": window["grad_norm"] / n if window["steps"] else None,
            "tokens_per_s": window["steps"] * cfg.tokens_per_step / window["time"]
            if window["time"]
            else None,
            "elapsed_s": time.perf_counter() - start,
        }
        result.history.append(point)
        if val_loss is not None:
            result.best_val_loss = (
                val_loss if result.best_val_loss is None else min(result.best_val_loss, val_loss)
            )
        window.update(loss=0.0, grad_norm=0.0, steps=0, time=0.0)
        if report is not None:
            report(point)

    emit(0, evaluate(), lr_factor(0, cfg))
    total = cfg.total_steps
    for step in range(1, total + 1):
        t0 = time.perf_counter()
        factor = lr_factor(step - 1, cfg)
        apply_lr(optimizer, factor)
        x, y = batches.train_batch()
        with autocast:
            _, loss = forward(x, y)
        loss.backward()
        grad_norm = clip_gradients(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        elapsed = time.perf_counter() - t0
        train_time += elapsed
        window["loss"] += loss_value
        window["grad_norm"] += grad_norm.item()
        window["steps"] += 1
        window["time"] += elapsed
        result.steps, result.tokens = step, step * cfg.tokens_per_step
        result.initial_loss = result.initial_loss if result.initial_loss is not None else loss_value

        reason = monitor.check(loss_value)
        if reason is not None:
            result.status, result.diverged_at, result.divergence_reason = "diverged", step, reason
            emit(step, None, factor)
            break
        result.final_train_loss = loss_value
        if step % cfg.eval_interval == 0 or step == total:
            val_loss = evaluate()
            result.final_val_loss = val_loss
            if not math.isfinite(val_loss):
                result.status, result.diverged_at = "diverged", step
                result.divergence_reason = f"non-finite validation loss ({val_loss})"
            emit(step, val_loss if math.isfinite(val_loss) else None, factor)
            if result.status == "diverged":
                break

    if result.status == "diverged":
        result.final_val_loss = result.final_train_loss = None
    else:
        last = result.history[-1]
        result.final_train_loss = (
            last["train_loss"] if last["train_loss"] is not None else result.final_train_loss
        )
    result.wall_s = time.perf_counter() - start
    result.tokens_per_s = result.tokens / train_time if train_time else 0.0
    return result
