"""Run what the store lacks on Ray Tune: the strategy's trials through the searcher, ASHA when the study
asks for early stopping, every ended trial through the Recorder into the store.

Ray's ResultGrid is not trusted after an interrupt: completeness is the search's own account (every trial
handed out and its outcome learnt), and what finished is read back from the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.stopper import Stopper

from sweeper.forecast import Forecast, StoredState
from sweeper.grouped_asha import GroupedASHA
from sweeper.ledger import TrialLedger
from sweeper.recorder import Progress, Recorder, RunCounts
from sweeper.search import Strategy, make_strategy
from sweeper.store import ResultsStore
from sweeper.stored import Stored
from sweeper.study import Study, total_steps
from sweeper.trainable import run_trial
from sweeper.tune_searcher import StudySearcher


@dataclass(frozen=True)
class RunOutcome:
    complete: bool
    counts: RunCounts
    skipped: int  # trials the store already had
    wall_s: float
    strategy: Strategy
    fatal: str | None = None  # why the run stopped early: a store write that failed
    first_failure: str | None = None  # the first failed trial and its error, for the summary


class _StopOnFatal(Stopper):
    """Ends the whole run once the recorder cannot write the store (or the searcher cannot plan)."""

    def __init__(
        self, recorder: Recorder, searcher: StudySearcher, stop_requested: Callable[[], bool] | None
    ) -> None:
        self.recorder, self.searcher = recorder, searcher
        self.stop_requested = stop_requested or (lambda: False)

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.recorder.fatal is not None or self.searcher.fatal is not None or self.stop_requested()


def run_study(
    study: Study,
    store: ResultsStore,
    stored: Stored,
    *,
    tune_dir: Path,
    stop_requested: Callable[[], bool] | None = None,
    max_concurrent: int | None = None,
    tracker: Any = None,
    on_progress: Callable[[Progress], None] | None = None,
    stored_now: StoredState | None = None,
) -> RunOutcome:
    """Run the trials `study` (inherited values bound) needs beyond `stored`, on the Ray already started.
    `stored_now` (what the store holds of the current definition) seeds the display's counts, best
    settings and trial times."""
    start = time.time()
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's own console tables: sweeper has its display
    # Tune's experiment state is for Tuner.restore, which sweeper never uses (the store is the record):
    # write it rarely.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3600")
    strategy = make_strategy(study, stored)
    ledger = TrialLedger()
    threads = max(1, int(study.resources.cpu))
    searcher = StudySearcher(strategy, study.objective, threads, ledger, study.user_trainer_spec(os.getcwd()))
    stored_now = stored_now or StoredState()
    forecast = Forecast(study, strategy, stored_now, _at_once(study, max_concurrent))
    recorder = Recorder(study, store, ledger, tracker, on_progress, forecast, stored_now.best)
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": study.resources.cpu, "gpu": study.resources.gpu}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(study),
            num_samples=-1,
            max_concurrent_trials=max_concurrent or study.max_concurrent,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"t_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(tune_dir.resolve()),  # never the store: Tune's files are not the record
            verbose=0,
            callbacks=[recorder],
            stop=_StopOnFatal(recorder, searcher, stop_requested),
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
    crashed = None
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    # A failed trial is recorded with its traceback (errors/<trial_id>.txt): Tune need not print it too.
    tune_logger.setLevel(logging.CRITICAL)
    try:
        tuner.fit()
    except Exception as err:  # Tune's own writes (its experiment state) fail the same way ours do
        crashed = _first_line(err)
    finally:
        tune_logger.setLevel(level)
    fatal = recorder.fatal or searcher.fatal or (f"Ray Tune stopped: {crashed}" if crashed else None)
    stopped = stop_requested is not None and stop_requested()
    return RunOutcome(
        complete=searcher.complete and fatal is None and not stopped,
        counts=recorder.progress().counts,
        skipped=stored_now.total,
        wall_s=time.time() - start,
        strategy=strategy,
        fatal=fatal,
        first_failure=recorder.first_failure,
    )


def _at_once(study: Study, max_concurrent: int | None) -> int:
    """Trials that fit at once on the Ray this run uses (a cluster's resources, or this machine's)."""
    import ray

    from sweeper.estimate import concurrency

    resources = ray.cluster_resources()
    cores = int(resources.get("CPU", 0)) or None
    return concurrency(study, max_concurrent, cores=cores, gpus=int(resources.get("GPU", 0)))


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:300]


def _scheduler(study: Study) -> GroupedASHA | None:
    if study.early_stop is None:
        return None
    probe = study.probe_params()
    steps = max(
        total_steps(study.trial_config(variant, point, probe, study.seeds[0])) or 0
        for variant in study.variants
        for point in study.scale_points()
    )
    return GroupedASHA(study.early_stop.grace_steps, steps, study.early_stop.reduction_factor)
