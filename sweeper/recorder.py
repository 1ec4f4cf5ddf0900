"""The driver's record keeping: a Tune callback that collects each trial's curve from its reports and,
when the trial ends, writes it to the results store (and W&B), then tells the display where the run is."""

from __future__ import annotations

import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ray import tune

from sweeper.forecast import Forecast
from sweeper.ledger import TrialLedger
from sweeper.store import ResultsStore, point_label, trial_row
from sweeper.study import PlannedTrial, Study, group_key
from trainers.atomic import atomic_write_text

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
    (variant, group_key(scale point)) as (loss, {"objective": ..., swept key: value, ...}), the store's
    trials of the current definition included. `left` and `eta_s` are the forecast as of `at` (time.time())."""

    counts: RunCounts
    best: Mapping[tuple, tuple[float, dict]]
    done_by_group: Mapping[tuple, int] = field(default_factory=dict)  # this run's ended trials
    left: float | None = None  # trials still to finish (an estimate for an adaptive search)
    eta_s: float | None = None
    at: float = 0.0


class Recorder(tune.Callback):
    def __init__(
        self,
        study: Study,
        store: ResultsStore,
        ledger: TrialLedger,
        tracker: Any,
        on_progress: Callable[[Progress], None] | None = None,
        forecast: Forecast | None = None,
        stored_best: Mapping[tuple, tuple[float, dict]] | None = None,
    ) -> None:
        self.study, self.store, self.ledger, self.tracker = study, store, ledger, tracker
        self.on_progress, self.forecast = on_progress, forecast
        self.fingerprints = study.variant_fingerprints()
        self.curves: dict[str, list[dict]] = {}
        self.started: dict[str, float] = {}
        self.counts = RunCounts()
        self.best: dict[tuple, tuple[float, dict]] = dict(stored_best or {})
        self.done_by_group: Counter[tuple] = Counter()
        self.recorded_params: set[tuple] = set()
        self.first_failure: str | None = (
            None  # "<variant, scale, params>: <message>" of the first failed trial
        )
        self.fatal: str | None = None  # why the run must stop: a store write that failed

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks for Tuner.restore, which sweeper never uses; this one holds live objects.
        return {}

    def progress(self) -> Progress:
        now = time.time()
        left, eta = self.forecast.left(now) if self.forecast is not None else (None, None)
        return Progress(
            counts=replace(self.counts),
            best=MappingProxyType(dict(self.best)),
            done_by_group=MappingProxyType(dict(self.done_by_group)),
            left=left,
            eta_s=eta,
            at=now,
        )

    def _tell(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress())

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())
        self.curves[trial.trial_id] = []
        self.counts.running += 1
        planned = self.ledger.peek(trial.trial_id)
        if self.forecast is not None and planned is not None:
            self.forecast.started(trial.trial_id, (planned.variant, group_key(planned.scale)), time.time())
        self._tell()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.curves[trial.trial_id] = []  # the retry reports its curve from the start
        self.counts.running = max(0, self.counts.running - 1)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not result.get("final"):
            # A user's trainer's point comes whole (its own metric names); the built-in one's as Tune keys.
            point = result.get("point") or {key: result.get(key) for key in CURVE_KEYS}
            self.curves.setdefault(trial.trial_id, []).append(_none_for_nan(point))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        error, details = None, None
        if result.get("final"):
            summary = result.get("summary") or {}
            status = summary.get("status", "completed")
            error, details = result.get("error"), result.get("error_details")
        elif self.study.early_stop is not None:
            curve = self.curves.get(trial.trial_id, [])
            metric = self.study.objective.metric
            values = [p[metric] for p in curve if p.get(metric) is not None]
            last = curve[-1] if curve else {}
            pick = max if self.study.objective.mode == "max" else min
            summary = {"steps": last.get("step"), "tokens": last.get("tokens")}
            summary[f"best_{metric}"] = pick(values) if values else None
            status = "stopped"
        else:  # ended without its final report and nothing stops trials early: an interrupted run
            self.curves.pop(trial.trial_id, None)
            return
        self._record(trial, status, summary, error, details)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        details = _error_details(trial)
        self._record(trial, "failed", {}, _error_line(details), details or None)

    def _record(
        self, tune_trial: Any, status: str, summary: dict, error: str | None, details: str | None = None
    ) -> None:
        """Store one ended trial. Nothing here may abort the study: a failed store write stops it cleanly
        (`fatal`, read by the run's stopper), anything else makes the trial a failed one."""
        if self.fatal is not None:
            return
        if self.forecast is not None:
            self.forecast.ended_trial(tune_trial.trial_id, time.time())
        trial = self.ledger.record(tune_trial.trial_id)
        if trial is None:
            return
        try:
            self._store(tune_trial, trial, status, summary, error, details)
        except OSError as err:
            where = getattr(err, "filename", None) or self.store.dir
            self.fatal = f"could not write {where}: {err.strerror or err}"
        except Exception as err:  # a bug or an unstorable value: keep the study going, say which trial
            message = f"could not record the trial: {type(err).__name__}: {err}"
            try:
                self._store(tune_trial, trial, "failed", {}, message[:500], None)
            except Exception as again:
                self.fatal = f"could not record trial {trial.trial_id}: {type(again).__name__}: {again}"
        self._tell()

    def _store(
        self,
        tune_trial: Any,
        trial: PlannedTrial,
        status: str,
        summary: dict,
        error: str | None,
        details: str | None,
    ) -> None:
        if details:
            error_file = self.store.dir / "errors" / f"{trial.trial_id}.txt"
            atomic_write_text(error_file, details + "\n")
            error = f"{error} (traceback: {error_file})"
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
        self.counts.running = max(0, self.counts.running - 1)
        setattr(self.counts, status, getattr(self.counts, status) + 1)
        self.done_by_group[(trial.variant, group_key(trial.scale))] += 1
        if status == "failed" and self.first_failure is None:
            self.first_failure = f"{trial.variant} {point_label(trial.scale)} {trial.params}: {error}"
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

    def _record_params(self, trial: PlannedTrial) -> None:
        """The per-parameter table of each (variant, scale point), once."""
        key = (trial.variant, group_key(trial.scale))
        if key in self.recorded_params or self.study.custom_trainer:  # a user's model has its own rules
            return
        self.recorded_params.add(key)
        from trainers.data import load_corpus
        from trainers.parameterization import build

        try:
            vocab = load_corpus(trial.config.corpus, trial.config.vocab_size).vocab_size
            _, plans = build(trial.config, vocab, device="meta")
            self.store.record_params(trial.variant, trial.scale, [p.as_row() for p in plans])
        except Exception as err:  # the table is a convenience: its loss never stops a study
            print(f"note: no parameter table for {trial.variant} {trial.scale}: {err}", file=sys.stderr)


def _error_details(trial: Any) -> str:
    """The worker's traceback(s), as Tune keeps them in the trial's error file (every attempt's)."""
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text(errors="replace").strip() if path else ""
    except OSError:
        return ""


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b")


def _error_line(details: str) -> str:
    """The line of a worker's traceback that says what went wrong: its last `SomeError: ...` line (the
    last non-empty line when there is none)."""
    lines = [line.strip() for line in details.splitlines() if line.strip()]
    named = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (named or lines or ["trial raised an error (see the Ray logs)"])[-1][:500]


def _none_for_nan(point: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in point.items()}
