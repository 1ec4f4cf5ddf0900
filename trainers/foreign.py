"""sweeper's parameterization rules on any PyTorch model: `trainers.parameterize(model, base=..., **keys)`.

The rules are the tables of `trainers.parameterization`, applied per tensor of a model sweeper did not
build. What a tensor gets depends on its role (inferred, or named by pattern) and on its width multiplier
m: the ratio of its fan-in to the same tensor's fan-in in the base model (or base shapes), as the `mup`
package defines it. Everything is kept in the plan (names to rules), never on tensors, so it survives
`torch.compile`, `state_dict` save and load, and sharding; the forward multipliers are forward hooks on
the modules that own the weights, so the user's layer classes stay as they are.

What is left to the model: the attention logit scale (muP's 1/d_head instead of 1/sqrt(d_head)) and
depth rules, which need to know the model's internals.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from trainers.config import ConfigError, TrainConfig, format_validation_error
from trainers.parameterization import (
    ParamPlan,
    Role,
    _plan_one,
    check_supported,
    fan_in_out,
    param_seed,
    width_rules,
)

ROLE_NAMES = ("embedding", "hidden", "readout", "vector")
# Keys of TrainConfig that say nothing about a foreign model's rules (its own shapes do).
SHAPE_KEYS = ("width", "depth", "head_dim", "n_heads", "mlp_ratio", "seq_len", "vocab_size", "base_width")


@dataclass
class Parameterization:
    """The plan for one model: `rows` (the table of `sweeper params`), `param_groups` for the optimizer,
    `init_()` to draw the init, and the forward hooks that apply the multipliers (`remove()` takes them
    off)."""

    config: TrainConfig
    plans: list[ParamPlan]
    model: nn.Module
    handles: list[Any] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [plan.as_row() for plan in self.plans]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """One group per tensor, with its own `lr`, `weight_decay` and (for Adam) `eps`; a tied readout
        row shares its tensor with the embedding, which carries it."""
        params = dict(self.model.named_parameters())
        groups = []
        for plan in self.plans:
            if plan.name not in params:
                continue
            group = {"params": [params[plan.name]], "lr": plan.lr, "weight_decay": plan.weight_decay}
            group["name"] = plan.name
            group["optimizer"] = plan.optimizer  # with optimizer muon: which of the two steps it
            if plan.optimizer == "adamw":
                group["eps"] = plan.eps
            groups.append(group)
        return groups

    def optimizer(self, fp32: bool = True) -> Any:
        """The optimizer the keys ask for, over `param_groups`: AdamW (or Adam-atan2), SGD, or for
        `optimizer="muon"` a `trainers.optim.OptimizerPair` of Muon (hidden matrices) and AdamW (the rest),
        whose `.optimizers` each take a torch LR scheduler. `fp32`: the model trains in float32 (Muon
        orthogonalises in float32 then; torch's own iteration is bf16)."""
        from trainers.optim import build_optimizer

        return build_optimizer(self.model, self.plans, self.config, fp32=fp32)

    @torch.no_grad()
    def init_(self, seed: int | None = None) -> None:
        """Draw every weight matrix from N(0, init_std^2) of its plan (each tensor its own seeded stream);
        vectors (biases, norm gains) keep the values the model gave them."""
        seed = self.config.seed if seed is None else seed
        params = dict(self.model.named_parameters())
        for plan in self.plans:
            if plan.role == "vector" or plan.name not in params:
                continue
            p = params[plan.name]
            if plan.init_std == 0.0:
                p.zero_()
                continue
            gen = torch.Generator().manual_seed(param_seed(seed, plan.name))
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * plan.init_std)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def parameterize(
    model: nn.Module,
    base: nn.Module | None = None,
    *,
    base_shapes: dict[str, Iterable[int]] | None = None,
    roles: dict[str, str] | None = None,
    apply_init: bool = False,
    seed: int | None = None,
    **keys: Any,
) -> Parameterization:
    """Apply a parameterization to `model`, relative to `base` (the same architecture at the base width;
    `base_shapes`, name -> shape, instead of a model; neither: `model` is its own base).

    `keys` are TrainConfig's parameterization keys (`parameterization`, `alignment`, `optimizer`, `lr`,
    `weight_decay`, `output_mult`, `embed_mult`, `init`, `init_std`, `gamma_*`, `eps_mode`, ...).
    `roles` maps name patterns (fnmatch, e.g. "lm_head.weight" or "*.wpe.weight") to a role, overriding
    the inference. With `apply_init=True` the weights are drawn from the plan's init stds (`init` is
    TrainConfig's key: const or fan_in).
    """
    shape_keys = sorted(set(keys) & set(SHAPE_KEYS))
    if shape_keys:
        raise ConfigError(
            f"parameterize: {', '.join(shape_keys)} come from the model's own shapes (and base_width from "
            "`base=` or `base_shapes=`); leave them out"
        )
    if keys.get("depth_scaling", "none") != "none":
        raise ConfigError(
            "parameterize: depth_scaling needs the model's residual branches; not supported here"
        )
    params = dict(model.named_parameters())
    if base is not None and base_shapes is not None:
        raise ConfigError("parameterize: give base= or base_shapes=, not both")
    shapes = {n: tuple(p.shape) for n, p in base.named_parameters()} if base is not None else None
    if base_shapes is not None:
        shapes = {n: tuple(s) for n, s in base_shapes.items()}
    shapes = shapes or {n: tuple(p.shape) for n, p in params.items()}
    missing = sorted(set(params) - set(shapes))
    if missing:
        raise ConfigError(
            f"parameterize: the base has no parameter {missing[0]!r}: is it the same architecture?"
        )

    layout = _layouts(model)
    found = infer_roles(model, roles or {})
    tied_readout = _tied_readout(model, params)
    keys.pop("tie_embeddings", None)  # read from the model: whether its output layer shares the table
    try:
        # The width keys are placeholders: every ratio comes from the two models' shapes.
        cfg = TrainConfig(**keys, width=128, base_width=128, tie_embeddings=tied_readout is not None)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "parameterize")) from None
    check_supported(cfg)
    rules = width_rules(cfg)
    plans = []
    for name, p in params.items():
        role = found[name]
        shape, base_shape = tuple(p.shape), shapes[name]
        if layout.get(name) == "in_out":  # transformers' Conv1D keeps (in, out); the rules read (out, in)
            shape, base_shape = shape[::-1], base_shape[::-1]
        plan = _plan_one(cfg, name, role, shape, base_shape, rules[role], False, False)
        plans.append(replace(plan, shape=tuple(p.shape)))
    if tied_readout is not None:
        emb_name, readout_name = tied_readout
        emb = next(p for p in plans if p.name == emb_name)
        mult = cfg.output_mult * emb.width_mult ** -rules["readout"].multiplier
        plans = [replace(p, tied=True) if p.name == emb_name else p for p in plans]
        fan_in, fan_out = fan_in_out("readout", (emb.shape[0], emb.shape[1]))
        plans.append(
            replace(
                emb,
                name=readout_name,
                role="readout",
                multiplier=mult,
                tied=True,
                fan_in=fan_in,
                fan_out=fan_out,
            )
        )
    result = Parameterization(cfg, plans, model)
    result.handles = _install_multipliers(model, plans)
    if apply_init:
        result.init_(seed)
    return result


