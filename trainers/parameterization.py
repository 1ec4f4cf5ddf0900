"""Parameterizations as one rule table: parameter role -> init std, forward multiplier, LR, weight decay.

Every rule is base-relative (parameterizations.md, section 0): a parameter whose width multiplier is
m = n / n_base gets

    init std   = base_std   * m^-b
    multiplier = base_mult  * m^-a
    LR         = lr         * m^-c        (c from the Adam or the SGD column)

so at the base width (m = 1) every parameterization is the same base model. m is computed per parameter
from the base model's shapes, as the `mup` package does: the ratio of the last dimension (fan_in of a
linear map, the width of an embedding row or of a vector).

Weight decay is coupled (PyTorch AdamW/SGD: the step decays by lr * wd), and the rule keeps lr * wd free
of width: wd is multiplied by m^+c wherever the LR is multiplied by m^-c (the `mup` package's MuAdam and
MuSGD default). Vector-like parameters (biases, norm gains) are not decayed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from trainers.config import ConfigError, TrainConfig

Role = Literal["embedding", "hidden", "readout", "vector"]

# b = None: the init std follows the `init` key: it scales like 1/sqrt(fan_in) (b = 1/2) under
# `init: fan_in` (SP as TP5 and Everett et al. define it), and stays constant (b = 0) under
# `init: const` (SP as GPT-2 and nanoGPT define it).
FOLLOWS_INIT = None


@dataclass(frozen=True)
class WidthRule:
    """Width exponents of one role: std ~ m^-init, multiplier ~ m^-multiplier, LR ~ m^-lr."""

    init: float | None
    multiplier: float
    adam_lr: float
    sgd_lr: float


# fmt: off
RULES: dict[str, dict[Role, WidthRule]] = {
    # Standard parameterization: nothing but (optionally) the fan-in init depends on width.
    "sp": {
        "embedding": WidthRule(init=0,           multiplier=0, adam_lr=0, sgd_lr=0),
        "hidden":    WidthRule(init=FOLLOWS_INIT, multiplier=0, adam_lr=0, sgd_lr=0),
        "readout":   WidthRule(init=FOLLOWS_INIT, multiplier=0, adam_lr=0, sgd_lr=0),
        "vector":    WidthRule(init=0,           multiplier=0, adam_lr=0, sgd_lr=0),
    },
    # muP in the form of TP5 Table 8, the `mup` package and nanoGPT-mup: hidden init 1/sqrt(fan_in),
    # hidden Adam LR / m; readout multiplier output_mult / m with a width-independent init and LR;
    # SGD: vector-like LR x m (embeddings, biases, gains, readout), hidden LR unchanged.
    "mup": {
        "embedding": WidthRule(init=0,   multiplier=0, adam_lr=0, sgd_lr=-1),
        "hidden":    WidthRule(init=0.5, multiplier=0, adam_lr=1, sgd_lr=0),
        "readout":   WidthRule(init=0,   multiplier=1, adam_lr=0, sgd_lr=-1),
        "vector":    WidthRule(init=0,   multiplier=0, adam_lr=0, sgd_lr=-1),
    },
}
# fmt: on


@dataclass(frozen=True)
class ParamPlan:
    """What one parameter tensor gets. This is the row of `sweeper params`."""

    name: str
    role: Role
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    width_mult: float
    init_std: float
    multiplier: float
    lr: float  # effective peak LR
    weight_decay: float  # effective coupled weight decay
    tied: bool

    def as_row(self) -> dict:
        row = asdict(self)
        row["shape"] = list(self.shape)
        return row


def fan_in_out(role: Role, shape: tuple[int, ...]) -> tuple[int, int]:
    if role == "embedding":  # a lookup table is a linear map from a one-hot of `rows` entries
        return shape[0], shape[1]
    if len(shape) == 1:  # a bias or a gain: the linear map from the constant 1
        return 1, shape[0]
    return shape[1], shape[0]  # nn.Linear weight: [fan_out, fan_in]


def _base_std(cfg: TrainConfig, role: Role, base_fan_in: int, residual_out: bool) -> float:
    if cfg.init == "const":
        std = cfg.init_std
        if residual_out:  # GPT-2: residual projections shrink with depth
            std /= math.sqrt(2 * cfg.depth)
        return std * cfg.init_mult
    return cfg.init_mult / math.sqrt(base_fan_in)


def _init_exponent(rule: WidthRule, cfg: TrainConfig) -> float:
    if rule.init is FOLLOWS_INIT:
        return 0.5 if cfg.init == "fan_in" else 0.0
    return rule.init


def plan_parameters(
    cfg: TrainConfig, model: nn.Module, base_shapes: dict[str, tuple[int, ...]]
) -> list[ParamPlan]:
    """One ParamPlan per parameter tensor of `model` (a tied readout is listed as a row of its own)."""
    rules = RULES[cfg.parameterization]
    roles: dict[str, Role] = model.parameter_roles()
    residual_outs: set[str] = model.residual_output_names()
    lr_column = "adam_lr" if cfg.optimizer == "adamw" else "sgd_lr"
    plans: list[ParamPlan] = []
    for name, param in model.named_parameters():
        plans.append(
            _plan_one(
                cfg,
                name,
                roles[name],
                tuple(param.shape),
                base_shapes[name],
                rules,
                lr_column,
                name in residual_outs,
            )
        )
    if cfg.tie_embeddings:
        emb = next(p for p in plans if p.name == model.TIED_EMBEDDING)
        readout = rules["readout"]
        mult = cfg.output_mult * emb.width_mult**-readout.multiplier
        plans = [_replace(p, tied=True) if p.name == emb.name else p for p in plans]
        plans.append(
            _replace(
                emb,
                name=model.TIED_READOUT,
                role="readout",
                multiplier=mult,
                tied=True,
                fan_in=emb.fan_out,
                fan_out=emb.fan_in,
            )
        )
    return plans


def _plan_one(
    cfg: TrainConfig,
    name: str,
    role: Role,
    shape: tuple[int, ...],
    base_shape: tuple[int, ...],
    rules: dict[Role, WidthRule],
    lr_column: str,
    residual_out: bool,
) -> ParamPlan:
    rule = rules[role]
    m = shape[-1] / base_shape[-1]
    fan_in, fan_out = fan_in_out(role, shape)
    base_fan_in, _ = fan_in_out(role, base_shape)
    if role == "vector":
        std = 0.0  # biases start at 0, gains at 1 (see init_parameters)
    else:
        std = _base_std(cfg, role, base_fan_in, residual_out) * m ** -_init_exponent(rule, cfg)
    if (role == "readout" and cfg.zero_init_readout) or (
        cfg.zero_init_query and name.endswith("attn.q.weight")
    ):
        std = 0.0
    mult = 1.0
    if role == "embedding":
        mult = cfg.embed_mult
    elif role == "readout":
        mult = cfg.output_mult
    mult *= m**-rule.multiplier
    lr_width = m ** -getattr(rule, lr_column)
    wd = 0.0 if role == "vector" else cfg.weight_decay / lr_width
    return ParamPlan(
        name=name,
        role=role,
        shape=shape,
        fan_in=fan_in,
        fan_out=fan_out,
        width_mult=m,
        init_std=std,
        multiplier=mult,
        lr=cfg.lr * lr_width,
        weight_decay=wd,
        tied=False,
    )


def _replace(plan: ParamPlan, **changes) -> ParamPlan:
    return ParamPlan(**{**asdict(plan), **changes})


def attention_scale(cfg: TrainConfig) -> float:
    """Scale of q.k: attn_mult/sqrt(d_head), or attn_mult*sqrt(d_head0)/d_head (equal at the base)."""
    _, head_dim = cfg.resolved_heads()
    if cfg.effective_attn_scale == "sqrt":
        return cfg.attn_mult / math.sqrt(head_dim)
    _, base_head_dim = cfg.resolved_heads(cfg.effective_base_width)
    return cfg.attn_mult * math.sqrt(base_head_dim) / head_dim


def check_supported(cfg: TrainConfig) -> None:
    """Contradictions the rule table cannot honour, as one-line errors."""
    if cfg.tie_embeddings and cfg.zero_init_readout:
        raise ConfigError("zero_init_readout=true with tie_embeddings=true would zero the token embedding")
    if cfg.tie_embeddings:
        rules = RULES[cfg.parameterization]
        emb, out = rules["embedding"], rules["readout"]
        lr_col = "adam_lr" if cfg.optimizer == "adamw" else "sgd_lr"
        if _init_exponent(emb, cfg) != _init_exponent(out, cfg) or getattr(emb, lr_col) != getattr(
            out, lr_col
        ):
            raise ConfigError(
                f"tie_embeddings=true: parameterization {cfg.parameterization!r} with init={cfg.init!r} gives the "
                "embedding and the readout different init or LR rules; use init=const or untied embeddings"
            )


def param_seed(seed: int, name: str) -> int:
    """Each tensor draws from its own stream, so adding or zeroing one never changes another."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


