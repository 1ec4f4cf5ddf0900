"""A study over the user's own trainer: `trainer_entry: module:function`, or `trainer_command: ...`.

The contract (fixed: users and other tools write against it):

    def train(config: dict, report) -> dict

`config` is the resolved trial config (the study's `trainer` mapping < inherited values < the variant's
patch < the scale point < the swept values < `seed`). `report(point)` is called at each evaluation with a
dict holding `step` (an int) and metric keys (`val_loss`, `train_loss`, ...: numbers or None). The return
value is a dict whose `status` is `completed`, `diverged` or `failed`, plus any summary metrics.

The objective is read from the reported points exactly as for the built-in trainer: `final_<metric>` is the
last reported value, `best_<metric>` the best one. Anything wrong on the user's side (an exception, a bad
point, a bad return value) makes the trial a failed one with the message; it never stops the study.

No torch or Ray here: the study validation imports this.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.user_config import UserConfig  # noqa: F401  (re-exported: the trial config of a user's trainer)

ENTRY = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STATUSES = ("completed", "diverged", "failed")
MAX_MESSAGE = 500  # characters of an error kept in the store's `error` column


@dataclass(frozen=True)
class UserTrainerSpec:
    """What a Ray worker needs to run the user's trainer: the entry or the command, and where sweeper runs
    (the entry is imported from there, the command runs there)."""

    entry: str | None = None
    command: str | None = None
    cwd: str = "."

    @property
    def label(self) -> str:
        return self.entry or f"command {self.command}"

    def as_dict(self) -> dict[str, Any]:
        return {"entry": self.entry, "command": self.command, "cwd": self.cwd}

    @classmethod
    def of(cls, values: dict[str, Any]) -> UserTrainerSpec:
        return cls(entry=values.get("entry"), command=values.get("command"), cwd=values.get("cwd") or ".")


class EntryError(Exception):
    """The entry cannot be imported or is not a function of (config, report)."""


def load_entry(entry: str, cwd: str | Path = ".", keep_path: bool = True) -> Callable[..., Any]:
    """Import `module:function` from `cwd` (put first on sys.path) or from what is installed.

    `keep_path=False` takes `cwd` off sys.path again after the import: the driver only checks the entry,
    and a user's file named like a standard module (cmd.py, say) must not shadow it for Ray's imports."""
    module_name, _, attr = entry.partition(":")
    where = str(Path(cwd).resolve())
    added = where not in sys.path
    if added:
        sys.path.insert(0, where)
    try:
        return _import_entry(entry, module_name, attr, where)
    finally:
        if added and not keep_path and where in sys.path:
            sys.path.remove(where)


def _import_entry(entry: str, module_name: str, attr: str, where: str) -> Callable[..., Any]:
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise EntryError(
                f"cannot import module {module_name!r} (not under {where}, nor installed)"
            ) from None
        raise EntryError(f"importing {module_name!r} failed: ModuleNotFoundError: {err}") from None
    except Exception as err:
        raise EntryError(f"importing {module_name!r} failed: {type(err).__name__}: {err}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise EntryError(f"module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise EntryError(f"{entry} is a {type(target).__name__}, not a function of (config, report)")
    try:
        inspect.signature(target).bind({}, lambda point: None)
    except TypeError:
        raise EntryError(f"{entry} cannot be called as {attr}(config, report)") from None
    except ValueError:
        pass  # a builtin without a signature: let the call tell
    return target


@dataclass
class UserResult:
    """How one call of the user's trainer ended, shaped as the built-in `TrainResult` is where it counts."""

    status: str
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    details: str | None = None  # the traceback of a raised exception
    wall_s: float = 0.0
    metric: str = "val_loss"
    mode: str = "min"

    def summary(self) -> dict[str, Any]:
        """The user's own summary metrics, then what the reported points say (which wins: the objective
        is read from the points): steps, tokens, final_<metric> and best_<metric> for each metric."""
        summary = {k: v for k, v in self.extra.items() if k != "status"}
        summary["status"] = self.status
        summary["wall_s"] = self.wall_s
        if self.history:
            last = self.history[-1]
            summary["steps"] = last["step"]
            if last.get("tokens") is not None:
                summary["tokens"] = last["tokens"]
        for key in _metric_keys(self.history):
            values = [p[key] for p in self.history if p.get(key) is not None]
            if not values:
                continue
            summary[f"final_{key}"] = values[-1]
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                pick = max if key == self.metric and self.mode == "max" else min
                summary[f"best_{key}"] = pick(finite)
        if self.error:
            summary["error"] = self.error
        return summary


