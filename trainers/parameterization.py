"""Parameterizations as rule tables: parameter role -> init std, forward multiplier, LR, weight decay, eps.

Every rule is base-relative (docs/parameterization-sources.md, section 1). A parameter whose width
multiplier is m = n / n_base gets

    init std   = base_std   * m^-b
    multiplier = base_mult  * m^-a
    LR         = lr * gamma * m^-c          (c from the optimizer's column)
    Adam eps   = eps * m^-g                  (eps_mode: scaled; g = the gradient's width exponent)

so at the base width (m = 1) every parameterization is the same base model. m is computed per parameter
from the base model's shapes, as the `mup` package does: the ratio of the last dimension (fan_in of a
linear map, the width of an embedding row or of a vector).

Depth (DEPTH_RULES): parameters inside the residual blocks, with m_L = depth / base_depth, get the
residual-branch multiplier m_L^-alpha and the LR and eps factors of their row.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from trainers.config import ConfigError, TrainConfig

Role = Literal["embedding", "hidden", "readout", "vector"]
ROLES: tuple[Role, ...] = ("embedding", "hidden", "readout", "vector")

# b = None: the init std follows the `init` key: it scales like 1/sqrt(fan_in) (b = 1/2) under
# `init: fan_in` (SP as TP5 and Everett et al. define it) and stays constant (b = 0) under
# `init: const` (SP as GPT-2 and nanoGPT define it).
FOLLOWS_INIT = None


@dataclass(frozen=True)
class WidthRule:
    """Width exponents of one role for one optimizer: std ~ m^-init, multiplier ~ m^-multiplier,
    LR ~ m^-lr, gradient entries ~ m^-grad (what eps_mode: scaled follows)."""

    init: float | None
    multiplier: float
    lr: float
    grad: float


# --- the classic forms (alignment unset) ----------------------------------------------------------------
# role: (init b, multiplier a, Adam c, SGD c, grad g)
# fmt: off
CLASSIC: dict[str, dict[Role, tuple]] = {
    # Standard parameterization: one global LR; only the (fan-in) init depends on width.
    "sp": {
        "embedding": (0,            0, 0, 0,  0.5),
        "hidden":    (FOLLOWS_INIT, 0, 0, 0,  0.5),
        "readout":   (FOLLOWS_INIT, 0, 0, 0,  0),
        "vector":    (0,            0, 0, 0,  0.5),
    },
    # muP as TP5 Table 8, the `mup` package and nanoGPT-mup: hidden init 1/sqrt(fan_in) and Adam LR / m;
    # readout multiplier output_mult / m with a width-independent init and LR; SGD (MuSGD): vector-like
    # LR x m. Every gradient entry is Theta(1/m) in this form.
    "mup": {
        "embedding": (0,   0, 0, -1, 1),
        "hidden":    (0.5, 0, 1,  0, 1),
        "readout":   (0,   1, 0, -1, 1),
        "vector":    (0,   0, 0, -1, 1),
    },
}

# --- Everett et al. 2024 (alignment: full | none) -------------------------------------------------------
# (a, b) per layer, the paper's four parameterizations: docs/parameterization-sources.md 5.1.
EVERETT_AB: dict[str, dict[Role, tuple[float, float]]] = {
    "sp":  {"embedding": (0, 0),     "hidden": (0, 0.5), "readout": (0, 0.5)},
    "ntk": {"embedding": (0, 0),     "hidden": (0.5, 0), "readout": (0.5, 0)},
    "mup": {"embedding": (-0.5, 0.5), "hidden": (0, 0.5), "readout": (0.5, 0.5)},
    "mfp": {"embedding": (0, 0),     "hidden": (0.5, 0), "readout": (1, 0)},
}
# LR exponents c for (embedding, hidden, readout), Everett et al. 2024. SGD is implemented for full
# alignment only. Which cells are the paper's and which derived: docs/parameterization-sources.md 5.2.
EVERETT_C: dict[tuple[str, str, str], tuple[float, float, float]] = {
    ("sp",  "adamw", "full"): (0,   1,   1),    ("sp",  "adamw", "none"): (0,   0.5, 0.5),
    ("ntk", "adamw", "full"): (0,   0.5, 0.5),  ("ntk", "adamw", "none"): (0,   0,   0),
    ("mup", "adamw", "full"): (0.5, 1,   0.5),  ("mup", "adamw", "none"): (0.5, 0.5, 0),
    ("mfp", "adamw", "full"): (0,   0.5, 0),    ("mfp", "adamw", "none"): (0,   0,   -0.5),
    ("sp",  "sgd",   "full"): (-0.5, 0.5, 1),
    ("ntk", "sgd",   "full"): (-0.5, -0.5, 0),
    ("mup", "sgd",   "full"): (0,   0,   0),
    ("mfp", "sgd",   "full"): (-1,  -1,  -1),
}
# Gradient-entry exponents g at init for (embedding, hidden, readout), derived from EVERETT_AB
# (docs/parameterization-sources.md 6).
EVERETT_G: dict[str, tuple[float, float, float]] = {
    "sp": (0.5, 0.5, 0), "ntk": (0.5, 1, 0.5), "mup": (0.5, 1, 0.5), "mfp": (1, 1.5, 1),
}

# --- depth ------------------------------------------------------------------------------------------------
# Block parameters with m_L = depth / base_depth: branch multiplier m_L^-alpha, and
# Adam LR x m_L^(alpha - 1) (depth-muP alpha = 1/2: TP6; CompleteP alpha = 1: no LR factor),
# SGD LR x m_L^(2 alpha - 1) (derived), eps x m_L^-alpha under eps_mode: scaled (CompleteP).
DEPTH_RULES = {
    "adamw": {"lr": lambda alpha: alpha - 1, "eps": lambda alpha: -alpha},
    "sgd":   {"lr": lambda alpha: 2 * alpha - 1, "eps": lambda alpha: 0.0},
}
DEPTH_RULES["muon"] = DEPTH_RULES["adamw"]  # no depth rule of Muon's own is established: Adam's stands in

# --- Muon (optimizer: muon) -------------------------------------------------------------------------------
# The hidden matrices go to torch.optim.Muon, every other tensor to AdamW with the Adam column above.
# Muon's update is orthogonalised (every singular value about 1), so its width dependence is carried by
# a factor of the matrix shape, fan_out x fan_in; the parameterization's own hidden LR exponent is
# dropped for them (muP's Adam 1/m on top of a shape rule would scale twice: NVIDIA/Megatron-LM#3715).
# Sources: docs/parameterization-sources.md, section 8.
MUON_RULES = {
    "original":        lambda fan_out, fan_in: math.sqrt(max(1.0, fan_out / fan_in)),  # Keller Jordan
    "match_rms_adamw": lambda fan_out, fan_in: 0.2 * math.sqrt(max(fan_out, fan_in)),  # Moonlight
    "spectral":        lambda fan_out, fan_in: math.sqrt(fan_out / fan_in),  # Bernstein et al.
    "none":            lambda fan_out, fan_in: 1.0,
}
# fmt: on


def uses_muon(cfg: TrainConfig, role: Role, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is one of Muon's: a hidden matrix, with optimizer muon."""
    return cfg.optimizer == "muon" and role == "hidden" and len(shape) == 2


