"""The Ray Tune trainable: one trial = one `trainers.train.train(config, report)` call in a Ray worker.

It reports every evaluation (with `loss`, the objective oriented for minimisation, for ASHA) and ends with
a final report that carries the run's summary; the driver's Recorder stores both.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from sweeper.objective import Objective

METRIC = "loss"  # what Tune sees: the objective oriented for minimisation, +inf when missing


def run_trial(config: dict[str, Any]) -> None:
    """Train `config["train_config"]`, reporting each evaluation and then `{"final": True, "summary"}`."""
    from trainers.config import TrainConfig
    from trainers.train import train

    cfg = TrainConfig.model_validate(config["train_config"])
    objective = Objective.model_validate(config["objective"])
    best = math.inf

    def report(point: dict[str, Any]) -> None:
        nonlocal best
        loss = objective.loss(point.get(objective.metric))
        best = min(best, loss)
        reported = best if objective.use == "best" else loss
        tune.report({**_nan_for_none(point), METRIC: reported, "final": False})

    result = train(cfg, report=report)
    summary = result.summary()
    final_loss = objective.loss(objective.of_summary(summary)) if result.status == "completed" else math.inf
    last = result.history[-1] if result.history else {"step": 0}
    tune.report({**_nan_for_none(last), METRIC: final_loss, "final": True, "summary": summary})


def _nan_for_none(point: dict[str, Any]) -> dict[str, Any]:
    return {k: (math.nan if v is None else v) for k, v in point.items()}
