"""TrainConfig: every knob of one training run, with its default, in one place.

The key names are a contract shared by study YAML files, `--set key=value`, and the results store's
columns (see docs/architecture.md). Add keys freely; never rename one.
"""

from __future__ import annotations

import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainers.errors import ConfigError  # re-exported: where the rest of the code imports it from

DEFAULT_HEAD_DIM = 32
DEFAULT_STEPS = 300

# --- limits: what the trainer supports, generously; past them a trial fails on any machine ------------
# One model on one device (no model or data parallelism, no gradient accumulation), so these caps sit well
# above anything a single accelerator can hold; they exist to refuse typos (width 1048576) at validation
# instead of failing in every worker.
MAX_WIDTH = 65536  # d_model (and head_dim, n_heads, base_width): 2**16; the widest LLMs use ~2**14
MAX_DEPTH = 1024  # blocks (and base_depth); the deepest LLMs use ~128
MAX_MLP_RATIO = 64.0  # GPT uses 4
MAX_SEQ_LEN = 2**20  # a 1M-token context; positions are a learned table of seq_len x width
MAX_BATCH_SIZE = 2**20
# Tokens per optimizer step (batch_size x seq_len). The largest LLM batches are ~4M tokens; without
# gradient accumulation one step's fp32 logits alone are tokens x vocab x 4 bytes (64 GiB at 2**24 tokens
# and the byte vocabulary).
MAX_TOKENS_PER_STEP = 2**24
MAX_EVAL_TOKENS = 2**28  # eval_batches x batch_size x seq_len: the validation batches are kept in memory
MAX_VOCAB = 2**20  # tokens are uint16 (ids < 65536), so more than 65536 only adds unused rows
# Parameters (an estimate from the shapes): 10^11 parameters need 1.6 TB for fp32 weights, gradients and
# Adam's two moments, ~10x the largest single accelerator.
MAX_PARAMS = 10**11
MAX_STEPS = 10**9  # optimizer steps (also eval_interval, warmup, diverge_patience); >= ~12 days at 1 ms/step
MAX_TOKENS = 10**15  # training tokens (also warmup_tokens); the largest LLM runs see ~10^13
# Seeds: torch takes < 2**64 and the store's columns are int64, but NumPy's legacy seeding and Optuna's
# samplers take < 2**32; one bound for every seed keeps all of them valid.
MAX_SEED = 2**32 - 1
# Learning rates, multipliers, init stds, eps, weight decay, gradient clipping: any finite positive value
# trains (a huge one diverges, which a sweep reports), except that the per-layer learning rate (lr x
# gamma x width ratios up to 2**16) must stay a float32, or the optimizer fails; 10^6 keeps every product
# far below float32's 3.4e38.
MAX_FACTOR = 1e6
MAX_THREADS = 4096
MAX_EVAL_BATCHES = 10**5
MAX_CORPUS_CHARS = 4096  # PATH_MAX on Linux
BYTE_VOCAB = 256  # byte-level text corpora (builtin, text files and folders) need every byte value

Beta = Annotated[float, Field(ge=0, lt=1)]


# --- showing a value the user wrote, bounded ---------------------------------------------------------
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


def shown(value: Any) -> str:
    """`repr(value)` cut to a few dozen characters: an error message never prints a whole input (which may
    be a megabyte of text, or a YAML alias bomb)."""
    try:
        return _REPR.repr(value)
    except Exception:  # e.g. an int too long for str(); reprlib itself is bounded
        return f"<{type(value).__name__}>"


