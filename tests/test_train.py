"""Training runs on the built-in corpus: learning, determinism, divergence, reports."""

from __future__ import annotations

import math

import pytest

from trainers.config import TrainConfig
from trainers.train import DivergenceMonitor, train

TINY = {
    "width": 32,
    "depth": 1,
    "head_dim": 16,
    "seq_len": 32,
    "batch_size": 8,
    "threads": 1,
    "eval_batches": 2,
}


def test_loss_falls_on_the_default_corpus_within_50_steps():
    result = train(TrainConfig(**{**TINY, "width": 64, "steps": 50, "lr": 1e-2, "eval_interval": 25}))
    assert result.status == "completed"
    start = result.history[0]["val_loss"]
    assert start == pytest.approx(math.log(256), abs=0.3)  # near uniform over bytes at init
    assert result.final_val_loss < start - 2.0


def test_same_config_and_seed_give_bitwise_identical_losses():
    cfg = TrainConfig(**TINY, steps=12, eval_interval=4)
    a, b = train(cfg), train(cfg)
    losses = lambda r: [(p["train_loss"], p["val_loss"], p["grad_norm"]) for p in r.history]  # noqa: E731
    assert losses(a) == losses(b)
    c = train(cfg.with_updates(seed=1))
    assert losses(c) != losses(a)


def test_reports_carry_the_promised_keys_at_each_eval():
    points = []
    result = train(TrainConfig(**TINY, steps=10, eval_interval=4), report=points.append)
    assert [p["step"] for p in points] == [0, 4, 8, 10]
    for point in points:
        assert {"step", "tokens", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s"} <= point.keys()
    assert points[-1]["tokens"] == 10 * 8 * 32 == result.tokens
    assert points[1]["train_loss"] > 0 and points[1]["tokens_per_s"] > 0
    assert result.history == points


def test_an_absurd_learning_rate_ends_diverged_not_raised():
    result = train(TrainConfig(**TINY, steps=200, lr=50.0, grad_clip=0.0, eval_interval=50))
    assert result.status == "diverged"
    assert result.diverged_at is not None and result.diverged_at < 200
    assert result.final_val_loss is None and result.divergence_reason
    assert result.summary()["status"] == "diverged"


def test_a_single_spike_is_not_divergence():
    monitor = DivergenceMonitor(factor=2.0, patience=3)
    losses = [5.5, 5.0, 12.0, 12.0, 4.0, 12.0, 3.9]
    assert [monitor.check(x) for x in losses] == [None] * len(losses)
    assert monitor.check(12.0) is None and monitor.check(12.0) is None
    assert "above 2 x initial" in monitor.check(12.0)
    assert "non-finite" in DivergenceMonitor(2.0, 3).check(float("nan"))


def test_bf16_autocast_trains_on_cpu():
    result = train(TrainConfig(**TINY, steps=20, lr=1e-2, dtype="bf16", eval_interval=20))
    assert result.status == "completed"
    assert result.final_val_loss < result.history[0]["val_loss"]
