"""Everett et al.'s four parameterizations x alignment, depth scalings, and the variants, measured on built
models at two widths (or depths) against exponents written out here from docs/parameterization-sources.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainers.config import ConfigError, TrainConfig
from trainers.optim import AdamAtan2, apply_lr, build_optimizer
from trainers.parameterization import build

VOCAB = 256
BASE, WIDE = 64, 256
M = WIDE / BASE

# (multiplier a, init b, Adam LR c) per role: docs/parameterization-sources.md sections 2, 3 and 5.
EXPECTED = {
    ("sp", None): {"embedding": (0, 0, 0), "hidden": (0, 0.5, 0), "readout": (0, 0.5, 0)},  # init: fan_in
    ("mup", None): {"embedding": (0, 0, 0), "hidden": (0, 0.5, 1), "readout": (1, 0, 0)},
    ("sp", "full"): {"embedding": (0, 0, 0), "hidden": (0, 0.5, 1), "readout": (0, 0.5, 1)},
    ("sp", "none"): {"embedding": (0, 0, 0), "hidden": (0, 0.5, 0.5), "readout": (0, 0.5, 0.5)},
    ("ntk", "full"): {"embedding": (0, 0, 0), "hidden": (0.5, 0, 0.5), "readout": (0.5, 0, 0.5)},
    ("ntk", "none"): {"embedding": (0, 0, 0), "hidden": (0.5, 0, 0), "readout": (0.5, 0, 0)},
    ("mup", "full"): {"embedding": (-0.5, 0.5, 0.5), "hidden": (0, 0.5, 1), "readout": (0.5, 0.5, 0.5)},
    ("mup", "none"): {"embedding": (-0.5, 0.5, 0.5), "hidden": (0, 0.5, 0.5), "readout": (0.5, 0.5, 0)},
    ("mfp", "full"): {"embedding": (0, 0, 0), "hidden": (0.5, 0, 0.5), "readout": (1, 0, 0)},
    ("mfp", "none"): {"embedding": (0, 0, 0), "hidden": (0.5, 0, 0), "readout": (1, 0, -0.5)},
}
PARAM_OF_ROLE = {"embedding": "embed.tokens", "hidden": "blocks.0.mlp.up.weight", "readout": "lm_head.weight"}
MODULE_OF_ROLE = {"embedding": "embed", "hidden": "blocks.0.mlp.up", "readout": "lm_head"}


def make(**kw):
    cfg = TrainConfig(
        **{"depth": 2, "head_dim": 16, "seq_len": 32, "base_width": BASE, "init": "fan_in", **kw}
    )
    model, plans = build(cfg, VOCAB)
    return cfg, model, plans


def group_lr(model, optimizer, name: str) -> float:
    param = dict(model.named_parameters())[name]
    return next(g["lr"] for g in optimizer.param_groups if any(p is param for p in g["params"]))


def measure(**kw) -> dict[str, dict[str, float]]:
    """Init std, forward multiplier and effective LR of one parameter per role, measured."""
    cfg, model, plans = make(**kw)
    optimizer = build_optimizer(model, plans, cfg)
    params = dict(model.named_parameters())
    x = torch.randn(3, WIDE if kw.get("width", WIDE) == WIDE else BASE)
    out = {}
    for role, name in PARAM_OF_ROLE.items():
        module = model.get_submodule(MODULE_OF_ROLE[role])
        if role == "embedding":
            idx = torch.tensor([[1, 2]])
            raw = F.embedding(idx, model.embed.tokens) + model.embed.positions[:2]
            mult = (module(idx) / raw).mean().item()
        else:
            x = torch.randn(3, params[name].shape[1])
            mult = (module(x) / F.linear(x, params[name])).mean().item()
        out[role] = {"std": params[name].std().item(), "mult": mult, "lr": group_lr(model, optimizer, name)}
    return out


@pytest.mark.parametrize(("parameterization", "alignment"), list(EXPECTED))
def test_measured_ratios_between_two_widths_follow_the_exponents(parameterization, alignment):
    small = measure(parameterization=parameterization, alignment=alignment, width=BASE)
    wide = measure(parameterization=parameterization, alignment=alignment, width=WIDE)
    for role, (a, b, c) in EXPECTED[(parameterization, alignment)].items():
        assert wide[role]["std"] / small[role]["std"] == pytest.approx(M**-b, rel=0.06), (role, "init")
        assert wide[role]["mult"] / small[role]["mult"] == pytest.approx(M**-a, rel=1e-4), (
            role,
            "multiplier",
        )
        assert wide[role]["lr"] / small[role]["lr"] == pytest.approx(M**-c, rel=1e-9), (role, "lr")


def test_every_form_is_the_base_model_at_the_base_width():
    reference = None
    for parameterization, alignment in EXPECTED:
        cfg, model, _ = make(parameterization=parameterization, alignment=alignment, width=BASE, seed=4)
        idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
        if cfg.effective_attn_scale != "sqrt":
            continue  # same value anyway at the base head dim; keep the comparison exact
        logits = model(idx)[0]
        reference = logits if reference is None else reference
        assert torch.allclose(logits, reference, atol=1e-6), (parameterization, alignment)


def test_sp_with_everett_per_layer_lrs_is_one_line_with_gammas():
    cfg, model, plans = make(
        width=WIDE, alignment="full", gamma_embed=6.25, gamma_hidden=1.48, gamma_readout=1.49, lr=0.01
    )
    opt = build_optimizer(model, plans, cfg)
    assert group_lr(model, opt, "embed.tokens") == pytest.approx(0.01 * 6.25)
    assert group_lr(model, opt, "blocks.0.attn.q.weight") == pytest.approx(0.01 * 1.48 / M)
    assert group_lr(model, opt, "lm_head.weight") == pytest.approx(0.01 * 1.49 / M)
    assert group_lr(model, opt, "norm_final.weight") == pytest.approx(0.01)


def train_steps(cfg: TrainConfig, steps: int = 3) -> torch.Tensor:
    """Logits on a fixed batch after `steps` Adam steps on fixed batches."""
    model, plans = build(cfg, VOCAB)
    optimizer = build_optimizer(model, plans, cfg)
    apply_lr(optimizer, 1.0)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (4, 17), generator=gen) for _ in range(steps + 1)]
    for batch in batches[:steps]:
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model(batches[-1][:, :-1])[0].detach()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"parameterization": "mup"}, {"parameterization": "mup", "alignment": "full"}),
        ({"parameterization": "mup"}, {"parameterization": "mup", "readout_scaling": "inv_sqrt_width"}),
        ({"parameterization": "sp", "alignment": "full"}, {"parameterization": "ntk", "alignment": "full"}),
        ({"parameterization": "sp", "alignment": "none"}, {"parameterization": "ntk", "alignment": "none"}),
        ({"parameterization": "mup", "alignment": "full"}, {"parameterization": "mfp", "alignment": "full"}),
    ],
)
def test_abc_symmetric_forms_compute_the_same_function_after_adam_steps(first, second):
    common = {"width": WIDE, "eps": 1e-30, "grad_clip": 0.0, "lr": 3e-3, "seed": 2}
    a = train_steps(make(**first, **common)[0])
    b = train_steps(make(**second, **common)[0])
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()
    # and it is not trivially so: a different parameterization gives a different function
    c = train_steps(make(parameterization="sp", **common)[0])
    assert not torch.allclose(a, c, rtol=1e-2, atol=1e-3)


def test_abc_symmetry_is_broken_by_a_large_eps():
    common = {"width": WIDE, "eps": 1e-2, "grad_clip": 0.0, "lr": 3e-3, "seed": 2}
    a = train_steps(make(parameterization="mup", **common)[0])
    b = train_steps(make(parameterization="mup", alignment="full", **common)[0])
    assert not torch.allclose(a, b, rtol=1e-4, atol=1e-5)


# --- depth ---------------------------------------------------------------------------------------------


def depth_model(depth: int, **kw):
    return make(width=BASE, depth=depth, base_depth=2, init="const", **kw)


@pytest.mark.parametrize(("scaling", "alpha"), [("depth_mup", 0.5), ("completep", 1.0)])
def test_depth_scalings_residual_multiplier_and_block_lr(scaling, alpha):
    cfg, model, plans = depth_model(8, depth_scaling=scaling, lr=0.01, eps_mode="scaled", eps=1e-8)
    m_depth = 8 / 2
    block = model.blocks[3]
    assert block.residual_mult == pytest.approx(m_depth**-alpha)
    x = torch.randn(2, 5, BASE)
    branch = block.attn(block.norm_attn(x))
    after_attn = x + m_depth**-alpha * branch
    expected = after_attn + m_depth**-alpha * block.mlp(block.norm_mlp(after_attn))
    assert torch.allclose(block(x), expected, atol=1e-6)
    opt = build_optimizer(model, plans, cfg)
    assert group_lr(model, opt, "blocks.5.attn.q.weight") == pytest.approx(0.01 * m_depth ** (alpha - 1))
    assert group_lr(model, opt, "blocks.5.norm_mlp.weight") == pytest.approx(0.01 * m_depth ** (alpha - 1))
    assert group_lr(model, opt, "embed.tokens") == pytest.approx(0.01)
    assert group_lr(model, opt, "norm_final.weight") == pytest.approx(0.01)
    eps = {p.name: p.eps for p in plans}
    assert eps["blocks.0.mlp.up.weight"] == pytest.approx(1e-8 * m_depth**-alpha)
    assert eps["embed.tokens"] == pytest.approx(1e-8)
    # the residual projections' init does not shrink with depth under a depth scaling
    table = {p.name: p for p in plans}
    shallow = {p.name: p for p in depth_model(2, depth_scaling=scaling)[2]}
    assert table["blocks.0.mlp.down.weight"].init_std == shallow["blocks.0.mlp.down.weight"].init_std
    assert table["blocks.0.mlp.down.weight"].multiplier == pytest.approx(m_depth**-alpha)


def test_depth_scaling_is_the_base_model_at_the_base_depth():
    _, plain, _ = depth_model(2, seed=1)
    _, scaled, _ = depth_model(2, depth_scaling="completep", seed=1)
    idx = torch.randint(0, VOCAB, (2, 8))
    assert torch.equal(plain(idx)[0], scaled(idx)[0])


def test_without_depth_scaling_gpt2_init_shrinks_with_depth():
    shallow = {p.name: p for p in depth_model(2)[2]}
    deep = {p.name: p for p in depth_model(8)[2]}
    ratio = deep["blocks.0.mlp.down.weight"].init_std / shallow["blocks.0.mlp.down.weight"].init_std
    assert ratio == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("residual_init", "expected_std"),
    [("gpt2", 0.02 / math.sqrt(16)), ("base_depth", 0.02 / math.sqrt(4)), ("none", 0.02)],
)
def test_residual_init_sets_the_depth_of_gpt2s_factor(residual_init, expected_std):
    _, model, plans = make(width=256, depth=8, base_depth=2, init="const", residual_init=residual_init)
    table = {p.name: p for p in plans}
    for name in ("blocks.7.mlp.down.weight", "blocks.0.attn.out.weight"):
        assert table[name].init_std == pytest.approx(expected_std)
        drawn = dict(model.named_parameters())[name]
        assert drawn.std().item() == pytest.approx(expected_std, rel=0.05)
    assert table["blocks.0.mlp.up.weight"].init_std == pytest.approx(0.02)  # not a residual projection


def test_residual_init_none_makes_the_no_depth_rule_baseline_the_base_model_of_every_depth_rule():
    """lr_depth's fair set-up: muP without a depth rule has a depth-free init, and at the base depth the
    three variants are one model; at depth 8 only the depth rule separates them."""
    plain = {p.name: p for p in depth_model(8, residual_init="none")[2]}
    depth_mup = {p.name: p for p in depth_model(8, residual_init="none", depth_scaling="depth_mup")[2]}
    name = "blocks.3.mlp.down.weight"
    assert plain[name].init_std == depth_mup[name].init_std == pytest.approx(0.02)
    assert plain[name].multiplier == 1.0 and depth_mup[name].multiplier == pytest.approx(0.5)
    _, base_plain, _ = depth_model(2, residual_init="none", seed=3)
    _, base_completep, _ = depth_model(2, residual_init="none", depth_scaling="completep", seed=3)
    idx = torch.randint(0, VOCAB, (2, 8))
    assert torch.equal(base_plain(idx)[0], base_completep(idx)[0])


def test_residual_init_base_depth_needs_base_depth():
    with pytest.raises(ConfigError, match="set base_depth"):
        TrainConfig.from_dict({"residual_init": "base_depth"})


@pytest.mark.parametrize("scaling", ["depth_mup", "completep"])
def test_coupled_scaled_weight_decay_has_no_depth_term(scaling):
    """CompleteP Table 1: lambda x m_N. The block LR's depth factor must not enter the decay."""
    _, _, plans = make(
        parameterization="mup", width=WIDE, depth=8, base_depth=2, depth_scaling=scaling, lr=0.01,
        weight_decay=0.1, weight_decay_mode="coupled_scaled",
    )  # fmt: skip
    wd = {p.name: p.weight_decay for p in plans}
    assert wd["blocks.5.attn.q.weight"] == pytest.approx(0.1 * M)
    assert wd["embed.tokens"] == pytest.approx(0.1)


