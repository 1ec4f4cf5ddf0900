"""Study spec: a YAML file -> a validated `Study` -> the trial configs it runs.

Every user error is a `StudyError` of one line, `path:LINE: field.path: what is wrong`, where LINE comes
from the YAML node the error points at. No torch, Ray or W&B here: the CLI imports this for --help.
"""

from __future__ import annotations

import itertools
import math
import re
import types
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sweeper.errors import StudyError
from sweeper.identity import definition_fingerprint, trial_id
from sweeper.objective import Objective
from sweeper.store import RUN_COLUMNS
from sweeper.user_config import UserConfig
from sweeper.user_trainer import ENTRY, KEY, UserTrainerSpec
from sweeper.yaml_lines import Loc, dotted, line_of, parse_yaml
from trainers.config import MAX_SEED, MAX_YAML_BYTES, TrainConfig, format_validation_error, shown

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME = 100  # characters of a study or variant name: each names a folder or file of the store
PLAIN_NAME_RULE = (
    f"letters, digits, '_', '.', '-', starting with a letter or digit, no '..', at most {MAX_NAME} characters"
)
BUILTIN_METRICS = ("val_loss", "train_loss")  # what the built-in trainer reports
SWEEP_KINDS = ("log2_grid", "values", "loguniform", "uniform", "choice")
MAX_GRID = 1000  # values in one log2_grid; more is almost surely a typo in step
# Trials a study may plan unless its `max_trials` says more: counted without expanding them, before any
# trial config is built (a 10^7-trial grid would otherwise be validated trial by trial, for minutes).
DEFAULT_MAX_TRIALS = 100_000
MAX_STUDY_BYTES = MAX_YAML_BYTES  # 256 KiB: those in studies/ have 1-2 kB
# Optuna seeds each (variant, scale point) with search.seed * 1000 + its index, and its samplers take
# seeds below 2**32.
MAX_SEARCH_SEED = 4_000_000


def _invalid(msg: str, *where: str | int) -> PydanticCustomError:
    # `where` extends the validator's own location down to the offending node, for the line number.
    return PydanticCustomError("study", "{msg}", {"msg": msg, "where": where})


def _plain_name(value: str, what: str, *where: str | int) -> str:
    if len(value) > MAX_NAME or not PLAIN_NAME.fullmatch(value) or ".." in value:
        raise _invalid(f"{what} {shown(value)} is not a plain name ({PLAIN_NAME_RULE})", *where)
    return value


