"""`sweeper run`: load the study, plan what the store lacks, preflight, execute on Ray, summarise.

Heavy libraries (torch, Ray) are imported only once a run needs them.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from sweeper.errors import StudyError
from sweeper.inherit import bind_inherited
from sweeper.preflight import PREFLIGHT_FAILED, preflight
from sweeper.record import StudyRecord
from sweeper.store import ResultsStore
from sweeper.stored import Stored, stored_results
from sweeper.study import Study, load_study

INTERRUPTED = 130


@dataclass(frozen=True)
class RunPlan:
    study: Study  # inherited values bound
    planned: int | None  # trials the study plans in all; None when the search decides as it goes
    stored: Stored

    @property
    def nothing_to_run(self) -> bool:
        """Whether the search would hand out no trial at all (asked of a throwaway strategy), so that a
        finished study answers at once instead of starting Ray."""
        from sweeper.search import FINISHED, make_strategy

        return make_strategy(self.study, self.stored).next() is FINISHED


def run(
    path: Path,
    results_root: Path,
    *,
    address: str | None,
    max_concurrent: int | None,
    dry: bool,
    no_wandb: bool,
    rerun_failed: bool,
    argv: list[str] | None = None,
    force: bool = False,
    estimate: bool = True,
) -> int:
    """The `run` command; returns its exit status."""
    study = load_study(path)
    store = ResultsStore(results_root, study.name)
    if dry:
        from sweeper.dry_run import print_plan

        print_plan(_bound_for_plan(study, results_root), store, rerun_failed, max_concurrent, estimate)
        return 0
    plan = make_plan(bind_inherited(study, results_root), store, rerun_failed)
    from sweeper.local_ray import check_resources

    check_resources(plan.study, address)
    if plan.study.preflight == "coord_check" and not preflight(plan.study, store, force):
        return PREFLIGHT_FAILED
    prepare(plan, store)
    if plan.nothing_to_run:
        print(f"{study.name}: every trial the study needs is in {store.dir}; nothing to run", file=sys.stderr)
        _print_best(ResultsStore(results_root, study.name))
        return 0
    outcome = execute(plan, store, address=address, max_concurrent=max_concurrent, no_wandb=no_wandb)
    command = " ".join(shlex.quote(a) for a in (argv or ["sweeper", "run", str(path)]))
    return summarise(plan, outcome, ResultsStore(results_root, study.name), command)


def _bound_for_plan(study: Study, results_root: Path) -> Study:
    """A dry run plans with the study's own values when the study it inherits from has no results yet."""
    try:
        return bind_inherited(study, results_root)
    except StudyError as err:
        print(f"note: {err}; the plan below uses the study's own values", file=sys.stderr)
        return study


def make_plan(study: Study, store: ResultsStore, rerun_failed: bool) -> RunPlan:
    if study.search.method == "grid":
        planned = len(study.grid_trials())  # validates every config before anything runs
    elif study.search.method == "optuna":
        points = len(study.variants) * len(study.scale_points())
        planned = points * study.search.num_samples * len(study.seeds)
    else:
        planned = None  # adaptive: decided as it goes
    return RunPlan(study, planned, stored_results(store, study, rerun_failed))


def prepare(plan: RunPlan, store: ResultsStore) -> None:
    """Build each corpus cache once (before parallel trials race for it) and record the study as run now."""
    from trainers.data import load_corpus

    study = plan.study
    for corpus in {
        study.trial_config(v, study.scale_points()[0], {}, study.seeds[0]).corpus for v in study.variants
    }:
        load_corpus(corpus)
    store.dir.mkdir(parents=True, exist_ok=True)
    store.write_study_record(StudyRecord.of_study(study, plan.planned))


def execute(
    plan: RunPlan, store: ResultsStore, *, address: str | None, max_concurrent: int | None, no_wandb: bool
):
    """Run the plan on Ray with the live display; None when interrupted (Ctrl-C) before the run returned."""
    from sweeper import local_ray
    from sweeper.display import StudyDisplay
    from sweeper.execute import run_study
    from sweeper.tracking import study_tracker

    study = plan.study
    tracker = study_tracker(study.wandb, store.dir, study.name, disabled=no_wandb)
    temp_dir = local_ray.start(store.dir, address, study)
    skipped = len(plan.stored.losses) if plan.planned else 0
    try:
        with StudyDisplay(study, plan.planned, skipped) as display:
            return run_study(
                study,
                store,
                plan.stored,
                max_concurrent=max_concurrent,
                tracker=tracker,
                on_progress=display.update,
            )
    except KeyboardInterrupt:
        return None
    finally:
        local_ray.stop(temp_dir)
        if tracker is not None:
            tracker.close()


def summarise(plan: RunPlan, outcome, store: ResultsStore, command: str) -> int:
    """The best table and one line on what ran, read back from the store (trusted over Ray); the resume
    command when the run did not finish."""
    _print_best(store)
    study = plan.study
    if outcome is None or not outcome.complete:
        print(
            f"interrupted: {len(store.statuses())} finished trials are in {store.dir}; resume with the same "
            f"command:\n  {command}",
            file=sys.stderr,
        )
        return INTERRUPTED
    counts = outcome.counts
    print(
        f"{study.name}: ran {counts.done} trials ({counts.completed} completed, {counts.diverged} diverged, "
        f"{counts.stopped} stopped early, {counts.failed} failed), {outcome.skipped} already in the store, "
        f"{outcome.wall_s:.0f} s. Results: {store.dir}",
        file=sys.stderr,
    )
    if study.search.method == "adaptive":
        strategy = outcome.strategy
        line = strategy.trials_used - strategy.extra_trials
        print(
            f"adaptive search: {strategy.trials_used} trials ({line} for the line search, "
            f"{strategy.extra_trials} at extra seeds where values were within noise); the full grid on the "
            f"study's seeds has {strategy.grid_size()}",
            file=sys.stderr,
        )
    return 0


def _print_best(store: ResultsStore) -> None:
    from sweeper.analysis import optimum_table
    from sweeper.display import print_best_table

    record = store.study_record()
    table = optimum_table(store.current_trials(), record)
    if table:
        print_best_table(table, record.scale_keys)