def test_free_depth_alpha_and_sgd_depth_rule():
    cfg, model, plans = depth_model(8, depth_scaling="depth_mup", depth_alpha=0.75, optimizer="sgd", lr=0.1)
    assert model.blocks[0].residual_mult == pytest.approx(4**-0.75)
    opt = build_optimizer(model, plans, cfg)
    assert group_lr(model, opt, "blocks.0.attn.q.weight") == pytest.approx(0.1 * 4 ** (2 * 0.75 - 1))


# --- the variants --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scaling", "exponent"), [("width", 1), ("inv", -1), ("inv_sqrt", -0.5), ("constant", 0)]
)
def test_embedding_lr_scaling(scaling, exponent):
    small = measure(width=BASE, embed_lr_scaling=scaling)
    wide = measure(width=WIDE, embed_lr_scaling=scaling)
    assert wide["embedding"]["lr"] / small["embedding"]["lr"] == pytest.approx(M**exponent)
    assert wide["hidden"]["lr"] == small["hidden"]["lr"]


def test_readout_ablation_changes_the_multiplier_alone():
    small = measure(parameterization="mup", readout_scaling="inv_sqrt_width_ablation", width=BASE)
    wide = measure(parameterization="mup", readout_scaling="inv_sqrt_width_ablation", width=WIDE)
    assert wide["readout"]["mult"] / small["readout"]["mult"] == pytest.approx(M**-0.5, rel=1e-4)
    assert wide["readout"]["std"] / small["readout"]["std"] == pytest.approx(1.0, rel=0.06)
    assert wide["readout"]["lr"] == small["readout"]["lr"]


