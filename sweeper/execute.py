"""Run what the store lacks on Ray Tune: the strategy's trials through the searcher, ASHA when the study
asks for early stopping, every ended trial through the Recorder into the store.

Ray's ResultGrid is not trusted after an interrupt: completeness is the search's own account (every trial
handed out and its outcome learnt), and what finished is read back from the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import tune

from sweeper.grouped_asha import GroupedASHA
from sweeper.ledger import TrialLedger
from sweeper.recorder import Progress, Recorder, RunCounts
from sweeper.search import Strategy, make_strategy
from sweeper.store import ResultsStore
from sweeper.stored import Stored
from sweeper.study import Study
from sweeper.trainable import run_trial
from sweeper.tune_searcher import StudySearcher


@dataclass(frozen=True)
class RunOutcome:
    complete: bool
    counts: RunCounts
    skipped: int  # trials the store already had
    wall_s: float
    strategy: Strategy


def run_study(
    study: Study,
    store: ResultsStore,
    stored: Stored,
    *,
    max_concurrent: int | None = None,
    tracker: Any = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunOutcome:
    """Run the trials `study` (inherited values bound) needs beyond `stored`, on the Ray already started."""
    start = time.time()
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's own console tables: sweeper has its display
    strategy = make_strategy(study, stored)
    ledger = TrialLedger()
    searcher = StudySearcher(strategy, study.objective, max(1, int(study.resources.cpu)), ledger)
    recorder = Recorder(study, store, ledger, tracker, on_progress)
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
            storage_path=str((store.dir / "ray_results").resolve()),
            verbose=0,
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
    tuner.fit()
    return RunOutcome(
        complete=searcher.complete,
        counts=recorder.progress().counts,
        skipped=len(stored.losses),
        wall_s=time.time() - start,
        strategy=strategy,
    )


def _scheduler(study: Study) -> GroupedASHA | None:
    if study.early_stop is None:
        return None
    probe = study.probe_params()
    steps = max(
        study.trial_config(variant, point, probe, study.seeds[0]).total_steps
        for variant in study.variants
        for point in study.scale_points()
    )
    return GroupedASHA(study.early_stop.grace_steps, steps, study.early_stop.reduction_factor)