def infer_roles(model: nn.Module, overrides: dict[str, str]) -> dict[str, Role]:
    """name -> role: embedding tables (nn.Embedding), the output projection (the model's
    `get_output_embeddings()`, else the one Linear whose outputs are the vocabulary), other matrices
    hidden, 1-D tensors vectors; `overrides` (pattern -> role) win. Ambiguity is one error naming the
    candidates and the key that settles it."""
    for pattern, role in overrides.items():
        if role not in ROLE_NAMES:
            raise ConfigError(
                f"parameterize: roles[{pattern!r}] = {role!r}; expected one of {', '.join(ROLE_NAMES)}"
            )
    params = dict(model.named_parameters())
    owners = _owners(model)
    roles: dict[str, Role] = {}
    for name, p in params.items():
        module = owners.get(name)
        if p.ndim < 2:
            roles[name] = "vector"
        elif isinstance(module, nn.Embedding):
            roles[name] = "embedding"
        else:
            roles[name] = "hidden"
    readouts = _readout_candidates(model, params, owners)
    overridden = {name for name in params if any(fnmatch.fnmatchcase(name, pat) for pat in overrides)}
    if len(readouts) > 1 and not (set(readouts) & overridden):
        raise ConfigError(
            f"parameterize: {len(readouts)} candidate output layers ({', '.join(readouts)}); name the readout "
            f"with roles={{{readouts[0]!r}: 'readout'}} (and the others 'hidden')"
        )
    for name in readouts[:1]:
        roles[name] = "readout"
    for name in params:
        for pattern, role in overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                roles[name] = role  # type: ignore[assignment]
    unmatched = [pat for pat in overrides if not any(fnmatch.fnmatchcase(n, pat) for n in params)]
    if unmatched:
        raise ConfigError(f"parameterize: roles pattern {unmatched[0]!r} matches no parameter of the model")
    return roles


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    owners = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            owners.setdefault(f"{module_name}.{param_name}" if module_name else param_name, module)
    return owners