@torch.no_grad()
def init_parameters(model: nn.Module, plans: list[ParamPlan], seed: int) -> None:
    params = dict(model.named_parameters())
    gains = model.gain_names()
    for plan in plans:
        if plan.name not in params:  # the tied readout row: same tensor as the embedding
            continue
        p = params[plan.name]
        if plan.role == "vector":
            p.fill_(1.0 if plan.name in gains else 0.0)
            continue
        if plan.init_std == 0.0:
            p.zero_()
            continue
        gen = torch.Generator().manual_seed(param_seed(seed, plan.name))
        p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * plan.init_std)


def set_multipliers(model: nn.Module, plans: list[ParamPlan], cfg: TrainConfig) -> None:
    for plan in plans:
        if plan.role == "vector":
            continue
        module = model.get_submodule(plan.name.rsplit(".", 1)[0])
        module.multiplier = plan.multiplier
    for block in model.blocks:
        block.attn.scale = attention_scale(cfg)


def base_shapes(cfg: TrainConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the base model (built on the meta device: no memory, no compute)."""
    from trainers.model import GPT

    base_width = cfg.effective_base_width
    n_heads, head_dim = cfg.resolved_heads(base_width)
    base_cfg = cfg.model_copy(update={"width": base_width, "n_heads": n_heads, "head_dim": head_dim})
    with torch.device("meta"):
        base = GPT(base_cfg, vocab_size)
    return {name: tuple(p.shape) for name, p in base.named_parameters()}


def build(cfg: TrainConfig, vocab_size: int) -> tuple[nn.Module, list[ParamPlan]]:
    """The GPT for `cfg`, initialised and with its forward multipliers set, plus its parameter plan."""
    from trainers.model import GPT

    check_supported(cfg)
    model = GPT(cfg, vocab_size)
    plans = plan_parameters(cfg, model, base_shapes(cfg, vocab_size))
    init_parameters(model, plans, cfg.seed)
    set_multipliers(model, plans, cfg)
    return model, plans
