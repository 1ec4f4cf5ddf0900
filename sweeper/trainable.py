"""The Ray Tune trainable: one trial = one trainer call in a Ray worker, the built-in
`trainers.train.train(config, report)` or the user's own (`sweeper.user_trainer`).

It reports every evaluation (with `loss`, the objective oriented for minimisation, for ASHA) and ends with
a final report that carries the run's summary; the driver's Recorder stores both.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ray import tune

from sweeper.objective import Objective
from sweeper.user_trainer import EntryError, UserResult, UserTrainerSpec, load_entry, run_user_trainer

METRIC = "loss"  # what Tune sees: the objective oriented for minimisation, +inf when missing


def run_trial(config: dict[str, Any]) -> None:
    """Train `config["train_config"]`, reporting each evaluation and then `{"final": True, "summary"}`.

    A point of a user's trainer travels whole under "point" (its metric names are the user's, and may be
    any of Tune's own result keys); `step` is also top-level, where ASHA reads it."""
    objective = Objective.model_validate(config["objective"])
    user = config.get("user_trainer")
    best = math.inf

    def report(point: dict[str, Any]) -> None:
        nonlocal best
        loss = objective.loss(point.get(objective.metric))
        best = min(best, loss)
        reported = best if objective.use == "best" else loss
        extra = {"point": point} if user else _nan_for_none(point)
        tune.report({**extra, "step": point["step"], METRIC: reported, "final": False})

    if user:
        result: Any = _run_user(UserTrainerSpec.of(user), config["train_config"], objective, report)
    else:
        from trainers.config import TrainConfig
        from trainers.train import train

        result = train(TrainConfig.model_validate(config["train_config"]), report=report)
    summary = result.summary()
    final_loss = objective.loss(objective.of_summary(summary)) if result.status == "completed" else math.inf
    last = result.history[-1] if result.history else {"step": 0}
    final: dict[str, Any] = {
        "step": last.get("step", 0),
        METRIC: final_loss,
        "final": True,
        "summary": summary,
    }
    if not user:
        final = {**_nan_for_none(last), **final}
    if getattr(result, "error", None):
        final["error"], final["error_details"] = result.error, result.details
    tune.report(final)


def _run_user(
    spec: UserTrainerSpec, train_config: dict[str, Any], objective: Objective, report: Any
) -> UserResult:
    """The user's function (imported from where sweeper runs) or command, called once; anything it does
    wrong is a failed result, never an exception out of the worker."""
    os.chdir(spec.cwd)  # relative paths in the user's code mean what they mean where sweeper runs
    if spec.command:
        from sweeper.command_trainer import CommandTrainer

        train: Any = CommandTrainer(spec.command, spec.cwd)
    else:
        assert spec.entry is not None
        try:
            train = load_entry(spec.entry, spec.cwd)
        except EntryError as err:
            return UserResult("failed", error=str(err))
    return run_user_trainer(train, train_config, report, metric=objective.metric, mode=objective.mode)


def _nan_for_none(point: dict[str, Any]) -> dict[str, Any]:
    return {k: (math.nan if v is None else v) for k, v in point.items()}
