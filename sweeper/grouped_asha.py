"""Asynchronous successive halving (ASHA) with one bracket per (variant, scale point), so that it only ever
compares trials that are comparable: the same model size, different settings."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from sweeper.trainable import METRIC


class GroupedASHA(FIFOScheduler):
    """Asynchronous successive halving with one scheduler per (variant, scale point)."""

    def __init__(self, grace_steps: int, max_steps: int, reduction_factor: float) -> None:
        super().__init__()
        self.kwargs = {
            "time_attr": "step",
            "grace_period": grace_steps,
            "max_t": max_steps,
            "reduction_factor": reduction_factor,
        }
        self.groups: dict[str, AsyncHyperBandScheduler] = {}
        self._metric, self._mode = METRIC, "min"

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _of(self, trial: Any) -> AsyncHyperBandScheduler:
        key = trial.config.get("group", "")
        if key not in self.groups:
            self.groups[key] = AsyncHyperBandScheduler(metric=METRIC, mode="min", **self.kwargs)
        return self.groups[key]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        # ASHA stops a trial that reaches max_t; ours must live on to send its final summary.
        if result.get("final") or result.get("step", 0) >= self.kwargs["max_t"]:
            return TrialScheduler.CONTINUE
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)