def _layouts(model: nn.Module) -> dict[str, str]:
    """Weights stored (in, out) rather than PyTorch's (out, in): transformers' Conv1D (GPT-2)."""
    return {
        name: "in_out"
        for name, module in _owners(model).items()
        if type(module).__name__ == "Conv1D" and name.endswith(".weight")
    }


def _vocab_sizes(model: nn.Module) -> set[int]:
    return {m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)}


def _readout_candidates(model: nn.Module, params: dict[str, nn.Parameter], owners: dict) -> list[str]:
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if isinstance(output, nn.Linear):
        for name, p in params.items():
            if p is output.weight:
                # Tied to the embedding table: the readout is a row of its own (see _tied_readout).
                return [] if isinstance(owners.get(name), nn.Embedding) else [name]
        return []
    vocab = _vocab_sizes(model)
    return [
        name
        for name, p in params.items()
        if isinstance(owners.get(name), nn.Linear) and name.endswith("weight") and p.shape[0] in vocab
    ]


def _tied_readout(model: nn.Module, params: dict[str, nn.Parameter]) -> tuple[str, str] | None:
    """(embedding name, readout weight name) when the output layer shares the embedding's tensor."""
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if not isinstance(output, nn.Linear):
        return None
    owners = _owners(model)
    for name, p in params.items():
        if p is output.weight and isinstance(owners.get(name), nn.Embedding):
            readout = next(n for n, m in model.named_modules() if m is output)
            return name, f"{readout}.weight"
    return None


def _install_multipliers(model: nn.Module, plans: list[ParamPlan]) -> list[Any]:
    """A forward hook per module whose weight has a multiplier other than 1: y -> m (W x) + b."""
    modules = dict(model.named_modules())
    handles = []
    for plan in plans:
        if plan.role == "vector" or plan.multiplier == 1.0:
            continue
        module = modules[plan.name.rsplit(".", 1)[0]]
        handles.append(module.register_forward_hook(_scale_output(plan.multiplier)))
    return handles


def _scale_output(multiplier: float):
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):  # m (W x + b) - (m - 1) b = m W x + b
            return output * multiplier + bias * (1.0 - multiplier)
        return output * multiplier

    return hook


# --- the coordinate check, on a foreign model ----------------------------------------------------------

FOREIGN_KINDS = ("embedding", "hidden", "logits")


