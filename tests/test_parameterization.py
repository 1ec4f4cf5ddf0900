"""The rule table, measured on built models: init std, forward multipliers, per-group LR and WD."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainers.config import ConfigError, TrainConfig
from trainers.optim import build_optimizer
from trainers.parameterization import build, width_rules

VOCAB = 256
BASE, WIDE = 64, 256  # m = 4 for every width-like dimension


def built(**kw):
    cfg = TrainConfig(**{"depth": 2, "head_dim": 16, "seq_len": 32, **kw})
    model, plans = build(cfg, VOCAB)
    return cfg, model, {p.name: p for p in plans}


def measured_std(model, name: str) -> float:
    return dict(model.named_parameters())[name].detach().float().std().item()


# Names of one parameter of each role, and the init exponent the table gives it.
ROLE_PARAMS = {
    "embedding": "embed.tokens",
    "hidden": "blocks.0.mlp.up.weight",
    "readout": "lm_head.weight",
}


@pytest.mark.parametrize("parameterization", ["sp", "mup"])
@pytest.mark.parametrize("init", ["const", "fan_in"])
def test_measured_init_std_scales_with_width_as_the_table_says(parameterization, init):
    kw = {"parameterization": parameterization, "init": init, "base_width": BASE}
    _, small, small_plan = built(width=BASE, **kw)
    _, wide, wide_plan = built(width=WIDE, **kw)
    rules = width_rules(TrainConfig(width=WIDE, **kw))
    for role, name in ROLE_PARAMS.items():
        rule = rules[role]
        b = rule.init if rule.init is not None else (0.5 if init == "fan_in" else 0.0)
        ratio = measured_std(wide, name) / measured_std(small, name)
        assert ratio == pytest.approx((WIDE / BASE) ** -b, rel=0.05), (role, name)
        # the table's init_std is what was actually drawn
        assert measured_std(wide, name) == pytest.approx(wide_plan[name].init_std, rel=0.05)
        assert measured_std(small, name) == pytest.approx(small_plan[name].init_std, rel=0.05)


def test_sp_const_is_gpt2_init():
    cfg, model, _ = built(width=WIDE, init="const", init_std=0.02)
    assert measured_std(model, "blocks.0.attn.q.weight") == pytest.approx(0.02, rel=0.05)
    residual = measured_std(model, "blocks.1.mlp.down.weight")
    assert residual == pytest.approx(0.02 / math.sqrt(2 * cfg.depth), rel=0.05)
    assert measured_std(model, "embed.tokens") == pytest.approx(0.02, rel=0.05)


def test_sp_fan_in_hidden_std_is_one_over_sqrt_fan_in():
    _, model, _ = built(width=WIDE, init="fan_in")
    assert measured_std(model, "blocks.0.mlp.up.weight") == pytest.approx(WIDE**-0.5, rel=0.05)
    assert measured_std(model, "blocks.0.mlp.down.weight") == pytest.approx((4 * WIDE) ** -0.5, rel=0.05)


def test_norm_gains_start_at_one_and_biases_at_zero():
    _, model, _ = built(width=BASE, bias=True)
    params = dict(model.named_parameters())
    assert torch.equal(params["blocks.0.norm_attn.weight"], torch.ones(BASE))
    assert torch.equal(params["blocks.0.norm_attn.bias"], torch.zeros(BASE))
    assert torch.equal(params["blocks.0.attn.q.bias"], torch.zeros(BASE))


def test_mup_forward_multipliers_measured_on_the_modules():
    _, model, plan = built(
        width=WIDE, parameterization="mup", base_width=BASE, output_mult=2.0, embed_mult=3.0
    )
    x = torch.randn(2, 5, WIDE)
    head = model.lm_head
    assert torch.allclose(head(x), F.linear(x, head.weight) * (2.0 / 4))
    idx = torch.randint(0, VOCAB, (2, 5))
    raw = F.embedding(idx, model.embed.tokens) + model.embed.positions[:5]
    assert torch.allclose(model.embed(idx), 3.0 * raw)
    assert plan["lm_head.weight"].multiplier == pytest.approx(0.5)
    assert plan["blocks.0.attn.q.weight"].multiplier == 1.0


def test_attention_scale_linear_in_head_dim_only_when_head_dim_grows():
    # width through the head dimension (n_heads fixed): 1/d_head relative to the base head dim
    _, grow_dim, _ = built(width=WIDE, n_heads=4, head_dim=None, parameterization="mup", base_width=BASE)
    base_head_dim, head_dim = BASE // 4, WIDE // 4
    assert grow_dim.blocks[0].attn.scale == pytest.approx(math.sqrt(base_head_dim) / head_dim)
    # width through the number of heads (head_dim fixed): same as SP's 1/sqrt(d_head)
    _, grow_heads, _ = built(width=WIDE, head_dim=16, parameterization="mup", base_width=BASE)
    assert grow_heads.blocks[0].attn.scale == pytest.approx(1 / 4)
    _, sp, _ = built(width=WIDE, n_heads=4, head_dim=None)
    assert sp.blocks[0].attn.scale == pytest.approx(1 / math.sqrt(head_dim))


def groups_by_name(optimizer) -> dict[str, tuple[float, float]]:
    return {n: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for n in g["names"]}


def test_mup_adam_groups_scale_hidden_lr_down_and_hidden_wd_up():
    cfg, model, plans = built(width=WIDE, parameterization="mup", base_width=BASE, lr=0.01, weight_decay=0.1)
    groups = groups_by_name(build_optimizer(model, list(plans.values()), cfg))
    assert groups["blocks.0.attn.q.weight"] == pytest.approx((0.01 / 4, 0.1 * 4))
    assert groups["blocks.1.mlp.down.weight"] == pytest.approx((0.01 / 4, 0.1 * 4))
    assert groups["embed.tokens"] == pytest.approx((0.01, 0.1))
    assert groups["lm_head.weight"] == pytest.approx((0.01, 0.1))
    assert groups["norm_final.weight"] == pytest.approx((0.01, 0.0))
    # one group per distinct (lr, wd)
    keys = [
        (g["lr"], g["weight_decay"]) for g in build_optimizer(model, list(plans.values()), cfg).param_groups
    ]
    assert len(keys) == len(set(keys)) == 3


def test_mup_sgd_groups_follow_musgd():
    cfg, model, plans = built(
        width=WIDE, parameterization="mup", base_width=BASE, optimizer="sgd", lr=0.1, weight_decay=0.01
    )
    groups = groups_by_name(build_optimizer(model, list(plans.values()), cfg))
    assert groups["blocks.0.attn.q.weight"] == pytest.approx((0.1, 0.01))
    assert groups["embed.tokens"] == pytest.approx((0.1 * 4, 0.01 / 4))
    assert groups["lm_head.weight"] == pytest.approx((0.1 * 4, 0.01 / 4))
    assert groups["norm_final.weight"][0] == pytest.approx(0.1 * 4)


def test_sp_has_a_single_lr_at_every_width():
    cfg, model, plans = built(width=WIDE, base_width=BASE, lr=0.01)
    lrs = {g["lr"] for g in build_optimizer(model, list(plans.values()), cfg).param_groups}
    assert lrs == {0.01}


@pytest.mark.parametrize("init", ["fan_in", "const"])
def test_mup_equals_sp_at_the_base_width(init):
    common = {"width": BASE, "init": init, "lr": 0.01, "weight_decay": 0.1, "seed": 3}
    sp_cfg, sp, sp_plans = built(parameterization="sp", **common)
    mup_cfg, mup, mup_plans = built(parameterization="mup", base_width=BASE, **common)
    sp_state, mup_state = sp.state_dict(), mup.state_dict()
    assert sp_state.keys() == mup_state.keys()
    for name in sp_state:
        assert torch.equal(sp_state[name], mup_state[name]), name
    sp_opt = build_optimizer(sp, list(sp_plans.values()), sp_cfg)
    mup_opt = build_optimizer(mup, list(mup_plans.values()), mup_cfg)
    assert groups_by_name(sp_opt) == groups_by_name(mup_opt)
    idx = torch.randint(0, VOCAB, (2, 16))
    assert torch.equal(sp(idx)[0], mup(idx)[0])


def test_mup_differs_from_sp_off_the_base_width():
    common = {"width": WIDE, "init": "fan_in", "seed": 3}
    _, sp, _ = built(parameterization="sp", **common)
    _, mup, _ = built(parameterization="mup", base_width=BASE, **common)
    assert mup.lm_head.multiplier == pytest.approx(1 / 4)
    assert measured_std(mup, "lm_head.weight") == pytest.approx(
        2 * measured_std(sp, "lm_head.weight"), rel=0.05
    )


def test_zero_inits_zero_only_their_tensor():
    _, plain, _ = built(width=BASE, seed=1)
    _, zeroed, plan = built(width=BASE, seed=1, zero_init_query=True, zero_init_readout=True)
    a, b = plain.state_dict(), zeroed.state_dict()
    for name in a:
        if name.endswith("attn.q.weight") or name == "lm_head.weight":
            assert not b[name].any(), name
            assert plan[name].init_std == 0.0
        else:
            assert torch.equal(a[name], b[name]), name


def test_tied_embeddings_share_one_tensor_with_two_table_rows():
    cfg, model, plan = built(
        width=WIDE, parameterization="mup", base_width=BASE, tie_embeddings=True, output_mult=2.0
    )
    assert model.lm_head.weight is model.embed.tokens
    assert plan["embed.tokens"].tied and plan["lm_head.weight"].tied
    assert plan["lm_head.weight"].role == "readout"
    assert plan["lm_head.weight"].init_std == plan["embed.tokens"].init_std  # constant: an embedding's init
    assert model.lm_head.multiplier == pytest.approx(2.0 / 4)
    assert (plan["lm_head.weight"].fan_in, plan["lm_head.weight"].fan_out) == (WIDE, VOCAB)
    opt = build_optimizer(model, list(plan.values()), cfg)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_tied_embeddings_refuse_contradictory_rules():
    with pytest.raises(ConfigError, match="tie_embeddings"):
        built(width=WIDE, init="fan_in", tie_embeddings=True)
    with pytest.raises(ConfigError, match="zero_init_readout"):
        built(width=WIDE, tie_embeddings=True, zero_init_readout=True)


def test_same_seed_same_weights_different_seed_different():
    _, a, _ = built(width=BASE, seed=5)
    _, b, _ = built(width=BASE, seed=5)
    _, c, _ = built(width=BASE, seed=6)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.state_dict()["blocks.0.attn.q.weight"], c.state_dict()["blocks.0.attn.q.weight"])
