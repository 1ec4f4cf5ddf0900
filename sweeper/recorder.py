"""The driver's record keeping: a Tune callback that collects each trial's curve from its reports and,
when the trial ends, writes it to the results store (and W&B), then tells the display where the run is."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from ray import tune

from sweeper.ledger import TrialLedger
from sweeper.store import ResultsStore, trial_row
from sweeper.study import PlannedTrial, Study, group_key

CURVE_KEYS = ("step", "tokens", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s")


@dataclass
class RunCounts:
    completed: int = 0
    diverged: int = 0
    stopped: int = 0
    failed: int = 0
    running: int = 0

    @property
    def done(self) -> int:
        return self.completed + self.diverged + self.stopped + self.failed


@dataclass(frozen=True)
class Progress:
    """Where a run is, as a value for the display: counts this session, and the best setting so far per
    (variant, group_key(scale point)) as (loss, {"objective": ..., swept key: value, ...})."""

    counts: RunCounts
    best: Mapping[tuple, tuple[float, dict]]


class Recorder(tune.Callback):
    def __init__(
        self,
        study: Study,
        store: ResultsStore,
        ledger: TrialLedger,
        tracker: Any,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.study, self.store, self.ledger, self.tracker = study, store, ledger, tracker
        self.on_progress = on_progress
        self.fingerprints = study.variant_fingerprints()
        self.curves: dict[str, list[dict]] = {}
        self.started: dict[str, float] = {}
        self.counts = RunCounts()
        self.best: dict[tuple, tuple[float, dict]] = {}
        self.recorded_params: set[tuple] = set()

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks for Tuner.restore, which sweeper never uses; this one holds live objects.
        return {}

    def progress(self) -> Progress:
        return Progress(counts=replace(self.counts), best=MappingProxyType(dict(self.best)))

    def _tell(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress())

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())
        self.curves[trial.trial_id] = []
        self.counts.running += 1
        self._tell()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.curves[trial.trial_id] = []  # the retry reports its curve from the start
        self.counts.running = max(0, self.counts.running - 1)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not result.get("final"):
            point = {key: result.get(key) for key in CURVE_KEYS}
            self.curves.setdefault(trial.trial_id, []).append(_none_for_nan(point))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if result.get("final"):
            summary = result.get("summary") or {}
            status = summary.get("status", "completed")
        elif self.study.early_stop is not None:
            curve = self.curves.get(trial.trial_id, [])
            val = [p["val_loss"] for p in curve if p.get("val_loss") is not None]
            last = curve[-1] if curve else {}
            summary = {
                "steps": last.get("step"),
                "tokens": last.get("tokens"),
                "best_val_loss": min(val) if val else None,
            }
            status = "stopped"
        else:  # ended without its final report and nothing stops trials early: an interrupted run
            self.curves.pop(trial.trial_id, None)
            return
        self._record(trial, status, summary, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = getattr(trial, "error_msg", None) or "trial raised an error (see the Ray logs)"
        self._record(trial, "failed", {}, str(error).strip().splitlines()[-1][:500] if error else None)

    def _record(self, tune_trial: Any, status: str, summary: dict, error: str | None) -> None:
        trial = self.ledger.record(tune_trial.trial_id)
        if trial is None:
            return
        self.counts.running = max(0, self.counts.running - 1)
        setattr(self.counts, status, getattr(self.counts, status) + 1)
        objective = self.study.objective.of_summary(summary) if status == "completed" else None
        curve = self.curves.pop(tune_trial.trial_id, [])
        config = trial.config.model_dump(mode="json")
        row = trial_row(
            trial_id=trial.trial_id,
            study=self.study.name,
            variant=trial.variant,
            seed=trial.seed,
            scale=trial.scale,
            params=trial.params,
            config=config,
            status=status,
            objective=objective,
            summary=summary,
            error=error,
            started_at=self.started.pop(tune_trial.trial_id, None),
            finished_at=time.time(),
            fingerprint=self.fingerprints[trial.variant],
        )
        self.store.record(row, curve)
        self._record_params(trial)
        if objective is not None:
            key = (trial.variant, group_key(trial.scale))
            loss = self.study.objective.loss(objective)
            if key not in self.best or loss < self.best[key][0]:
                self.best[key] = (loss, {"objective": objective, **trial.params})
        if self.tracker is not None:
            from sweeper.tracking import run_name

            self.tracker.log_trial(
                name=run_name(trial.scale, trial.params, trial.seed),
                variant=trial.variant,
                config={**config, "trial_id": trial.trial_id, "status": status},
                curve=curve,
                summary={**summary, "objective": objective, "status": status},
            )
        self._tell()

    def _record_params(self, trial: PlannedTrial) -> None:
        """The per-parameter table of each (variant, scale point), once."""
        key = (trial.variant, group_key(trial.scale))
        if key in self.recorded_params:
            return
        self.recorded_params.add(key)
        from trainers.data import load_corpus
        from trainers.parameterization import build

        vocab = load_corpus(trial.config.corpus, trial.config.vocab_size).vocab_size
        _, plans = build(trial.config, vocab, device="meta")
        self.store.record_params(trial.variant, trial.scale, [p.as_row() for p in plans])


def _none_for_nan(point: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in point.items()}