# --- YAML: the loader of config files, --set values and study files ---------------------------------
# Bytes of a config or study file. Those in studies/ have 1-2 kB; a file 100x that is surely not one, and
# reading 256 KiB of YAML takes seconds at worst, where 1 MiB of deeply nested lists takes a minute.
MAX_YAML_BYTES = 256 << 10
MAX_CONFIG_BYTES = MAX_YAML_BYTES
YAML_MAX_NODES = 200_000  # values in one document with every alias expanded (more than 256 KiB can hold)
# libyaml's parser (when PyYAML has it) is ~5x faster than PyYAML's and refuses nesting over 1000 levels;
# the pure-Python one scans nested flow collections in quadratic time and recurses in the composer.
_YAML_BASE: type = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class YamlLoader(_YAML_BASE):
    """PyYAML's safe loader (on libyaml where available), with YAML 1.2's floats and without crashes.

    YAML 1.1 (and so plain PyYAML) reads `1e-3`, `1E5` and `-2e-4` as strings: it wants a dot and a signed
    exponent (`1.0e-3`). Here every number with an exponent is a float. A scalar PyYAML cannot build (an
    integer of more than 4300 digits, a date such as 2024-13-45) is a YAML error, not a ValueError.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as err:
            # "Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; use ..."
            reason = str(err).split(";")[0].split(": value has")[0][:80]
            problem = f"cannot read the value {shown(getattr(node, 'value', ''))}: {reason}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def check_node_budget(root: yaml.Node, limit: int = YAML_MAX_NODES) -> None:
    """Refuse a document whose aliases expand to more than `limit` values (the "billion laughs": nine lists
    of nine aliases of the one before), or that contains itself: it would eat memory and time in every
    step after loading. Counts each node once (memoized), without expanding anything."""
    sizes: dict[int, int] = {}
    pending: set[int] = set()  # nodes whose subtree is being counted: their ancestors in the walk
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if done:
            pending.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > limit:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"its aliases expand to more than {limit} values; write the values out instead",
                    node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in pending:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a node that contains it (a recursive value)", node.start_mark
            )
        pending.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def load_yaml(text: str) -> Any:
    """One YAML document with `YamlLoader`, its size checked; raises yaml.YAMLError."""
    loader = YamlLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        check_node_budget(root)
        return loader.construct_document(root)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    finally:
        loader.dispose()


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    # --- model ---
    width: int = Field(128, ge=1, le=MAX_WIDTH, description="d_model")
    depth: int = Field(2, ge=1, le=MAX_DEPTH, description="number of transformer blocks")
    head_dim: int | None = Field(
        None, ge=1, le=MAX_WIDTH, description="attention head dim; default 32 unless n_heads is set"
    )
    n_heads: int | None = Field(
        None, ge=1, le=MAX_WIDTH, description="number of heads; derived from width/head_dim if absent"
    )
    mlp_ratio: float = Field(4.0, gt=0, le=MAX_MLP_RATIO, description="MLP hidden size = mlp_ratio * width")
    seq_len: int = Field(64, ge=1, le=MAX_SEQ_LEN, description="context length in tokens")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_gain: bool = Field(True, description="learnable gain in every norm")
    tie_embeddings: bool = Field(False, description="readout shares the token embedding matrix")
    bias: bool = Field(False, description="biases in linear layers and LayerNorm")
    vocab_size: int | None = Field(
        None,
        ge=2,
        le=MAX_VOCAB,
        description="256 for byte-level text corpora (which need >= 256); inferred from .bin token files",
    )

    # --- parameterization ---
    parameterization: Literal["sp", "mup", "ntk", "mfp"] = "sp"
    alignment: Literal["full", "none"] | None = Field(
        None,
        description="Everett et al. per-layer LR exponents for this alignment; unset: the classic form "
        "(sp: one global LR; mup: the mup package's form). ntk and mfp default to full",
    )
    base_width: int | None = Field(
        None, ge=1, le=MAX_WIDTH, description="width of the base (proxy) model; default: width"
    )
    base_depth: int | None = Field(
        None, ge=1, le=MAX_DEPTH, description="depth of the base model (for depth_scaling)"
    )
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
    gamma_embed: float = Field(
        1.0, gt=0, le=MAX_FACTOR, description="per-layer LR constant of the embeddings"
    )
    gamma_hidden: float = Field(
        1.0, gt=0, le=MAX_FACTOR, description="per-layer LR constant of the hidden matrices"
    )
    gamma_readout: float = Field(1.0, gt=0, le=MAX_FACTOR, description="per-layer LR constant of the readout")
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
    output_mult: float = Field(
        1.0, gt=0, le=MAX_FACTOR, description="readout (logit) multiplier at the base width"
    )
    attn_mult: float = Field(
        1.0, gt=0, le=MAX_FACTOR, description="attention-logit multiplier at the base width"
    )
    embed_mult: float = Field(1.0, gt=0, le=MAX_FACTOR, description="embedding-output multiplier")
    init: Literal["const", "fan_in"] = Field(
        "const", description="const: GPT-2 style init_std; fan_in: std 1/sqrt(fan_in) at the base width"
    )
    init_std: float = Field(
        0.02, gt=0, le=MAX_FACTOR, description="std of every weight matrix at the base width (init: const)"
    )
    init_mult: float = Field(
        1.0, gt=0, le=MAX_FACTOR, description="multiplies every initial weight std (both init modes)"
    )
    zero_init_query: bool = False
    zero_init_readout: bool = False
    attn_scale: Literal["sqrt", "linear"] | None = Field(
        None,
        description="attention logits / sqrt(d_head) or / d_head; default: linear for mup and mfp, else sqrt",
    )

    # --- optimization ---
    optimizer: Literal["adamw", "sgd", "muon"] = Field(
        "adamw",
        description="muon: torch.optim.Muon on the hidden matrices, AdamW on embeddings, readout and vectors",
    )
    muon_rule: Literal["original", "match_rms_adamw", "spectral", "none"] = Field(
        "original",
        description="Muon's LR factor by matrix shape: sqrt(max(1, fan_out/fan_in)) (original), "
        "0.2 sqrt(max(fan_out, fan_in)) (match_rms_adamw), sqrt(fan_out/fan_in) (spectral), 1 (none)",
    )
    muon_momentum: float = Field(0.95, ge=0, lt=1, description="Muon's (Nesterov) momentum")
    adam_lr_ratio: float = Field(
        1.0,
        gt=0,
        le=MAX_FACTOR,
        description="with optimizer muon: the AdamW groups' base LR is lr x this (their width rules apply)",
    )
    lr: float = Field(3e-3, gt=0, le=MAX_FACTOR, description="peak learning rate of the base model")
    betas: tuple[Beta, Beta] = Field((0.9, 0.95), description="Adam betas, each in [0, 1)")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    eps: float = Field(1e-8, ge=0, le=MAX_FACTOR)
    weight_decay: float = Field(0.0, ge=0, le=MAX_FACTOR)
    wd_timescale: float | None = Field(
        None,
        gt=0,
        le=MAX_FACTOR,
        description="weight decay as AdamW's timescale 1/(lr wd), a fraction of the run: each decayed "
        "tensor gets wd = 1 / (its peak lr x wd_timescale x steps) (Wang and Aitchison 2025)",
    )
    grad_clip: float = Field(
        1.0, ge=0, le=MAX_FACTOR, description="clip the global grad norm to this; 0 = off"
    )
    warmup: int | None = Field(None, ge=0, le=MAX_STEPS, description="warmup in steps")
    warmup_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS, description="warmup in tokens seen")
    warmup_frac: float | None = Field(None, ge=0, le=1, description="warmup as a fraction of the run")
    schedule: Literal["constant", "linear", "cosine", "wsd"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR / peak LR for linear, cosine and wsd")
    decay_frac: float = Field(0.2, gt=0, le=1, description="wsd: fraction of the run spent decaying")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH_SIZE)
    steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="training steps (default 300 unless tokens is set)"
    )
    tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="training tokens; steps = ceil(tokens / tokens per step)"
    )

    # --- data and run ---
    corpus: str = Field(
        "builtin",
        max_length=MAX_CORPUS_CHARS,
        description="builtin, a text file or folder, a .bin token file",
    )
    eval_interval: int = Field(50, ge=1, le=MAX_STEPS)
    eval_batches: int = Field(8, ge=1, le=MAX_EVAL_BATCHES)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="fp32, bf16 autocast, or auto: bf16 where it is fast (CUDA with bf16; a CPU whose bf16 "
        "matmul measures faster than fp32), else fp32",
    )
    compile: bool = False
    threads: int = Field(
        0, ge=0, le=MAX_THREADS, description="torch CPU threads; 0 = leave as the process has it"
    )
    diverge_factor: float = Field(
        2.0, gt=1, description="diverged when train loss stays above this x the initial loss"
    )
    diverge_patience: int = Field(
        10, ge=1, le=MAX_STEPS, description="consecutive steps above diverge_factor to call it"
    )

    @field_validator("corpus")
    @classmethod
    def _corpus_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty corpus: give 'builtin', a text file or folder, or a .bin token file")
        if "\x00" in value:
            raise ValueError("a corpus path cannot contain a NUL character")
        return value

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
        if self.optimizer == "muon" and self.alignment is not None:
            raise ValueError(
                "optimizer muon uses the classic tables (alignment unset): Everett et al.'s exponents are "
                "for Adam and SGD"
            )
        if self.optimizer == "muon" and self.eps_mode == "atan2":
            raise ValueError("eps_mode 'atan2' replaces Adam; with optimizer muon use constant or scaled")
        if self.wd_timescale is not None and self.weight_decay > 0:
            raise ValueError(
                "set weight_decay or wd_timescale, not both (wd_timescale derives each tensor's weight decay)"
            )
        self._check_size()
        return self

    def _check_size(self) -> None:
        """Refuse a model or a step no machine can hold (see the MAX_* limits at the top)."""
        for what, width in (("width", self.width), ("base_width", self.base_width)):
            if width is not None and round(self.mlp_ratio * width) < 1:
                raise ValueError(
                    f"mlp_ratio {self.mlp_ratio:g} x {what} {width} rounds to an MLP of 0 units; "
                    f"mlp_ratio must be >= {0.5 / width:.3g} at {what} {width}"
                )
        if self.tokens_per_step > MAX_TOKENS_PER_STEP:
            raise ValueError(
                f"batch_size {self.batch_size} x seq_len {self.seq_len} = {self.tokens_per_step} tokens per "
                f"step; at most {MAX_TOKENS_PER_STEP} (2**24) fit one device without gradient accumulation"
            )
        eval_tokens = self.eval_batches * self.tokens_per_step
        if eval_tokens > MAX_EVAL_TOKENS:
            raise ValueError(
                f"eval_batches {self.eval_batches} x {self.tokens_per_step} tokens per batch = {eval_tokens} "
                f"validation tokens, kept in memory; at most {MAX_EVAL_TOKENS} (2**28)"
            )
        if self.total_steps > MAX_STEPS:
            raise ValueError(
                f"tokens {self.tokens} at {self.tokens_per_step} tokens per step is {self.total_steps} "
                f"steps; at most {MAX_STEPS}"
            )
        params = self.estimated_params()
        if params > MAX_PARAMS:
            raise ValueError(
                f"width {self.width}, depth {self.depth}, mlp_ratio {self.mlp_ratio:g} and seq_len "
                f"{self.seq_len} make a model of about {params:.3g} parameters; at most {MAX_PARAMS:.0e} "
                "(one device holds the weights, gradients and Adam state)"
            )

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

    def estimated_params(self, vocab_size: int | None = None) -> int:
        """The model's parameter count from its shapes (vocab_size: the config's, else the byte vocabulary)."""
        width, vocab = self.width, vocab_size or self.vocab_size or BYTE_VOCAB
        hidden = round(self.mlp_ratio * width)
        embeddings = (vocab + self.seq_len) * width
        block = 4 * width * width + 2 * width * hidden + 4 * width  # attention, MLP, two norm gains
        if self.bias:
            block += 4 * width + hidden + width + 2 * width
        readout = 0 if self.tie_embeddings else vocab * width
        return embeddings + self.depth * block + 2 * width + readout

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
    """One line: where, which key, the value given (shortened), and what is allowed."""
    first = err.errors(include_url=False)[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {shown(key)}; known keys: {', '.join(TrainConfig.model_fields)}"
    if not key:  # model-level check
        return f"{source}: {msg.removeprefix('Value error, ')}"
    value = first.get("input")
    return f"{source}: {key}={shown(value)}: {msg.removeprefix('Value error, ')}"


def parse_set_options(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings (values parsed as YAML scalars/lists, `1e-3` a float) into a dict."""
    updates: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {shown(pair)}: expected key=value")
        try:
            updates[key] = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            updates[key] = raw
    return updates


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping of TrainConfig keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: more than {MAX_CONFIG_BYTES} bytes (256 KiB); not a config file")
    try:
        data = load_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if len(problem) > 200:  # a problem may quote the input (an unknown tag, say)
            problem = problem[:197] + "..."
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    bad = next((k for k in data if not isinstance(k, str)), None)
    if bad is not None:
        raise ConfigError(f"{path}: key {shown(bad)} is not a name; expected config keys such as width, lr")
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


def key_rows() -> list[dict[str, Any]]:
    """Every TrainConfig key with its default, what it allows and what it does, read from the schema
    itself (so `sweeper keys` never drifts from the code)."""
    rows = []
    for name, field in TrainConfig.model_fields.items():
        rows.append(
            {
                "key": name,
                "default": field.get_default(call_default_factory=True),
                "allowed": _allowed(field),
                "description": field.description or "",
            }
        )
    return rows


def _allowed(field: Any) -> str:
    """The field's values as a reader wants them: its literals, or its type with its bounds."""
    annotation = field.annotation
    args = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    literals = [v for a in args if get_origin(a) is Literal for v in get_args(a)]
    if literals:
        text = " | ".join(str(v) for v in literals)
    else:
        text = " | ".join(getattr(a, "__name__", str(a)).replace("typing.", "") for a in args)
    bounds = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    if type(None) in get_args(annotation):
        text += " | null"
    return text + (f" ({', '.join(bounds)})" if bounds else "")