@pytest.mark.parametrize(
    ("mode", "hidden_wd"),
    [("coupled", 0.1), ("coupled_scaled", 0.1 * M), ("independent", 0.1 / (0.01 / M))],
)
def test_weight_decay_modes(mode, hidden_wd):
    _cfg, _model, plans = make(
        parameterization="mup", width=WIDE, lr=0.01, weight_decay=0.1, weight_decay_mode=mode
    )
    wd = {p.name: p.weight_decay for p in plans}
    assert wd["blocks.0.attn.q.weight"] == pytest.approx(hidden_wd)
    assert wd["norm_final.weight"] == 0.0


def test_scaled_eps_follows_the_gradient_scale_and_atan2_has_none():
    _, _, plans = make(parameterization="mup", width=WIDE, eps=1e-8, eps_mode="scaled")
    assert all(p.eps == pytest.approx(1e-8 / M) for p in plans)
    cfg, model, plans = make(parameterization="mup", width=WIDE, eps_mode="atan2")
    opt = build_optimizer(model, plans, cfg)
    assert isinstance(opt, AdamAtan2)
    loss_before = train_steps(cfg, steps=0)
    loss_after = train_steps(cfg, steps=3)
    assert not torch.equal(loss_before, loss_after)


def test_atan2_is_invariant_to_the_gradient_scale():
    p1, p2 = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    o1 = AdamAtan2([p1], lr=0.1, betas=(0.9, 0.95))
    o2 = AdamAtan2([p2], lr=0.1, betas=(0.9, 0.95))
    p1.grad, p2.grad = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, -2.0, 3.0]) * 1e-12
    o1.step()
    o2.step()
    assert torch.allclose(p1, p2)
    assert (p1 - 1).abs().max().item() == pytest.approx(0.1 * 1.27 * math.atan2(1, 1), rel=1e-5)


