"""optimizer: muon: which tensors Muon steps, their effective LRs under each shape rule (computed here from
the formulas), what coincides at the base width, a reference update written out by hand, and the weight
decay timescale form."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.config import ConfigError, TrainConfig, build_config
from trainers.optim import Muon, OptimizerPair, build_optimizer, newton_schulz_fp32
from trainers.parameterization import build

BASE = dict(depth=1, head_dim=16, seq_len=16, base_width=32, vocab_size=64, lr=0.01)


def plans_of(**keys) -> dict:
    cfg = TrainConfig(**{**BASE, **keys})
    _, plans = build(cfg, 64, device="meta")
    return {p.name: p for p in plans}


def shape_factor(rule: str, fan_out: int, fan_in: int) -> float:
    """The four shape rules as their sources write them."""
    return {
        "original": math.sqrt(max(1, fan_out / fan_in)),
        "match_rms_adamw": 0.2 * math.sqrt(max(fan_out, fan_in)),
        "spectral": math.sqrt(fan_out / fan_in),
        "none": 1.0,
    }[rule]


@pytest.mark.parametrize("rule", ["original", "match_rms_adamw", "spectral", "none"])
@pytest.mark.parametrize("parameterization", ["sp", "mup"])
@pytest.mark.parametrize("width", [32, 128])
def test_hidden_matrices_get_muon_and_the_shape_rule_lr(rule, parameterization, width):
    plans = plans_of(width=width, optimizer="muon", muon_rule=rule, parameterization=parameterization)
    up, down, q = (
        plans["blocks.0.mlp.up.weight"],
        plans["blocks.0.mlp.down.weight"],
        plans["blocks.0.attn.q.weight"],
    )
    for plan, (fan_out, fan_in) in (
        (up, (4 * width, width)),
        (down, (width, 4 * width)),
        (q, (width, width)),
    ):
        assert plan.optimizer == "muon"
        assert plan.lr == pytest.approx(0.01 * shape_factor(rule, fan_out, fan_in))
    # Everything else is AdamW's, with the parameterization's Adam rules: muP's readout multiplier 1/m.
    for name in ("embed.tokens", "lm_head.weight", "blocks.0.norm_attn.weight"):
        assert plans[name].optimizer == "adamw" and plans[name].lr == pytest.approx(0.01)
    m = width / 32
    expected = 1.0 / m if parameterization == "mup" else 1.0
    assert plans["lm_head.weight"].multiplier == pytest.approx(expected)


def test_the_adamw_side_takes_its_own_lr_ratio():
    plans = plans_of(width=64, optimizer="muon", adam_lr_ratio=0.25, parameterization="mup")
    assert plans["embed.tokens"].lr == pytest.approx(0.0025)
    assert plans["blocks.0.attn.q.weight"].lr == pytest.approx(0.01)  # Muon's: lr x shape rule


def test_at_the_base_width_sp_and_mup_muon_are_the_same_plan():
    sp = plans_of(width=32, optimizer="muon", parameterization="sp")
    mup = plans_of(width=32, optimizer="muon", parameterization="mup")
    for name in sp:
        assert (sp[name].lr, sp[name].init_std, sp[name].multiplier) == pytest.approx(
            (mup[name].lr, mup[name].init_std, mup[name].multiplier)
        ), name


def test_square_matrices_coincide_under_original_spectral_and_none():
    rules = {r: plans_of(width=64, optimizer="muon", muon_rule=r) for r in ("original", "spectral", "none")}
    lrs = {r: p["blocks.0.attn.q.weight"].lr for r, p in rules.items()}
    assert len(set(lrs.values())) == 1


def test_params_rows_name_the_optimizer():
    plans = plans_of(width=64, optimizer="muon")
    rows = [p.as_row() for p in plans.values()]
    assert {row["optimizer"] for row in rows} == {"muon", "adamw"}
    assert plans_of(width=64)["blocks.0.attn.q.weight"].as_row()["optimizer"] == "adamw"


@pytest.mark.parametrize("rule", ["original", "match_rms_adamw", "spectral", "none"])
def test_build_optimizer_splits_muon_and_adamw_groups(rule):
    keys = dict(optimizer="muon", muon_rule=rule, weight_decay=0.1, weight_decay_mode="coupled")
    cfg = TrainConfig(**BASE, width=64, **keys)
    model, plans = build(cfg, 64)
    opt = build_optimizer(model, plans, cfg)
    assert isinstance(opt, OptimizerPair)
    muon, adam = opt.optimizers
    assert isinstance(muon, Muon) and isinstance(adam, torch.optim.AdamW)
    muon_params = {id(p) for g in muon.param_groups for p in g["params"]}
    hidden = {id(p) for n, p in model.named_parameters() if n.startswith("blocks") and p.ndim == 2}
    assert muon_params == hidden
    assert all(g["weight_decay"] == 0.1 for g in muon.param_groups)


@pytest.mark.parametrize("rule", ["original", "match_rms_adamw"])
def test_muon_weight_decay_follows_the_mode(rule):
    """coupled_scaled keeps lr x wd at the base's for every tensor; independent makes wd itself the
    per-step decay; coupled keeps wd."""
    for mode, decay in (("coupled_scaled", 0.01 * 0.1), ("independent", 0.1)):
        keys = dict(optimizer="muon", muon_rule=rule, weight_decay=0.1, weight_decay_mode=mode)
        for plan in plans_of(width=128, **keys).values():
            if plan.role != "vector":
                assert plan.lr * plan.weight_decay == pytest.approx(decay), (mode, plan.name)


def reference_orthogonalise(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The quintic Newton-Schulz iteration of Muon (Keller Jordan), written out: X <- aX + b(XX^T)X +
    c(XX^T)^2 X on the Frobenius-normalised matrix, on its short side."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = g.shape[0] > g.shape[1]
    x = g.T.clone() if tall else g.clone()
    x = x / (torch.linalg.matrix_norm(x) + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + b * (s @ x) + c * (s @ s @ x)
    return x.T if tall else x


@pytest.mark.parametrize("shape", [(48, 16), (16, 48)])
def test_muon_steps_match_a_hand_written_reference(shape):
    torch.manual_seed(0)
    w0 = torch.randn(*shape)
    grads = [torch.randn(*shape) for _ in range(4)]
    lr, wd, beta = 0.02, 0.1, 0.95

    p = torch.nn.Parameter(w0.clone())
    opt = Muon([p], lr=lr, momentum=beta, weight_decay=wd, fp32_orthogonalisation=True)
    for g in grads:
        p.grad = g.clone()
        opt.step()

    w, buf = w0.clone(), torch.zeros(shape)
    for g in grads:
        buf = beta * buf + (1 - beta) * g
        nesterov = (1 - beta) * g + beta * buf
        w = w * (1 - lr * wd) - lr * reference_orthogonalise(nesterov)
    assert torch.allclose(p.detach(), w, atol=1e-5)


def test_fp32_orthogonalisation_agrees_with_torchs_bf16_one():
    torch.manual_seed(1)
    g = torch.randn(64, 32)
    ours = newton_schulz_fp32(g, (3.4445, -4.775, 2.0315), 5, 1e-7)
    from torch.optim._muon import _zeropower_via_newtonschulz

    theirs = _zeropower_via_newtonschulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7).float()
    assert (ours - theirs).abs().max() < 0.05  # bf16 rounding, about 2^-8 relative
    singular = torch.linalg.svdvals(ours)
    assert singular.min() > 0.5 and singular.max() < 1.5  # orthogonalised, as Muon's iteration leaves it


def test_muon_trains_the_builtin_gpt():
    from trainers.train import train

    keys = {**BASE, "lr": 0.02, "vocab_size": None}
    cfg = TrainConfig(**keys, width=64, optimizer="muon", steps=20, eval_interval=10, eval_batches=1)
    result = train(cfg)
    assert result.status == "completed" and result.final_val_loss < result.initial_loss


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"optimizer": "muon", "alignment": "full", "base_width": 64}, "optimizer muon uses the classic"),
        ({"optimizer": "muon", "eps_mode": "atan2"}, "eps_mode 'atan2' replaces Adam"),
        ({"weight_decay": 0.1, "wd_timescale": 0.5}, "set weight_decay or wd_timescale, not both"),
        ({"muon_rule": "sqrt"}, "muon_rule"),
    ],
)
def test_muon_and_timescale_keys_are_checked(keys, message):
    with pytest.raises(ConfigError, match=message):
        build_config(None, [f"{k}={v}" for k, v in keys.items()])


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("parameterization", ["sp", "mup"])
def test_wd_timescale_holds_every_tensors_timescale_at_the_fraction_of_the_run(optimizer, parameterization):
    steps, tau = 400, 0.25
    plans = plans_of(
        width=128, steps=steps, wd_timescale=tau, optimizer=optimizer, parameterization=parameterization
    )
    for plan in plans.values():
        if plan.role == "vector":
            assert plan.weight_decay == 0
        else:  # AdamW's (and Muon's) decay per step is lr x wd: its timescale 1/(lr wd) in steps
            assert 1 / (plan.lr * plan.weight_decay) == pytest.approx(tau * steps)