def _metric_keys(history: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for point in history:
        keys.update((k, None) for k in point if k not in ("step", "tokens"))
    return list(keys)


class BadReport(Exception):
    """A point or a return value that breaks the contract."""


def check_point(point: Any, last_step: int | None) -> dict[str, Any]:
    """The reported point as stored, or BadReport saying what is wrong with it."""
    if not isinstance(point, dict):
        raise BadReport(f"report() takes a dict with 'step' and metrics, got {type(point).__name__}")
    step = point.get("step")
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise BadReport(f"report() needs 'step', a whole number >= 0; got {_short(point.get('step'))}")
    if last_step is not None and step < last_step:
        raise BadReport(f"report() steps must not go back: step {step} after step {last_step}")
    clean: dict[str, Any] = {"step": step}
    for key, value in point.items():
        if key == "step":
            continue
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise BadReport(f"report() metric names are identifiers; got {_short(key)}")
        if value is None:
            clean[key] = None
        elif isinstance(value, bool) or not isinstance(value, int | float):
            try:  # numpy and torch scalars
                value = float(value)
            except (TypeError, ValueError):
                raise BadReport(
                    f"report() metric {key!r} must be a number or None; got {_short(value)}"
                ) from None
            clean[key] = value
        else:
            clean[key] = float(value) if isinstance(value, float) else value
    return clean


def check_return(value: Any) -> tuple[str, dict[str, Any]]:
    """(status, the other summary values) of what the trainer returned, or BadReport."""
    if not isinstance(value, dict):
        raise BadReport(
            f"the trainer returned {type(value).__name__}; it must return a dict whose 'status' is one of "
            f"{', '.join(STATUSES)}"
        )
    status = value.get("status")
    if status not in STATUSES:
        raise BadReport(f"the trainer returned status {_short(status)}; allowed: {', '.join(STATUSES)}")
    extra: dict[str, Any] = {}
    for key, item in value.items():
        try:
            json.dumps(item, allow_nan=True)
        except (TypeError, ValueError):
            item = repr(item)[:200]  # a summary value the store cannot keep as it is
        extra[str(key)] = item
    return status, extra


def run_user_trainer(
    train: Callable[..., Any],
    config: dict[str, Any],
    on_point: Callable[[dict[str, Any]], None],
    *,
    metric: str = "val_loss",
    mode: str = "min",
) -> UserResult:
    """Call `train(config, report)`; every reported point goes through `on_point` once it is checked."""
    history: list[dict[str, Any]] = []
    start = time.time()

    def report(point: Any) -> None:
        clean = check_point(point, history[-1]["step"] if history else None)
        history.append(clean)
        on_point(clean)

    def ended(status: str, **kw: Any) -> UserResult:
        return UserResult(status, history, wall_s=time.time() - start, metric=metric, mode=mode, **kw)

    try:
        returned = train(dict(config), report)
        status, extra = check_return(returned)
    except BadReport as err:
        return ended("failed", error=str(err)[:MAX_MESSAGE])
    except Exception as err:
        message = f"{type(err).__name__}: {err}".strip()
        return ended("failed", error=message[:MAX_MESSAGE], details=traceback.format_exc())
    result = ended(status, extra=extra)
    if status == "failed":
        result.error = str(extra.get("error") or "the trainer returned status 'failed'")[:MAX_MESSAGE]
    elif status == "completed":
        final = result.summary().get(f"final_{metric}")
        if final is None:
            result.status = "failed"
            result.error = (
                f"the trainer completed but never reported the objective metric {metric!r} "
                "(report({'step': ..., '" + metric + "': ...}))"
            )
        elif not math.isfinite(final):
            result.status = "diverged"
            result.extra["divergence_reason"] = f"{metric} is {final}"
    return result


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
