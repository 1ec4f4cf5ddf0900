"""TrainConfig: every knob of one training run, with its default, in one place.

The key names are a contract shared by study YAML files, `--set key=value`, and the results store's
columns (see docs/architecture.md). Add keys freely; never rename one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_HEAD_DIM = 32
DEFAULT_STEPS = 300


class ConfigError(ValueError):
    """A user-facing configuration error: one line naming the key, the value and what is allowed."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # --- model ---
    width: int = Field(128, ge=1, description="d_model")
    depth: int = Field(2, ge=1, description="number of transformer blocks")
    head_dim: int | None = Field(
        None, ge=1, description="attention head dim; default 32 unless n_heads is set"
    )
    n_heads: int | None = Field(
        None, ge=1, description="number of heads; derived from width/head_dim if absent"
    )
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden size = mlp_ratio * width")
    seq_len: int = Field(64, ge=1, description="context length in tokens")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_gain: bool = Field(True, description="learnable gain in every norm")
    tie_embeddings: bool = Field(False, description="readout shares the token embedding matrix")
    bias: bool = Field(False, description="biases in linear layers and LayerNorm")
    vocab_size: int | None = Field(
        None, ge=2, description="256 for byte-level text corpora; inferred from .bin token files"
    )

    # --- parameterization ---
    parameterization: Literal["sp", "mup", "ntk", "mfp"] = "sp"
    alignment: Literal["full", "none"] | None = Field(
        None,
        description="Everett et al. per-layer LR exponents for this alignment; unset: the classic form "
        "(sp: one global LR; mup: the mup package's form). ntk and mfp default to full",
    )
    base_width: int | None = Field(None, ge=1, description="width of the base (proxy) model; default: width")
    base_depth: int | None = Field(None, ge=1, description="depth of the base model (for depth_scaling)")
    depth_scaling: Literal["none", "depth_mup", "completep"] = Field(
        "none", description="residual branches x (depth/base_depth)^-alpha: depth_mup alpha 1/2, completep 1"
    )
    depth_alpha: float | None = Field(None, ge=0.5, le=1, description="override the depth scaling's alpha")
    residual_init: Literal["gpt2", "base_depth", "none"] = Field(
        "gpt2",
        description="GPT-2's 1/sqrt(2 depth) init factor of the residual projections: gpt2 (at the model's "
        "depth; frozen at base_depth under a depth_scaling), base_depth (frozen at base_depth always), none "
        "(no factor: CompleteP's reference code, and muP as CompleteP's Table 1 has it)",
    )
    gamma_embed: float = Field(1.0, gt=0, description="per-layer LR constant of the embeddings")
    gamma_hidden: float = Field(1.0, gt=0, description="per-layer LR constant of the hidden matrices")
    gamma_readout: float = Field(1.0, gt=0, description="per-layer LR constant of the readout")
    embed_lr_scaling: Literal["table", "constant", "inv_sqrt", "inv", "width"] = Field(
        "table",
        description="embedding LR x m^0, m^-1/2, m^-1 or m^+1 instead of the table's rule "
        "(width: Kalra and Barkeshli's SP fix)",
    )
    readout_scaling: Literal["table", "inv_width", "inv_sqrt_width", "inv_sqrt_width_ablation"] = Field(
        "table",
        description="mup readout: multiplier 1/m with constant init and LR, or 1/sqrt(m) with init and LR "
        "x m^-1/2 (equivalent); inv_sqrt_width_ablation changes the multiplier alone (not muP)",
    )
    weight_decay_mode: Literal["coupled", "coupled_scaled", "independent"] = Field(
        "coupled_scaled",
        description="coupled: AdamW's lr*wd as given; coupled_scaled: wd x m where the LR is / m, so lr*wd "
        "is width-free (mup package; CompleteP's lambda x m_N, no depth term); independent: per-step "
        "decay wd x schedule, free of the LR",
    )
    eps_mode: Literal["constant", "scaled", "atan2"] = Field(
        "constant",
        description="Adam eps: constant; scaled with each layer's gradient scale (x m^-g, x depth^-alpha "
        "in blocks); atan2: Adam-atan2, no eps",
    )
    output_mult: float = Field(1.0, gt=0, description="readout (logit) multiplier at the base width")
    attn_mult: float = Field(1.0, gt=0, description="attention-logit multiplier at the base width")
    embed_mult: float = Field(1.0, gt=0, description="embedding-output multiplier")
    init: Literal["const", "fan_in"] = Field(
        "const", description="const: GPT-2 style init_std; fan_in: std 1/sqrt(fan_in) at the base width"
    )
    init_std: float = Field(
        0.02, gt=0, description="std of every weight matrix at the base width (init: const)"
    )
    init_mult: float = Field(1.0, gt=0, description="multiplies every initial weight std (both init modes)")
    zero_init_query: bool = False
    zero_init_readout: bool = False
    attn_scale: Literal["sqrt", "linear"] | None = Field(
        None,
        description="attention logits / sqrt(d_head) or / d_head; default: linear for mup and mfp, else sqrt",
    )

    # --- optimization ---
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0, description="peak learning rate of the base model")
    betas: tuple[float, float] = (0.9, 0.95)
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    eps: float = Field(1e-8, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="clip the global grad norm to this; 0 = off")
    warmup: int | None = Field(None, ge=0, description="warmup in steps")
    warmup_tokens: int | None = Field(None, ge=0, description="warmup in tokens seen")
    warmup_frac: float | None = Field(None, ge=0, le=1, description="warmup as a fraction of the run")
    schedule: Literal["constant", "linear", "cosine", "wsd"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR / peak LR for linear, cosine and wsd")
    decay_frac: float = Field(0.2, gt=0, le=1, description="wsd: fraction of the run spent decaying")
    batch_size: int = Field(16, ge=1)
    steps: int | None = Field(None, ge=1, description="training steps (default 300 unless tokens is set)")
    tokens: int | None = Field(
        None, ge=1, description="training tokens; steps = ceil(tokens / tokens per step)"
    )

    # --- data and run ---
    corpus: str = Field("builtin", description="builtin, a text file or folder, a .bin token file")
    eval_interval: int = Field(50, ge=1)
    eval_batches: int = Field(8, ge=1)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="fp32, bf16 autocast, or auto: bf16 where it is fast (CUDA with bf16; a CPU whose bf16 "
        "matmul measures faster than fp32), else fp32",
    )
    compile: bool = False
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = leave as the process has it")
    diverge_factor: float = Field(
        2.0, gt=1, description="diverged when train loss stays above this x the initial loss"
    )
    diverge_patience: int = Field(10, ge=1, description="consecutive steps above diverge_factor to call it")

    @model_validator(mode="before")
    @classmethod
    def _fill_alignment(cls, values: Any) -> Any:
        # NTK and mean-field exist only in Everett et al.'s per-layer form: default to full alignment.
        everett_only = isinstance(values, dict) and values.get("parameterization") in ("ntk", "mfp")
        if everett_only and values.get("alignment") is None:
            values = {**values, "alignment": "full"}
        return values

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        warmups = [k for k in ("warmup", "warmup_tokens", "warmup_frac") if getattr(self, k) is not None]
        if len(warmups) > 1:
            raise ValueError(f"set only one of warmup, warmup_tokens, warmup_frac (got {', '.join(warmups)})")
        if self.steps is not None and self.tokens is not None:
            raise ValueError("set only one of steps, tokens")
        self.resolved_heads()  # raises on a head layout that does not fit the width
        if self.base_width is not None:
            try:
                self.resolved_heads(self.base_width)
            except ValueError as err:
                raise ValueError(f"base_width={self.base_width}: {err}") from None
        width_relative = self.parameterization != "sp" or self.alignment is not None
        if width_relative and self.base_width is None:
            what = f"parameterization {self.parameterization!r}"
            if self.alignment is not None:
                what += f" with alignment {self.alignment!r}"
            raise ValueError(f"{what} is width-relative: set base_width")
        if self.depth_scaling != "none" and self.base_depth is None:
            raise ValueError(f"depth_scaling {self.depth_scaling!r} is depth-relative: set base_depth")
        if self.residual_init == "base_depth" and self.base_depth is None:
            raise ValueError("residual_init 'base_depth' freezes the init at the base depth: set base_depth")
        if self.depth_alpha is not None and self.depth_scaling == "none":
            raise ValueError("depth_alpha needs depth_scaling depth_mup or completep")
        if self.readout_scaling != "table" and self.parameterization != "mup":
            raise ValueError(f"readout_scaling {self.readout_scaling!r} applies to parameterization mup only")
        if self.optimizer == "sgd" and self.alignment == "none":
            raise ValueError(
                "alignment 'none' with optimizer sgd is not implemented (only Adam's no-alignment "
                "exponents are); use alignment full"
            )
        if self.optimizer == "sgd" and self.eps_mode != "constant":
            raise ValueError(f"eps_mode {self.eps_mode!r} is for adamw; SGD has no eps")
        return self

    # --- derived values (never stored as keys of their own) ---
    def resolved_heads(self, width: int | None = None) -> tuple[int, int]:
        """(n_heads, head_dim) at `width` (default: this config's width).

        With `n_heads` set, width grows through the head dimension; otherwise through the number of
        heads at a fixed `head_dim`.
        """
        width = self.width if width is None else width
        if self.n_heads is not None and self.head_dim is not None:
            if width == self.width and self.n_heads * self.head_dim != width:
                raise ValueError(
                    f"n_heads * head_dim = {self.n_heads * self.head_dim} must equal width {width}"
                )
            if width != self.width:  # base model: keep the head dimension, derive the count
                return self._heads_from_head_dim(width, self.head_dim, "head_dim")
            return self.n_heads, self.head_dim
        if self.n_heads is not None:
            if width % self.n_heads:
                raise ValueError(f"n_heads {self.n_heads} must divide width {width}")
            return self.n_heads, width // self.n_heads
        return self._heads_from_head_dim(width, self.head_dim or DEFAULT_HEAD_DIM, "head_dim")

    @staticmethod
    def _heads_from_head_dim(width: int, head_dim: int, key: str) -> tuple[int, int]:
        if width % head_dim:
            raise ValueError(f"{key} {head_dim} must divide width {width}")
        return width // head_dim, head_dim

    @property
    def effective_base_width(self) -> int:
        return self.width if self.base_width is None else self.base_width

    @property
    def effective_base_depth(self) -> int:
        return self.depth if self.base_depth is None else self.base_depth

    @property
    def effective_depth_alpha(self) -> float:
        """Exponent of the residual-branch multiplier (0: no depth scaling)."""
        if self.depth_scaling == "none":
            return 0.0
        if self.depth_alpha is not None:
            return self.depth_alpha
        return 0.5 if self.depth_scaling == "depth_mup" else 1.0

    @property
    def effective_attn_scale(self) -> str:
        if self.attn_scale is not None:
            return self.attn_scale
        return "linear" if self.parameterization in ("mup", "mfp") else "sqrt"

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        if self.tokens is not None:
            return math.ceil(self.tokens / self.tokens_per_step)
        return DEFAULT_STEPS if self.steps is None else self.steps

    @property
    def warmup_steps(self) -> int:
        if self.warmup_tokens is not None:
            return math.ceil(self.warmup_tokens / self.tokens_per_step)
        if self.warmup_frac is not None:
            return round(self.warmup_frac * self.total_steps)
        return self.warmup or 0

    # --- construction with user-facing errors ---
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source)) from None

    def with_updates(self, **updates: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.model_dump(exclude_unset=True), **updates})


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: where, which key, the value given, and what is allowed."""
    first = err.errors(include_url=False)[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}; known keys: {', '.join(TrainConfig.model_fields)}"
    if not key:  # model-level check
        return f"{source}: {msg.removeprefix('Value error, ')}"
    value = first.get("input")
    return f"{source}: {key}={value!r}: {msg.removeprefix('Value error, ')}"


def parse_set_options(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings (values parsed as YAML scalars/lists) into a dict."""
    updates: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        try:
            updates[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            updates[key] = raw
    return updates


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping of TrainConfig keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def build_config(
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> TrainConfig:
    """TrainConfig from a YAML file and --set overrides; `defaults` fill keys that neither sets."""
    values: dict[str, Any] = dict(defaults or {})
    source = "config"
    if config_file is not None:
        values.update(load_config_file(config_file))
        source = str(config_file)
    overrides = parse_set_options(sets or [])
    values.update(overrides)
    if overrides:
        source = f"{source} + --set" if config_file is not None else "--set"
    return TrainConfig.from_dict(values, source=source)