@dataclass(frozen=True)
class TrainerKeys:
    """Which config keys a study's trainer takes: TrainConfig's (the built-in GPT), or a user's trainer's
    (`trainer_keys`, or any identifier when it lists none)."""

    custom: bool = False
    allowed: tuple[str, ...] | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> TrainerKeys:
        """From a Study's fields validated so far (a validator's `info.data`) or from a Study."""
        custom = bool(data.get("trainer_entry") or data.get("trainer_command"))
        allowed = data.get("trainer_keys")
        return cls(custom, tuple(allowed) if custom and allowed is not None else None)

    def problem(self, key: Any, what: str) -> str | None:
        """Why `key` cannot be set in `what` (None when it can)."""
        if key == "seed":
            return f"'seed' cannot be set in {what}: list seeds in the top-level 'seeds'"
        if not self.custom:
            if key not in TrainConfig.model_fields:
                return f"unknown trainer key {shown(key)}{_hint(key, TrainConfig.model_fields)}"
            return None
        if not isinstance(key, str) or not KEY.fullmatch(key):
            return f"trainer key {shown(key)} is not an identifier (letters, digits and '_')"
        if key in RUN_COLUMNS:
            return (
                f"trainer key {key!r} is also a column the store keeps for every trial; give it another name"
            )
        if self.allowed is not None and key not in self.allowed:
            return (
                f"unknown trainer key {shown(key)}{_hint(key, self.allowed)}; trainer_keys allows "
                f"{', '.join(self.allowed)}"
            )
        return None

    def check(self, keys: list[Any], what: str, *where: str | int) -> None:
        """Each key must be one the trainer takes, other than seed; an error points at `where` + the key."""
        for key in keys:
            problem = self.problem(key, what)
            if problem:
                raise _invalid(problem, *where, key)

    def number_kind(self, key: str) -> type | None:
        """int or float when the built-in trainer's key takes a number (or null), else None (a user's
        trainer says nothing of its keys' types)."""
        field = None if self.custom else TrainConfig.model_fields.get(key)
        if field is None:
            return None
        kinds = {a for a in (get_args(field.annotation) or (field.annotation,)) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 and kinds <= {int, float} else None


def _hint(key: Any, known: Any) -> str:
    close = get_close_matches(str(key), list(known), n=1) if len(str(key)) < 100 else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _not_a_number(keys: TrainerKeys, key: str, value: Any) -> str | None:
    """Why a value listed for a numeric trainer key is not a number (TrainConfig would coerce '0.001' and
    true, but the analysis reads the values as written), or None."""
    if keys.number_kind(key) is None or not isinstance(value, str | bool):
        return None
    if isinstance(value, bool):
        return f"{value} is a boolean, but {key} takes a number"
    return f"{shown(value)} is a string, but {key} takes a number: write it unquoted (e.g. 0.001 or 1e-3)"


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a YAML value, equal exactly when the values are equal (lists and mappings
    included), so that duplicates and positions are found in one pass."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((_freeze(k), _freeze(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


def _first_duplicate(items: list[Any]) -> int | None:
    seen: set[Any] = set()
    for i, item in enumerate(items):
        key = _freeze(item)
        if key in seen:
            return i
        seen.add(key)
    return None


def _shown(x: float) -> str:
    return f"{x:g}"


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={shown(v)}" for k, v in values.items())


def _context(variant: str, point: dict[str, Any], params: dict[str, Any]) -> str:
    return ", ".join(x for x in (f"variant {variant}", _describe(point), _describe(params)) if x)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SweepSpec(_Spec):
    log2_grid: tuple[float, float] | None = None
    step: float = Field(1.0, gt=0)
    values: list[Any] | None = Field(None, min_length=1)
    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    choice: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        given = [k for k in SWEEP_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            got = " and ".join(given) if given else "none"
            raise _invalid(f"give exactly one of {', '.join(SWEEP_KINDS)} (got {got})")
        kind = given[0]
        if "step" in self.model_fields_set and kind != "log2_grid":
            raise _invalid(f"step applies to log2_grid only, not {kind}", "step")
        if kind in ("log2_grid", "loguniform", "uniform"):
            lo, hi = getattr(self, kind)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise _invalid(f"bounds must be finite numbers, got [{_shown(lo)}, {_shown(hi)}]", kind)
            if kind == "log2_grid":
                if lo > hi:
                    raise _invalid(f"lo {_shown(lo)} > hi {_shown(hi)}", kind)
                if max(abs(lo), abs(hi)) > 1000:
                    raise _invalid("log2 bounds must lie within [-1000, 1000]", kind)
                if self._grid_size() > MAX_GRID:
                    raise _invalid(
                        f"step {_shown(self.step)} gives {self._grid_size()} grid values; at most {MAX_GRID}",
                        kind,
                    )
            elif kind == "loguniform" and not 0 < lo < hi:
                raise _invalid(f"needs 0 < lo < hi, got [{_shown(lo)}, {_shown(hi)}]", kind)
            elif kind == "uniform" and not lo < hi:
                raise _invalid(f"needs lo < hi, got [{_shown(lo)}, {_shown(hi)}]", kind)
        else:
            items = getattr(self, kind)
            dup = _first_duplicate(items)
            if dup is not None:
                raise _invalid(f"duplicate value {shown(items[dup])}", kind, dup)
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SWEEP_KINDS if getattr(self, k) is not None)

    @property
    def enumerable(self) -> bool:
        return self.kind in ("log2_grid", "values", "choice")

    def size(self) -> int:
        """How many values an enumerable spec has (without listing them)."""
        if self.log2_grid is not None:
            return self._grid_size()
        return len(self.values if self.values is not None else self.choice or [])

    def listed(self) -> list[Any]:
        """The values written out in the study (values or choice), else []."""
        return self.values if self.values is not None else self.choice or []

    def bounds(self) -> list[float]:
        """The ends of a range (loguniform, uniform): values a sampler may return, like the grid's."""
        spec = self.loguniform or self.uniform
        return list(spec) if spec is not None else []

    def _grid_size(self) -> int:
        lo, hi = self.log2_grid or (0.0, 0.0)
        span = (hi - lo) / self.step
        return math.floor(span + 1e-9) + 1 if span < 1e15 else 10**15  # a subnormal step: "too many"

    def grid(self) -> list[Any]:
        """Every value of an enumerable spec: 2**k for k = lo, lo+step, ..., hi; or the listed values."""
        if self.log2_grid is not None:
            lo = self.log2_grid[0]
            # Rounding the exponent keeps integer and half-octave steps exact powers of two.
            return [2.0 ** round(lo + i * self.step, 12) for i in range(self._grid_size())]
        if self.values is not None:
            return list(self.values)
        if self.choice is not None:
            return list(self.choice)
        raise StudyError(f"{self.kind} is not enumerable: use log2_grid or values for grid search")

    def log2_bounds(self) -> tuple[float, float] | None:
        return None if self.log2_grid is None else (self.log2_grid[0], self.log2_grid[1])

    def probe(self) -> Any:
        """A representative value to validate configs with: the first grid value or the midpoint."""
        if self.enumerable:
            return self.grid()[0]
        if self.uniform is not None:
            return (self.uniform[0] + self.uniform[1]) / 2
        assert self.loguniform is not None
        return math.sqrt(self.loguniform[0] * self.loguniform[1])


class SearchSpec(_Spec):
    method: Literal["grid", "optuna", "adaptive"] = "grid"
    num_samples: int = Field(8, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEARCH_SEED)
    sampler: Literal["tpe", "random"] = "tpe"
    # Adaptive only: seeds beyond `seeds` that the search may add at one swept value, where the basin is
    # flat or noisy (0: never, the plain line search).
    extra_seeds: int = Field(2, ge=0, le=100)
    # Two settings are within seed noise when their means differ by less than noise_z standard errors.
    # Used by the adaptive search and by the analysis (best, verify) of every study.
    noise_z: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SearchSpec:
        if "extra_seeds" in self.model_fields_set and self.method != "adaptive":
            raise _invalid(
                f"extra_seeds applies to adaptive search only; {self.method} runs every seed in seeds",
                "extra_seeds",
            )
        return self


ObjectiveSpec = Objective  # the `objective:` block: its rules live with it, in sweeper.objective


class EarlyStopSpec(_Spec):
    method: Literal["asha"] = "asha"
    grace_steps: int = Field(ge=1)
    reduction_factor: float = Field(3.0, gt=1)


class ResourcesSpec(_Spec):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class WandbSpec(_Spec):
    project: str = "sweeper"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] = "offline"