EMBED_LR_EXPONENTS = {"constant": 0.0, "inv_sqrt": 0.5, "inv": 1.0, "width": -1.0}
READOUT_MULT_EXPONENTS = {"inv_width": 1.0, "inv_sqrt_width": 0.5, "inv_sqrt_width_ablation": 0.5}


def width_rules(cfg: TrainConfig) -> dict[Role, WidthRule]:
    """The four role rules that `cfg` selects, with its embedding-LR and readout variants applied."""
    if cfg.alignment is None:
        column = {"adamw": 2, "sgd": 3, "muon": 2}[cfg.optimizer]
        rules = {
            role: WidthRule(init=row[0], multiplier=row[1], lr=row[column], grad=row[4])
            for role, row in CLASSIC[cfg.parameterization].items()
        }
    else:
        rules = _everett_rules(cfg.parameterization, cfg.optimizer, cfg.alignment)
    if cfg.embed_lr_scaling != "table":
        rules["embedding"] = replace(rules["embedding"], lr=EMBED_LR_EXPONENTS[cfg.embed_lr_scaling])
    if cfg.readout_scaling != "table":
        rules["readout"] = _readout_variant(rules["readout"], cfg)
    return rules


def _everett_rules(parameterization: str, optimizer: str, alignment: str) -> dict[Role, WidthRule]:
    c = dict(
        zip(
            ("embedding", "hidden", "readout"),
            EVERETT_C[(parameterization, optimizer, alignment)],
            strict=True,
        )
    )
    g = dict(zip(("embedding", "hidden", "readout"), EVERETT_G[parameterization], strict=True))
    rules: dict[Role, WidthRule] = {}
    for role, (a, b) in EVERETT_AB[parameterization].items():
        rules[role] = WidthRule(init=b, multiplier=a, lr=c[role], grad=g[role])
    # Biases and gains: the embedding's rule moved to multiplier 1 by abc-symmetry (a -> 0, c -> c + a for
    # Adam, c + 2a for SGD); their init (0 or 1) does not scale.
    emb = rules["embedding"]
    shift = emb.multiplier * (1 if optimizer == "adamw" else 2)
    rules["vector"] = WidthRule(init=0, multiplier=0, lr=emb.lr + shift, grad=emb.grad - emb.multiplier)
    return rules