def causal_lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of a Hugging Face causal LM (it shifts the labels itself), or cross-entropy of logits."""
    out = model(input_ids=x, labels=x) if hasattr(model, "get_output_embeddings") else model(x)
    if hasattr(out, "loss") and out.loss is not None:
        return out.loss
    logits = out.logits if hasattr(out, "logits") else out
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def coord_check_model(
    make_model,
    widths: list[int],
    *,
    steps: int = 4,
    seeds: int = 2,
    batch_size: int = 8,
    seq_len: int = 32,
    corpus: str = "builtin",
    loss_fn=causal_lm_loss,
    tolerance: float | None = None,
    **keys: Any,
):
    """`trainers.coord_check` for any model: `make_model(width)` builds it (seeded by the caller or not:
    each width and seed is initialised from the plan with `apply_init`), the smallest width is the base.
    Per role of the modules that own planned weights (embedding, hidden, logits = the readout), the mean
    |output| per step is fitted against width in log2; a slope within the tolerance passes (shrinking
    logits pass as in the built-in check). Returns a `CoordCheckResult`."""
    import numpy as np

    from trainers.coord_check import TOLERANCE, CoordCheckResult, slope_of
    from trainers.data import Batches, load_corpus

    tolerance = TOLERANCE if tolerance is None else tolerance
    widths = sorted(widths)
    text = load_corpus(corpus, None)
    base = make_model(widths[0])
    sums: dict[tuple[str, int, int], float] = {}
    shrink_ok = False
    for width in widths:
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = make_model(width)
            p = parameterize(model, base=base, apply_init=True, seed=seed, **keys)
            rules = width_rules(p.config)["readout"]
            shrink_ok = rules.multiplier + (rules.init or 0.0) >= 1 and not p.config.zero_init_readout
            optimizer = _optimizer(p)
            batches = Batches(text, batch_size, seq_len, seed)
            for step in range(1, steps + 1):
                record: dict[str, list[float]] = {kind: [] for kind in FOREIGN_KINDS}
                handles = _record_outputs(model, p, record)
                x, y = batches.train_batch()
                loss = loss_fn(model, x, y)
                for handle in handles:
                    handle.remove()
                for kind, values in record.items():
                    if values:
                        key = (kind, step, width)
                        sums[key] = sums.get(key, 0.0) + float(np.mean(values)) / seeds
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            p.remove()
    kinds = [k for k in FOREIGN_KINDS if all((k, 1, w) in sums for w in widths)]
    rows = [
        {"module": k, "step": s, "width": w, "l1": sums[(k, s, w)]}
        for k in kinds
        for s in range(1, steps + 1)
        for w in widths
    ]
    slopes = []
    for kind in kinds:
        for step in range(1, steps + 1):
            slope = slope_of(widths, [sums[(kind, step, w)] for w in widths])
            low = -0.5 - tolerance if kind == "logits" and shrink_ok else -tolerance
            ok = bool(np.isfinite(slope)) and low <= slope <= tolerance
            slopes.append({"module": kind, "step": step, "slope": slope, "ok": ok})
    return CoordCheckResult(
        passed=all(s["ok"] for s in slopes), rows=rows, slopes=slopes, tolerance=tolerance
    )


def _optimizer(p: Parameterization) -> Any:
    return p.optimizer()


def _record_outputs(model: nn.Module, p: Parameterization, record: dict[str, list[float]]) -> list[Any]:
    """Hooks on the modules owning planned weights, registered after the multiplier hooks (so they see
    the scaled outputs), keyed by role."""
    modules = dict(model.named_modules())
    kind_of = {"embedding": "embedding", "hidden": "hidden", "readout": "logits"}
    handles, seen = [], set()
    for plan in p.plans:
        kind = kind_of.get(plan.role)
        owner = plan.name.rsplit(".", 1)[0]
        if kind is None or (owner, kind) in seen or owner not in modules:
            continue
        seen.add((owner, kind))

        def hook(_module, _inputs, output, kind=kind) -> None:
            tensor = output[0] if isinstance(output, tuple) else output
            record[kind].append(tensor.detach().float().abs().mean().item())

        handles.append(modules[owner].register_forward_hook(hook))
    return handles