class InheritSpec(_Spec):
    study: str
    keys: list[str] = Field(min_length=1)
    variant: str | None = None

    @field_validator("study")
    @classmethod
    def _study_name(cls, value: str) -> str:
        return _plain_name(value, "study name")

    @field_validator("variant")
    @classmethod
    def _variant_name(cls, value: str | None) -> str | None:
        return value if value is None else _plain_name(value, "variant name")

    @field_validator("keys")
    @classmethod
    def _distinct_keys(cls, keys: list[str]) -> list[str]:
        dup = _first_duplicate(keys)
        if dup is not None:
            raise _invalid(f"duplicate key {shown(keys[dup])}", dup)
        return keys  # which keys the trainer takes is checked with the whole study (Study._cross_checks)


def group_key(point: dict[str, Any]) -> tuple:
    """A scale point as a hashable key: trials of one (variant, group_key) are compared with each other."""
    return tuple(sorted(point.items()))


@dataclass(frozen=True)
class PlannedTrial:
    """One trial a study runs: where it sits in the study and the resolved config it trains."""

    trial_id: str
    variant: str
    scale: dict
    params: dict
    seed: int
    config: TrainConfig | UserConfig


class Study(_Spec):
    name: str
    description: str = ""
    # A user's trainer instead of the built-in GPT (sweeper.user_trainer has the contract): a function
    # `module:function`, or a command template. Declared before `trainer` so its validators see them.
    trainer_entry: str | None = None
    trainer_command: str | None = None
    trainer_keys: list[str] | None = Field(None, min_length=1)
    trainer: dict[str, Any] = {}
    variants: dict[str, dict[str, Any]] = {"default": {}}
    scale: dict[str, list[Any]] = {}
    sweep: dict[str, SweepSpec] = {}
    search: SearchSpec = SearchSpec()
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field([0], min_length=1)
    objective: ObjectiveSpec = ObjectiveSpec()
    early_stop: EarlyStopSpec | None = None
    resources: ResourcesSpec = ResourcesSpec()
    max_concurrent: int | None = Field(None, ge=1)
    wandb: WandbSpec = WandbSpec()
    inherit: InheritSpec | None = None
    preflight: Literal["coord_check"] | None = None
    # The most trials the study may plan (default DEFAULT_MAX_TRIALS): a guard against a typo that makes
    # a grid of millions.
    max_trials: int | None = Field(None, ge=1)

    # Where the study came from: not YAML keys.
    _source: str = PrivateAttr("study")
    _root: yaml.Node | None = PrivateAttr(None)
    # Per variant, the values taken from another study (`inherit:`), bound once by `with_inherited`.
    _inherited: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)
    # Positions of the values listed in scale axes and sweeps, for error locations (see `_position`).
    _positions: dict[Loc, tuple[list[Any], dict[Any, int]]] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _plain_name(value, "study name")

    @field_validator("trainer_entry")
    @classmethod
    def _entry(cls, entry: str | None) -> str | None:
        if entry is not None and not ENTRY.fullmatch(entry):
            raise _invalid(f"{shown(entry)} is not of the form module:function (e.g. mypackage.train:train)")
        return entry

    @field_validator("trainer_command")
    @classmethod
    def _command(cls, command: str | None) -> str | None:
        if command is None:
            return None
        from sweeper.command_trainer import split_template

        try:
            split_template(command)
        except ValueError as err:
            raise _invalid(f"cannot split the command into arguments: {err}") from None
        return command

    @field_validator("trainer_keys")
    @classmethod
    def _trainer_keys(cls, keys: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if keys is None:
            return None
        if not (info.data.get("trainer_entry") or info.data.get("trainer_command")):
            raise _invalid(
                "trainer_keys lists the keys of your own trainer: give trainer_entry (or trainer_command) too"
            )
        dup = _first_duplicate(keys)
        if dup is not None:
            raise _invalid(f"duplicate key {shown(keys[dup])}", dup)
        check = TrainerKeys(custom=True)
        for i, key in enumerate(keys):
            problem = None if key == "seed" else check.problem(key, "trainer_keys")
            if problem:
                raise _invalid(problem, i)
        return keys

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, trainer: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        TrainerKeys.of(info.data).check(list(trainer), "trainer")
        return trainer

    @field_validator("variants", mode="before")
    @classmethod
    def _null_patches(cls, variants: Any) -> Any:
        # `sp:` with nothing after it is YAML null: read it as an empty patch.
        if isinstance(variants, dict):
            return {k: {} if v is None else v for k, v in variants.items()}
        return variants

    @field_validator("variants")
    @classmethod
    def _variants(
        cls, variants: dict[str, dict[str, Any]], info: ValidationInfo
    ) -> dict[str, dict[str, Any]]:
        if not variants:
            raise _invalid("give at least one variant (name: {patch of trainer keys})")
        keys = TrainerKeys.of(info.data)
        for name, patch in variants.items():
            _plain_name(name, "variant name", name)
            keys.check(list(patch), f"variants.{name}", name)
        return variants

    @field_validator("scale")
    @classmethod
    def _scale(cls, scale: dict[str, list[Any]], info: ValidationInfo) -> dict[str, list[Any]]:
        keys = TrainerKeys.of(info.data)
        keys.check(list(scale), "scale")
        for axis, values in scale.items():
            if not values:
                raise _invalid(f"empty scale axis {axis!r}: give at least one value", axis)
            dup = _first_duplicate(values)
            if dup is not None:
                raise _invalid(f"duplicate value {shown(values[dup])}", axis, dup)
            for i, value in enumerate(values):
                problem = _not_a_number(keys, axis, value)
                if problem:
                    raise _invalid(problem, axis, i)
        return scale

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, sweep: dict[str, SweepSpec], info: ValidationInfo) -> dict[str, SweepSpec]:
        if not sweep:
            raise _invalid("empty sweep: leave it out, or give at least one key")
        keys = TrainerKeys.of(info.data)
        keys.check(list(sweep), "sweep")
        for key, spec in sweep.items():
            for i, value in enumerate(spec.listed()):
                problem = _not_a_number(keys, key, value)
                if problem:
                    raise _invalid(problem, key, spec.kind, i)
        return sweep

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        dup = _first_duplicate(seeds)
        if dup is not None:
            raise _invalid(f"duplicate seed {seeds[dup]}", dup)
        return seeds

    @model_validator(mode="after")
    def _cross_checks(self) -> Study:
        self._check_trainer()
        for key, spec in self.sweep.items():
            if key in self.scale:
                raise _invalid(f"{key!r} is both a scale axis and swept: pick one", "sweep", key)
            if self.search.method == "grid" and not spec.enumerable:
                raise _invalid(
                    f"{spec.kind} is not enumerable: use log2_grid or values for grid search "
                    "(or search.method optuna)",
                    "sweep",
                    key,
                    spec.kind,
                )
        if self.search.method == "adaptive":
            if len(self.sweep) != 1:
                raise _invalid(
                    f"adaptive search sweeps exactly one key, got {len(self.sweep)} ({', '.join(self.sweep)})",
                    "search",
                    "method",
                )
            key, spec = next(iter(self.sweep.items()))
            if spec.log2_grid is None:
                raise _invalid(f"adaptive search needs a log2_grid sweep, got {spec.kind}", "sweep", key)
        if self.search.method == "optuna":
            if not self.sweep:
                raise _invalid("optuna search needs at least one key in sweep", "search", "method")
            for key, spec in self.sweep.items():
                if self.trainer_keys_schema.number_kind(key) is int and not spec.listed():
                    raise _invalid(
                        f"{key} takes whole numbers, but optuna samples a {spec.kind} sweep as a continuous "
                        "range: list the values to try (values: [...])",
                        "sweep",
                        key,
                        spec.kind,
                    )
            groups = len(self.variants) * math.prod(len(v) for v in self.scale.values())
            if self.search.seed * 1000 + groups - 1 > MAX_SEED:
                raise _invalid(
                    f"optuna seeds each of the {groups} (variant, scale point) groups with seed x 1000 + its "
                    f"index, which must stay below 2**32: use a seed of at most {(MAX_SEED - groups + 1) // 1000}",
                    "search",
                    "seed",
                )
        self._check_trial_count()
        return self

    def _check_trainer(self) -> None:
        """What depends on whose trainer runs: the built-in GPT's or the user's."""
        if self.trainer_entry and self.trainer_command:
            raise _invalid("give trainer_entry or trainer_command, not both", "trainer_command")
        keys = self.trainer_keys_schema
        if self.inherit is not None:
            for i, key in enumerate(self.inherit.keys):
                problem = keys.problem(key, "inherit.keys")
                if problem:
                    raise _invalid(problem, "inherit", "keys", i)
        metric = self.objective.metric
        if not keys.custom:
            if metric not in BUILTIN_METRICS:
                raise _invalid(
                    f"the built-in trainer reports {' and '.join(BUILTIN_METRICS)}, not {shown(metric)}",
                    "objective",
                    "metric",
                )
            return
        if not KEY.fullmatch(metric):
            raise _invalid(
                f"metric {shown(metric)} is not an identifier (a key your trainer reports)",
                "objective",
                "metric",
            )
        if self.preflight == "coord_check":
            raise _invalid(
                "preflight coord_check checks the built-in GPT; for your own model run "
                "trainers.coord_check_model on it",
                "preflight",
            )

    @property
    def trainer_keys_schema(self) -> TrainerKeys:
        return TrainerKeys.of(
            {
                "trainer_entry": self.trainer_entry,
                "trainer_command": self.trainer_command,
                "trainer_keys": self.trainer_keys,
            }
        )

    @property
    def custom_trainer(self) -> bool:
        """Whether the study runs the user's trainer (trainer_entry or trainer_command)."""
        return self.trainer_keys_schema.custom

    def user_trainer_spec(self, cwd: str | Path = ".") -> UserTrainerSpec | None:
        """What a worker needs to run the user's trainer from `cwd` (None for the built-in one)."""
        if not self.custom_trainer:
            return None
        return UserTrainerSpec(self.trainer_entry, self.trainer_command, str(Path(cwd).resolve()))

    @property
    def trainer_label(self) -> str:
        return self.trainer_entry or f"command: {self.trainer_command}"

    def trial_count(self) -> int:
        """The trials the study plans, counted without expanding them: variants x scale points x seeds x
        the sweep grid's size (grid search; adaptive search's full grid), or x num_samples (optuna)."""
        return math.prod(n for _, n, _ in self._count_factors())

    def _count_factors(self) -> list[tuple[str, int, Loc]]:
        """(what, how many, where in the YAML) for each factor of `trial_count`."""
        settings: tuple[str, int, Loc]
        if self.search.method == "optuna":
            settings = ("samples (search.num_samples)", self.search.num_samples, ("search", "num_samples"))
        else:
            grid = math.prod(spec.size() for spec in self.sweep.values() if spec.enumerable)
            settings = ("sweep settings", grid, ("sweep",))
        points = math.prod(len(values) for values in self.scale.values())
        return [
            ("variants", len(self.variants), ("variants",)),
            ("scale points", points, ("scale",)),
            ("seeds", len(self.seeds), ("seeds",)),
            settings,
        ]

    def _check_trial_count(self) -> None:
        factors = self._count_factors()
        count = math.prod(n for _, n, _ in factors)
        cap = self.max_trials or DEFAULT_MAX_TRIALS
        if count <= cap:
            return
        shown_count = str(count) if count < 10**15 else f"about 10^{len(str(count)) - 1}"
        singular = {"variants": "variant", "scale points": "scale point", "seeds": "seed"}
        breakdown = " x ".join(
            f"{n} {singular.get(what, what) if n == 1 else what}" for what, n, _ in factors
        )
        if "max_trials" in self.model_fields_set:
            raise _invalid(
                f"the study plans {shown_count} trials ({breakdown}), more than max_trials {cap}: shrink the "
                "study or raise max_trials",
                "max_trials",
            )
        where = max(factors, key=lambda f: f[1])[2]
        raise _invalid(
            f"the study plans {shown_count} trials ({breakdown}); at most {cap} unless the study says more: "
            f"shrink it, or raise the cap with a top-level max_trials: {shown_count}",
            *where,
        )

    # --- construction ---
    @classmethod
    def from_dict(cls, data: Any, source: str = "study", root: yaml.Node | None = None) -> Study:
        """Validate `data` (the parsed YAML) and every trial config it implies, or raise StudyError."""
        try:
            study = cls.model_validate(data)
        except ValidationError as err:
            raise StudyError(_format_error(err, source, root)) from None
        study._source = source
        study._root = root
        study.validate_configs()
        return study

    @property
    def source(self) -> str:
        return self._source

    @property
    def inherited(self) -> dict[str, dict[str, Any]]:
        """Per variant, the inherited values bound into this study (empty before `with_inherited`)."""
        return {variant: dict(values) for variant, values in self._inherited.items()}

    def with_inherited(self, inherited: dict[str, dict[str, Any]]) -> Study:
        """This study with the inherited values bound in (per variant), every trial config re-validated.

        The only way inherited values enter: every later expansion (`trial_config`, `grid_trials`, the
        fingerprints) uses them."""
        unknown = sorted(set(inherited) - set(self.variants))
        if unknown:
            raise StudyError(f"{self.source}: inherit: no variant {shown(unknown[0])} in this study")
        bound = self.model_copy()
        bound._inherited = {variant: dict(values) for variant, values in inherited.items()}
        bound.validate_configs()
        return bound

    # --- expansion ---
    def scale_keys(self) -> list[str]:
        return list(self.scale)

    def swept_keys(self) -> list[str]:
        return list(self.sweep)

    def scale_points(self) -> list[dict[str, Any]]:
        keys = self.scale_keys()
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.scale.values())]

    def trial_config(
        self,
        variant: str,
        scale_point: dict[str, Any],
        params: dict[str, Any],
        seed: int,
    ) -> TrainConfig | UserConfig:
        """trainer < inherited < variant patch < scale point < params < seed, validated (for a user's
        trainer: plain values, each one JSON can carry)."""
        if variant not in self.variants:
            raise StudyError(
                f"{self._where(('variants',))}: no variant {shown(variant)}; known: {', '.join(self.variants)}"
            )
        layers = self._layers(variant, scale_point, params, seed, self._inherited.get(variant, {}))
        merged: dict[str, Any] = {}
        for _, values, _ in layers:
            merged.update(values)
        if self.custom_trainer:
            return self._user_config(merged, layers, variant, scale_point, params)
        try:
            return TrainConfig.model_validate(merged)
        except ValidationError as err:
            context = _context(variant, scale_point, params)
            where = self._where(_blame(err, layers))
            raise StudyError(format_validation_error(err, f"{where}: {context}")) from None

    def _user_config(
        self,
        merged: dict[str, Any],
        layers: list[tuple[Loc, dict[str, Any], bool]],
        variant: str,
        point: dict[str, Any],
        params: dict[str, Any],
    ) -> UserConfig:
        for key, value in merged.items():
            if not _plain_json(value):
                where = self._where(_key_loc(layers, key))
                raise StudyError(
                    f"{where}: {_context(variant, point, params)}: {key} is {shown(value)} "
                    f"({type(value).__name__}); a trainer key takes numbers, strings, booleans, null, "
                    "and lists or mappings of them"
                )
        return UserConfig(merged, self.trainer_label)

    def planned_trial(
        self, variant: str, scale_point: dict[str, Any], params: dict[str, Any], seed: int
    ) -> PlannedTrial:
        """`trial_config` with the trial's id and its place in the study."""
        config = self.trial_config(variant, scale_point, params, seed)
        return PlannedTrial(trial_id(config), variant, dict(scale_point), dict(params), seed, config)

    def varied_keys(self) -> list[str]:
        """The config keys the study varies between trials of one variant: scale and swept keys."""
        return [*self.scale_keys(), *self.swept_keys()]

    def variant_fingerprints(self) -> dict[str, str]:
        """Per variant, the `definition_fingerprint` its trials get now."""
        probe, point = self.probe_params(), self.scale_points()[0]
        return {
            variant: definition_fingerprint(
                self.trial_config(variant, point, probe, self.seeds[0]), self.varied_keys()
            )
            for variant in self.variants
        }

    def probe_params(self) -> dict[str, Any]:
        """One representative value per swept key: the first grid value, or the middle of a range."""
        return {key: self._probe(key, spec) for key, spec in self.sweep.items()}

    def validate_configs(self) -> None:
        """Check every variant x scale point before anything runs, and each corpus it names (to exist, and
        to fit vocab_size and seq_len) without building it.

        Swept keys take their first grid value (or the midpoint of a range); each further grid value, and
        each end of a range, is also checked once per variant and scale point, one key at a time. Seeds
        differ only in `seed`, which the schema bounds as TrainConfig does, so one seed stands for all:
        the work grows with variants x points x (grid values summed over keys), never with their product.
        """
        probe = self.probe_params()
        seed = self.seeds[0]
        # Besides the probe: the rest of each grid, and both ends of each range (a sampler may return them).
        others = {
            key: spec.grid()[1:] if spec.enumerable else [v for v in spec.bounds() if v != probe[key]]
            for key, spec in self.sweep.items()
        }
        corpora: dict[tuple[str, int | None, int], tuple[str, str] | None] = {}
        for variant in self.variants:
            for point in self.scale_points():
                config = self._checked_config(variant, point, probe, seed, corpora)
                self._check_grace(config, variant, point)
                for key, values in others.items():
                    for value in values:
                        self._checked_config(variant, point, {**probe, key: value}, seed, corpora)
        self._check_distinct_variants(probe)
        if self.objective.metric == "train_loss" and self.objective.use == "best":
            raise StudyError(
                f"{self.source}: objective: use 'best' needs metric val_loss (the train loss is "
                "reported as a final value)"
            )

    def _checked_config(
        self,
        variant: str,
        point: dict[str, Any],
        params: dict[str, Any],
        seed: int,
        corpora: dict[tuple[str, int | None, int], tuple[str, str] | None],
    ) -> TrainConfig | UserConfig:
        """`trial_config`, with its corpus checked to exist and to fit the vocab_size and seq_len (each
        combination once, memoized in `corpora`), without building the corpus. A user's trainer's config
        is checked against its command template instead."""
        config = self.trial_config(variant, point, params, seed)
        if isinstance(config, UserConfig):
            if self.trainer_command:
                self._check_command(config, variant, point)
            return config
        from trainers.data import corpus_problem  # numpy; not needed for --help

        key = (config.corpus, config.vocab_size, config.seq_len)
        if key not in corpora:
            corpora[key] = corpus_problem(*key)
        problem = corpora[key]
        if problem is not None:
            field, message = problem
            layers = self._layers(variant, point, params, seed, self._inherited.get(variant, {}))
            if not any(field in values for _, values, _ in layers):
                field = "corpus"  # seq_len or vocab_size at its default: the corpus is what does not fit
            where = self._where(_key_loc(layers, field))
            raise StudyError(f"{where}: {_context(variant, point, params)}: {message}")
        return config

    def _check_distinct_variants(self, probe: dict[str, Any]) -> None:
        """Two variants that resolve to the same configs would share trial ids (and results)."""
        point = self.scale_points()[0]
        seen: dict[str, str] = {}
        for variant in self.variants:
            tid = trial_id(self.trial_config(variant, point, probe, self.seeds[0]))
            if tid in seen:
                raise StudyError(
                    f"{self.source}: variants: {shown(seen[tid])} and {shown(variant)} give identical trials (their patches "
                    "resolve to the same config); drop one or make them differ"
                )
            seen[tid] = variant

    def grid_trials(self) -> list[PlannedTrial]:
        """Every trial of a grid search: variant x scale point x seed x sweep grid, in that order."""
        keys = self.swept_keys()
        for key in keys:
            if not self.sweep[key].enumerable:
                raise StudyError(
                    f"{self._where(('sweep', key))}: {self.sweep[key].kind} is not enumerable: "
                    "use log2_grid or values for grid search"
                )
        grids = [self.sweep[key].grid() for key in keys]
        trials = []
        for variant in self.variants:
            for point in self.scale_points():
                for seed in self.seeds:
                    for combo in itertools.product(*grids):
                        trials.append(
                            self.planned_trial(variant, point, dict(zip(keys, combo, strict=True)), seed)
                        )
        return trials

    # --- helpers ---
    def _where(self, loc: Loc) -> str:
        line = "" if self._root is None else f":{line_of(self._root, loc)}"
        return f"{self._source}{line}: {dotted(loc)}"

    def _layers(
        self, variant: str, point: dict, params: dict, seed: int, inherited: dict
    ) -> list[tuple[Loc, dict[str, Any], bool]]:
        """The merge layers, lowest precedence first: (location in the YAML, values, keyed).

        `keyed` layers are mappings whose own key extends the location of an error.
        """
        inherit_keys = self.inherit.keys if self.inherit else []
        layers: list[tuple[Loc, dict[str, Any], bool]] = [(("trainer",), self.trainer, True)]
        for key, value in inherited.items():
            loc = ("inherit", "keys", inherit_keys.index(key)) if key in inherit_keys else ("inherit",)
            layers.append((loc, {key: value}, False))
        layers.append((("variants", variant), self.variants[variant], True))
        for axis, value in point.items():
            index = self._position(("scale", axis), self.scale.get(axis, []), value)
            loc = ("scale", axis) if index is None else ("scale", axis, index)
            layers.append((loc, {axis: value}, False))
        for key, value in params.items():
            spec = self.sweep.get(key)
            loc = ("sweep", key) if spec is None else ("sweep", key, spec.kind)
            index = None if spec is None else self._position(loc, spec.listed(), value)
            if index is not None:
                loc = (*loc, index)
            layers.append((loc, {key: value}, False))
        index = self._position(("seeds",), self.seeds, seed)
        layers.append((("seeds",) if index is None else ("seeds", index), {"seed": seed}, False))
        return layers

    def _position(self, name: Loc, items: list[Any], value: Any) -> int | None:
        """The index of `value` in `items` (the list at `name`), from a table built once per list: a
        lookup per trial config, not a scan of a long axis or values list."""
        cached = self._positions.get(name)
        if cached is None or cached[0] is not items:
            table: dict[Any, int] = {}
            for i, item in enumerate(items):
                table.setdefault(_freeze(item), i)
            cached = self._positions[name] = (items, table)
        return cached[1].get(_freeze(value))

    def _probe(self, key: str, spec: SweepSpec) -> Any:
        value = spec.probe()
        if not spec.enumerable and self.trainer_keys_schema.number_kind(key) is int:
            value = round(value)
        return value

    def _check_grace(self, config: TrainConfig | UserConfig, variant: str, point: dict[str, Any]) -> None:
        if self.early_stop is None:
            return
        context = ", ".join(x for x in (f"variant {variant}", _describe(point)) if x)
        steps = total_steps(config)
        if steps is None:
            raise StudyError(
                f"{self._where(('early_stop',))}: {context}: early stopping needs the run's length: give your "
                "trainer a whole-number config key 'steps' (ASHA compares trials at reported steps)"
            )
        if self.early_stop.grace_steps < steps:
            return
        raise StudyError(
            f"{self._where(('early_stop', 'grace_steps'))}: {context}: grace_steps "
            f"{self.early_stop.grace_steps} must be smaller than the run's {steps} steps"
        )

    def _check_command(self, config: UserConfig, variant: str, point: dict[str, Any]) -> None:
        """Every `{key}` of trainer_command must name a key of the trial config."""
        from sweeper.command_trainer import WHOLE_CONFIG, placeholders

        for key in placeholders(self.trainer_command or ""):
            if key != WHOLE_CONFIG and key not in config.values:
                context = ", ".join(x for x in (f"variant {variant}", _describe(point)) if x)
                known = ", ".join(sorted({*config.values, WHOLE_CONFIG}))
                raise StudyError(
                    f"{self._where(('trainer_command',))}: {context}: {{{key}}} names no key of the trial "
                    f"config{_hint(key, config.values)}; the config has {known}"
                )