def _readout_variant(rule: WidthRule, cfg: TrainConfig) -> WidthRule:
    """Move the readout multiplier to m^-a' by abc-symmetry (init and LR follow), or, for the ablation,
    change the multiplier alone."""
    target = READOUT_MULT_EXPONENTS[cfg.readout_scaling]
    if cfg.readout_scaling == "inv_sqrt_width_ablation":
        return replace(rule, multiplier=target)
    t = target - rule.multiplier
    lr_shift = t if cfg.optimizer == "adamw" else 2 * t
    # W = m^-a w: raising a by t makes the stored weights m^t larger and their gradients m^-t smaller.
    return WidthRule(init=rule.init - t, multiplier=target, lr=rule.lr - lr_shift, grad=rule.grad + t)


@dataclass(frozen=True)
class ParamPlan:
    """What one parameter tensor gets. The first eleven fields are the rows of `sweeper params`."""

    name: str
    role: Role
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    width_mult: float
    init_std: float
    multiplier: float  # forward multiplier, including the residual-branch multiplier in blocks
    lr: float  # effective peak LR
    weight_decay: float  # effective coupled weight decay (PyTorch's lr * wd per step)
    tied: bool
    eps: float = 0.0  # Adam eps of this parameter's group
    depth_mult: float = 1.0  # m_L for parameters inside blocks, else 1
    optimizer: str = "adamw"  # which optimizer steps it: adamw, sgd or muon

    TABLE_KEYS = (
        "name",
        "role",
        "shape",
        "fan_in",
        "fan_out",
        "width_mult",
        "init_std",
        "multiplier",
        "lr",
        "weight_decay",
        "tied",
        "optimizer",
    )

    def as_row(self) -> dict:
        row = {key: getattr(self, key) for key in self.TABLE_KEYS}
        row["shape"] = list(self.shape)
        return row


def fan_in_out(role: Role, shape: tuple[int, ...]) -> tuple[int, int]:
    if role == "embedding":  # a lookup table is a linear map from a one-hot of `rows` entries
        return shape[0], shape[1]
    if len(shape) == 1:  # a bias or a gain: the linear map from the constant 1
        return 1, shape[0]
    return shape[1], shape[0]  # nn.Linear weight: [fan_out, fan_in]


def _init_exponent(rule: WidthRule, cfg: TrainConfig) -> float:
    if rule.init is FOLLOWS_INIT:
        return 0.5 if cfg.init == "fan_in" else 0.0
    return rule.init


def _base_std(cfg: TrainConfig, base_fan_in: int, residual_out: bool) -> float:
    if cfg.init == "fan_in":
        return cfg.init_mult / math.sqrt(base_fan_in)
    std = cfg.init_std
    if residual_out and cfg.residual_init != "none":
        std /= math.sqrt(2 * residual_init_depth(cfg))
    return std * cfg.init_mult


def residual_init_depth(cfg: TrainConfig) -> int:
    """The depth in GPT-2's 1/sqrt(2 depth) init of the residual projections (`residual_init`).

    `gpt2` uses the model's depth, except under a depth scaling, whose branch multiplier takes over the
    job: there it is frozen at the base depth. A no-depth-rule baseline with `gpt2` therefore carries
    depth-muP's effective init (0.02/sqrt(2L) x 1 equals 0.02/sqrt(2 L_base) x (L/L_base)^-1/2); compare
    depth rules with `base_depth` or `none` on every variant, so that only the rule differs.
    """
    if cfg.residual_init == "base_depth" or cfg.depth_scaling != "none":
        return cfg.effective_base_depth
    return cfg.depth


