"""LR schedules, relative per-group scaling, gradient clipping."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainers.config import TrainConfig
from trainers.optim import apply_lr, build_optimizer, clip_gradients, lr_factor
from trainers.parameterization import build


def factors(**kw) -> list[float]:
    cfg = TrainConfig(**kw)
    return [lr_factor(s, cfg) for s in range(cfg.total_steps)]


def test_warmup_is_linear_to_the_peak():
    f = factors(steps=100, warmup=10, schedule="constant")
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert f[10:] == [1.0] * 90


def test_cosine_and_linear_end_at_min_lr_ratio():
    for schedule in ("cosine", "linear"):
        f = factors(steps=100, warmup=10, schedule=schedule, min_lr_ratio=0.1)
        assert f[9] == 1.0
        assert f[-1] == pytest.approx(0.1)
        assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    cos = factors(steps=100, schedule="cosine", min_lr_ratio=0.0)
    assert cos[49] == pytest.approx(0.5, abs=1e-9)  # halfway: progress (49 + 1) / 100
    assert cos[24] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)), abs=1e-9)


def test_wsd_is_stable_then_decays_over_its_last_fraction():
    f = factors(steps=100, warmup=10, schedule="wsd", decay_frac=0.2, min_lr_ratio=0.0)
    assert f[10:80] == [1.0] * 70
    assert f[80] < 1.0 and f[-1] == pytest.approx(0.0)


def test_warmup_in_tokens_lines_up_across_batch_sizes():
    small = TrainConfig(batch_size=8, seq_len=16, tokens=8 * 16 * 200, warmup_tokens=8 * 16 * 20)
    big = TrainConfig(batch_size=16, seq_len=16, tokens=8 * 16 * 200, warmup_tokens=8 * 16 * 20)
    assert (small.warmup_steps, small.total_steps) == (20, 200)
    assert (big.warmup_steps, big.total_steps) == (10, 100)


def test_schedule_scales_each_group_relative_to_its_own_peak():
    cfg = TrainConfig(width=128, parameterization="mup", base_width=32, head_dim=16, lr=0.01)
    model, plans = build(cfg, 256)
    opt = build_optimizer(model, plans, cfg)
    peaks = sorted(g["peak_lr"] for g in opt.param_groups)
    assert peaks == pytest.approx([0.01 / 4, 0.01])
    apply_lr(opt, 0.5)
    apply_lr(opt, 0.25)  # not cumulative, not a global overwrite
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.25 * 0.01 / 4, 0.25 * 0.01])


def test_clipping_reports_the_norm_before_clipping():
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))]
    params[0].grad = torch.tensor([3.0, 0.0, 0.0])
    params[1].grad = torch.tensor([0.0, 4.0, 0.0, 0.0])
    norm = clip_gradients(params, max_norm=1.0)
    assert norm.item() == pytest.approx(5.0)
    assert torch.linalg.vector_norm(torch.cat([p.grad for p in params])).item() == pytest.approx(
        1.0, rel=1e-4
    )
    params[0].grad = torch.tensor([3.0, 0.0, 0.0])
    params[1].grad = torch.tensor([0.0, 4.0, 0.0, 0.0])
    assert clip_gradients(params, max_norm=0.0).item() == pytest.approx(5.0)  # 0 = off
    assert params[1].grad[1].item() == 4.0