def test_rmsnorm_without_gain_has_no_gain_parameters():
    _, model, plans = make(width=BASE, norm="rmsnorm", norm_gain=False)
    assert not any(p.role == "vector" for p in plans)
    assert model(torch.randint(0, VOCAB, (1, 4)))[0].isfinite().all()


def test_everett_mup_can_tie_embeddings():
    _cfg, _model, plans = make(parameterization="mup", alignment="full", width=WIDE, tie_embeddings=True)
    table = {p.name: p for p in plans}
    assert table["lm_head.weight"].multiplier == pytest.approx(M**-0.5)
    assert table["embed.tokens"].multiplier == pytest.approx(M**0.5)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"parameterization": "ntk"}, "base_width"),
        ({"alignment": "full"}, "alignment 'full' is width-relative: set base_width"),
        ({"depth_scaling": "completep"}, "set base_depth"),
        ({"depth_alpha": 0.7}, "depth_alpha needs depth_scaling"),
        ({"readout_scaling": "inv_sqrt_width"}, "applies to parameterization mup only"),
        (
            {"optimizer": "sgd", "alignment": "none", "base_width": 64},
            "with optimizer sgd is not implemented",
        ),
        ({"optimizer": "sgd", "eps_mode": "scaled"}, "SGD has no eps"),
        ({"parameterization": "everett"}, "'sp', 'mup', 'ntk' or 'mfp'"),
    ],
)
def test_guards(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


def test_ntk_and_mfp_default_to_full_alignment():
    assert TrainConfig(parameterization="ntk", base_width=64).alignment == "full"
    assert TrainConfig(parameterization="mfp", base_width=64, alignment="none").alignment == "none"


def test_tying_refused_where_the_rules_differ():
    with pytest.raises(ConfigError, match="untie"):
        make(parameterization="sp", alignment="full", width=WIDE, tie_embeddings=True)


def grad_slope(role_param: str, **kw) -> float:
    """Slope of log2 mean |gradient| of one parameter against log2 width, at init (widths 64 and 512)."""
    values = []
    for width in (64, 512):
        _cfg, model, _ = make(width=width, **kw)
        torch.manual_seed(0)
        idx = torch.randint(0, VOCAB, (8, 17), generator=torch.Generator().manual_seed(0))
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        values.append(dict(model.named_parameters())[role_param].grad.abs().mean().item())
    return math.log2(values[1] / values[0]) / 3


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"parameterization": "mup"}, "lm_head.weight"),
        ({"parameterization": "mup", "readout_scaling": "inv_sqrt_width"}, "lm_head.weight"),
        ({"parameterization": "mup", "alignment": "full"}, "lm_head.weight"),
        ({"parameterization": "mup", "alignment": "full"}, "blocks.1.norm_mlp.weight"),
        ({"parameterization": "mup", "alignment": "full"}, "blocks.0.mlp.up.weight"),
        ({"parameterization": "sp", "alignment": "full"}, "lm_head.weight"),
    ],
)
def test_grad_exponents_match_measured_gradients(kw, param):
    """eps_mode: scaled follows the table's `grad` exponent; it must be the gradient's real scaling."""
    cfg, _model, plans = make(width=512, **kw)
    role = {p.name: p.role for p in plans}[param]
    from trainers.parameterization import width_rules

    expected = -width_rules(cfg)[role].grad
    assert grad_slope(param, **kw) == pytest.approx(expected, abs=0.2)