def plan_parameters(
    cfg: TrainConfig, model: nn.Module, base_shapes: dict[str, tuple[int, ...]]
) -> list[ParamPlan]:
    """One ParamPlan per parameter tensor of `model` (a tied readout is listed as a row of its own)."""
    rules = width_rules(cfg)
    roles: dict[str, Role] = model.parameter_roles()
    residual_outs: set[str] = model.residual_output_names()
    plans = [
        _plan_one(
            cfg,
            name,
            roles[name],
            tuple(p.shape),
            base_shapes[name],
            rules[roles[name]],
            name in residual_outs,
            name.startswith("blocks."),
        )
        for name, p in model.named_parameters()
    ]
    if cfg.tie_embeddings:
        emb = next(p for p in plans if p.name == model.TIED_EMBEDDING)
        mult = cfg.output_mult * emb.width_mult ** -rules["readout"].multiplier
        plans = [replace(p, tied=True) if p.name == emb.name else p for p in plans]
        plans.append(
            replace(
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
    rule: WidthRule,
    residual_out: bool,
    in_block: bool,
) -> ParamPlan:
    m = shape[-1] / base_shape[-1]
    m_depth = cfg.depth / cfg.effective_base_depth if in_block and cfg.depth_scaling != "none" else 1.0
    alpha = cfg.effective_depth_alpha
    depth_rule = DEPTH_RULES[cfg.optimizer]
    fan_in, fan_out = fan_in_out(role, shape)
    base_fan_in, _ = fan_in_out(role, base_shape)

    if role == "vector":
        std = 0.0  # biases start at 0, gains at 1 (see init_parameters)
    else:
        std = _base_std(cfg, base_fan_in, residual_out) * m ** -_init_exponent(rule, cfg)
    if (role == "readout" and cfg.zero_init_readout) or (
        cfg.zero_init_query and name.endswith("attn.q.weight")
    ):
        std = 0.0

    mult = {"embedding": cfg.embed_mult, "readout": cfg.output_mult}.get(role, 1.0) * m**-rule.multiplier
    if residual_out:
        mult *= m_depth**-alpha

    gamma = {"embedding": cfg.gamma_embed, "hidden": cfg.gamma_hidden, "readout": cfg.gamma_readout}.get(
        role, 1.0
    )
    muon = uses_muon(cfg, role, shape)
    if muon:  # the shape rule carries the width dependence (see MUON_RULES)
        width_lr_scale = MUON_RULES[cfg.muon_rule](shape[0], shape[1])
        base_lr = cfg.lr
    else:
        width_lr_scale = m**-rule.lr
        base_lr = cfg.lr * (cfg.adam_lr_ratio if cfg.optimizer == "muon" else 1.0)
    lr_scale = width_lr_scale * m_depth ** depth_rule["lr"](alpha)
    lr = base_lr * gamma * lr_scale

    if role != "vector" and cfg.wd_timescale is not None:
        # AdamW's timescale 1/(lr wd) in steps, held at a fraction of the run (Wang and Aitchison 2025).
        wd = 1.0 / (lr * cfg.wd_timescale * cfg.total_steps)
    elif role == "vector" or cfg.weight_decay == 0:
        wd = 0.0
    elif cfg.weight_decay_mode == "coupled":
        wd = cfg.weight_decay
    elif cfg.weight_decay_mode == "coupled_scaled":
        # lambda x m_N (mup package, CompleteP Table 1): lr * wd is width-free; no depth term.
        wd = cfg.weight_decay / width_lr_scale
    else:  # independent: lr_t * wd_eff = wd * schedule(t), whatever the LR
        wd = cfg.weight_decay / lr

    eps = cfg.eps
    if cfg.eps_mode == "scaled":
        eps = cfg.eps * m**-rule.grad * m_depth ** depth_rule["eps"](alpha)
    elif cfg.eps_mode == "atan2":
        eps = 0.0

    return ParamPlan(
        name=name,
        role=role,
        shape=shape,
        fan_in=fan_in,
        fan_out=fan_out,
        width_mult=m,
        init_std=std,
        multiplier=mult,
        lr=lr,
        weight_decay=wd,
        tied=False,
        eps=0.0 if muon else eps,
        depth_mult=m_depth,
        optimizer="muon" if muon else ("sgd" if cfg.optimizer == "sgd" else "adamw"),
    )


def attention_scale(cfg: TrainConfig) -> float:
    """Scale of q.k: attn_mult/sqrt(d_head), or attn_mult*sqrt(d_head0)/d_head (equal at the base)."""
    _, head_dim = cfg.resolved_heads()
    if cfg.effective_attn_scale == "sqrt":
        return cfg.attn_mult / math.sqrt(head_dim)
    _, base_head_dim = cfg.resolved_heads(cfg.effective_base_width)
    return cfg.attn_mult / math.sqrt(base_head_dim) * (base_head_dim / head_dim)  # exactly SP's at the base


def residual_multiplier(cfg: TrainConfig) -> float:
    if cfg.depth_scaling == "none":
        return 1.0
    return (cfg.depth / cfg.effective_base_depth) ** -cfg.effective_depth_alpha


def check_supported(cfg: TrainConfig) -> None:
    """Contradictions the rule tables cannot honour, as one-line errors."""
    if cfg.tie_embeddings and cfg.zero_init_readout:
        raise ConfigError("zero_init_readout=true with tie_embeddings=true would zero the token embedding")
    if cfg.tie_embeddings:
        rules = width_rules(cfg)
        emb, out = rules["embedding"], rules["readout"]
        if _init_exponent(emb, cfg) != _init_exponent(out, cfg) or emb.lr != out.lr:
            raise ConfigError(
                f"tie_embeddings=true: parameterization {cfg.parameterization!r}"
                + (f" (alignment {cfg.alignment!r})" if cfg.alignment else "")
                + f" with init={cfg.init!r} gives the embedding and the readout different init or LR rules; "
                "one tensor cannot follow both: untie the embeddings"
                + (" or use init=const" if cfg.init == "fan_in" and cfg.alignment is None else "")
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
        elif plan.init_std == 0.0:
            p.zero_()
        else:
            gen = torch.Generator().manual_seed(param_seed(seed, plan.name))
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * plan.init_std)


def set_multipliers(model: nn.Module, plans: list[ParamPlan], cfg: TrainConfig) -> None:
    """Width multipliers on the modules that own each weight; depth multiplier on the residual branches."""
    residual = residual_multiplier(cfg)
    residual_outs = model.residual_output_names()
    for plan in plans:
        if plan.role == "vector":
            continue
        module = model.get_submodule(plan.name.rsplit(".", 1)[0])
        # The table shows a residual projection's multiplier with its branch multiplier; the block applies
        # that one to the whole branch (bias included), so the module keeps only the width part.
        module.multiplier = plan.multiplier / residual if plan.name in residual_outs else plan.multiplier
    for block in model.blocks:
        block.attn.scale = attention_scale(cfg)
        block.residual_mult = residual


def base_shapes(cfg: TrainConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the base model (built on the meta device: no memory, no compute)."""
    from trainers.model import GPT

    base_width = cfg.effective_base_width
    n_heads, head_dim = cfg.resolved_heads(base_width)
    base_cfg = cfg.model_copy(update={"width": base_width, "n_heads": n_heads, "head_dim": head_dim})
    with torch.device("meta"):
        base = GPT(base_cfg, vocab_size)
    return {name: tuple(p.shape) for name, p in base.named_parameters()}


def build(
    cfg: TrainConfig, vocab_size: int, device: str | torch.device | None = None
) -> tuple[nn.Module, list[ParamPlan]]:
    """The GPT for `cfg`, initialised and with its forward multipliers set, plus its parameter plan.

    With device="meta" nothing is allocated or initialised: the plan alone (for `sweeper params`).
    """
    from trainers.model import GPT

    check_supported(cfg)
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            model = GPT(cfg, vocab_size)
        plans = plan_parameters(cfg, model, base_shapes(cfg, vocab_size))
        set_multipliers(model, plans, cfg)
        return model, plans
    model = GPT(cfg, vocab_size)
    plans = plan_parameters(cfg, model, base_shapes(cfg, vocab_size))
    init_parameters(model, plans, cfg.seed)
    set_multipliers(model, plans, cfg)
    return model, plans