def total_steps(config: TrainConfig | UserConfig) -> int | None:
    """How many steps a trial trains: the built-in config's, or a user's trainer's `steps` key (None when it
    has none)."""
    if isinstance(config, TrainConfig):
        return config.total_steps
    steps = config.values.get("steps")
    return steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else None


def _plain_json(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_plain_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    return False


def _blame(err: ValidationError, layers: list[tuple[Loc, dict[str, Any], bool]]) -> Loc:
    """The YAML location responsible for a TrainConfig error.

    A key error goes to the highest-precedence layer that sets the key. A whole-config error (e.g. a
    head layout that does not fit the width) goes to the first layer whose addition makes it appear.
    """
    loc = err.errors(include_url=False)[0]["loc"]
    if loc:
        return _key_loc(layers, str(loc[0]))
    target = format_validation_error(err, "")

    def fails_so(values: dict[str, Any]) -> bool:
        try:
            TrainConfig.model_validate(values)
        except ValidationError as partial:
            return format_validation_error(partial, "") == target
        return False

    merged: dict[str, Any] = {}
    for base, values, keyed in layers:
        before = dict(merged)
        merged.update(values)
        if fails_so(merged):
            if keyed:  # the key of the mapping (trainer, a variant) whose addition makes it appear
                for key, value in values.items():
                    before[key] = value
                    if fails_so(before):
                        return (*base, key)
            return base
    return layers[-1][0]


def _key_loc(layers: list[tuple[Loc, dict[str, Any], bool]], key: str) -> Loc:
    """The YAML location that sets `key`: its highest-precedence layer (the trainer block if none does)."""
    for base, values, keyed in reversed(layers):
        if key in values:
            return (*base, key) if keyed else base
    return layers[0][0]


# --- YAML -> Study, with line numbers ---
def load_study(path: str | Path) -> Study:
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise StudyError(f"{source}: no such study file")
    if path.is_dir():
        raise StudyError(f"{source}: is a directory, not a study file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STUDY_BYTES + 1)
    except OSError as err:
        raise StudyError(f"{source}: cannot read: {err.strerror}") from None
    if len(raw) > MAX_STUDY_BYTES:
        size = path.stat().st_size if path.is_file() else None
        what = f"{size} bytes" if size else f"more than {MAX_STUDY_BYTES} bytes"
        raise StudyError(f"{source}: {what}; a study file may have at most {MAX_STUDY_BYTES} bytes (256 KiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StudyError(f"{source}: not UTF-8 text") from None
    root, data = parse_yaml(text, source)
    return Study.from_dict(data, source=source, root=root)


def _model_at(path: Loc) -> type[BaseModel] | None:
    """The spec model found at `path` below Study (mapping keys of dict fields skipped)."""
    model: type[BaseModel] = Study
    parts = list(path)
    while parts:
        field = model.model_fields.get(parts.pop(0)) if isinstance(parts[0], str) else None
        if field is None:
            return None
        ann = field.annotation
        if get_origin(ann) in (Union, types.UnionType):
            ann = next(a for a in get_args(ann) if a is not type(None))
        if get_origin(ann) is dict:
            ann = get_args(ann)[1]
            if parts:
                parts.pop(0)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _format_error(err: ValidationError, source: str, root: yaml.Node | None) -> str:
    errors = err.errors(include_url=False)
    # An unknown key is usually the cause of the other errors (a misspelt required key, say).
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc: Loc = tuple(first["loc"])
    if first["type"] == "study":
        loc = (*loc, *first["ctx"]["where"])
        msg = first["ctx"]["msg"]
    elif first["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = f"; allowed: {', '.join(model.model_fields)}" if model else ""
        msg = f"unknown key {shown(loc[-1])}{allowed}"
    elif first["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = f"{first['msg']} (got {shown(first.get('input'))})"
    line = "" if root is None else f":{line_of(root, loc)}"
    field = f" {dotted(loc)}:" if loc else ""
    return f"{source}{line}:{field} {msg}"
