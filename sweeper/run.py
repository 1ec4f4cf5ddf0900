"""`sweeper run`: load the study, plan what the store lacks, preflight, execute on Ray, summarise.

Heavy libraries (torch, Ray) are imported only once a run needs them.
"""

from __future__ import annotations

import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.errors import StudyError
from sweeper.inherit import bind_inherited
from sweeper.lock import StudyLock
from sweeper.preflight import PREFLIGHT_FAILED, preflight
from sweeper.record import StudyRecord
from sweeper.store import ResultsStore
from sweeper.stored import Stored, stored_results
from sweeper.study import Study, load_study

INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2, as shells report it
TERMINATED = 143  # SIGTERM: 128 + 15
STORE_FAILED = 1  # a store write failed (disk full, permissions): fix it and rerun to resume


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
    wait: bool = False,
) -> int:
    """The `run` command; returns its exit status (see `sweeper run --help`)."""
    with Signals() as signals:
        try:
            return _run(
                path,
                results_root,
                signals,
                address=address,
                max_concurrent=max_concurrent,
                dry=dry,
                no_wandb=no_wandb,
                rerun_failed=rerun_failed,
                command=" ".join(shlex.quote(a) for a in (argv or ["sweeper", "run", str(path)])),
                force=force,
                estimate=estimate,
                wait=wait,
            )
        except KeyboardInterrupt:  # before the run started: nothing of it was written
            print("interrupted before any trial ran", file=sys.stderr)
            return signals.exit_status()


def _run(
    path: Path,
    results_root: Path,
    signals: Signals,
    *,
    address: str | None,
    max_concurrent: int | None,
    dry: bool,
    no_wandb: bool,
    rerun_failed: bool,
    command: str,
    force: bool,
    estimate: bool,
    wait: bool,
) -> int:
    study = load_study(path)
    check_user_trainer(study)
    store = ResultsStore(results_root, study.name)
    if dry:
        from sweeper.dry_run import print_plan

        print_plan(_bound_for_plan(study, results_root), store, rerun_failed, max_concurrent, estimate)
        return 0
    study = bind_inherited(study, results_root)
    planned = planned_trials(study)
    from sweeper.local_ray import check_resources

    check_resources(study, address)
    with StudyLock(store.dir, study.name).acquire(wait=wait) as lock:
        lock.note()
        # What the store has is read only now, holding the lock: a driver that waited sees every trial
        # the one before it recorded.
        plan = RunPlan(study, planned, stored_results(store, study, rerun_failed))
        outcome = None
        try:
            if plan.study.preflight == "coord_check" and not preflight(plan.study, store, force):
                return PREFLIGHT_FAILED
            prepare(plan, store)
            if plan.nothing_to_run:
                print(
                    f"{study.name}: every trial the study needs is in {store.dir}; nothing to run",
                    file=sys.stderr,
                )
                _print_best(ResultsStore(results_root, study.name))
                return 0
            outcome = execute(
                plan, store, lock, signals, address=address, max_concurrent=max_concurrent, no_wandb=no_wandb
            )
        except KeyboardInterrupt:
            outcome = None
        return summarise(plan, outcome, ResultsStore(results_root, study.name), command, signals)


class Signals:
    """SIGTERM (how SLURM, Kubernetes and systemd stop a job) is handled as Ctrl-C is: a clean stop that
    keeps every finished trial. Ray installs its own SIGTERM handler when it starts; `install` again after."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._saved: Any = None

    def __enter__(self) -> Signals:
        self._saved = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
        self.install()
        return self

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_int)

    def _on_int(self, signum: int, frame: Any) -> None:
        # Remembered as well as raised: if some library swallows the KeyboardInterrupt, the run's stopper
        # (`stop_requested`) still ends the run at Tune's next step. Tune installs its own SIGINT handler
        # while it runs (a graceful stop) and puts this one back after.
        self.received = self.received or signal.SIGINT
        raise KeyboardInterrupt

    def stop_requested(self) -> bool:
        return self.received is not None

    def _on_term(self, signum: int, frame: Any) -> None:
        self.received = signal.SIGTERM
        handler = signal.getsignal(signal.SIGINT)  # Tune's graceful stop while it runs, else Ctrl-C's
        if callable(handler) and handler is not self._on_int:
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    def exit_status(self) -> int:
        return TERMINATED if self.received == signal.SIGTERM else INTERRUPTED

    def __exit__(self, *exc: object) -> None:
        term, interrupt = self._saved or (signal.SIG_DFL, signal.default_int_handler)
        signal.signal(signal.SIGTERM, term)
        signal.signal(signal.SIGINT, interrupt)


def _bound_for_plan(study: Study, results_root: Path) -> Study:
    """A dry run plans with the study's own values when the study it inherits from has no results yet."""
    try:
        return bind_inherited(study, results_root)
    except StudyError as err:
        print(f"note: {err}; the plan below uses the study's own values", file=sys.stderr)
        return study


def planned_trials(study: Study) -> int | None:
    """Trials the study plans in all; None for an adaptive search, which decides as it goes."""
    return None if study.search.method == "adaptive" else study.trial_count()


def check_user_trainer(study: Study) -> None:
    """A study's trainer_entry must import, from the directory sweeper runs in, as a function of
    (config, report): a StudyError before anything runs, not one failed trial after another."""
    if not study.trainer_entry:
        return
    from sweeper.user_trainer import EntryError, load_entry

    try:
        load_entry(study.trainer_entry, Path.cwd(), keep_path=False)
    except EntryError as err:
        raise StudyError(f"{study.source}: trainer_entry: {err}") from None


def prepare(plan: RunPlan, store: ResultsStore) -> None:
    """Build each corpus cache once (before parallel trials race for it) and record the study as run now.
    A user's trainer brings its own data."""
    study = plan.study
    if not study.custom_trainer:
        from trainers.data import load_corpus

        point = study.scale_points()[0]
        for corpus in {study.trial_config(v, point, {}, study.seeds[0]).corpus for v in study.variants}:
            load_corpus(corpus)
    store.dir.mkdir(parents=True, exist_ok=True)
    store.write_study_record(StudyRecord.of_study(study, plan.planned))


def execute(
    plan: RunPlan,
    store: ResultsStore,
    lock: StudyLock,
    signals: Signals,
    *,
    address: str | None,
    max_concurrent: int | None,
    no_wandb: bool,
):
    """Run the plan on Ray with the live display; None when interrupted before the run returned."""
    from sweeper import local_ray
    from sweeper.display import StudyDisplay
    from sweeper.execute import run_study
    from sweeper.forecast import stored_state
    from sweeper.tracking import study_tracker

    study = plan.study
    tracker = study_tracker(study.wandb, store.dir, study.name, disabled=no_wandb)
    session = None
    try:
        session = local_ray.start(store.dir, address, study, previous=lock.previous)
        signals.install()
        lock.note(ray_dir=str(session.temp_dir) if session.temp_dir else None)
        stored_now = stored_state(store, study, plan.stored.losses)
        with StudyDisplay(study, stored_now, approximate=plan.planned is None) as display:
            return run_study(
                study,
                store,
                plan.stored,
                tune_dir=session.tune_dir,
                stop_requested=signals.stop_requested,
                max_concurrent=max_concurrent,
                tracker=tracker,
                on_progress=display.update,
                stored_now=stored_now,
            )
    except KeyboardInterrupt:
        return None
    finally:
        local_ray.stop(session)
        if tracker is not None:
            tracker.close()


def summarise(plan: RunPlan, outcome, store: ResultsStore, command: str, signals: Signals) -> int:
    """The best table and one line on what ran, read back from the store (trusted over Ray); the resume
    command when the run did not finish."""
    _print_best(store)
    study = plan.study
    if outcome is not None and outcome.first_failure:
        print(f"first failed trial: {outcome.first_failure}", file=sys.stderr)
    if outcome is not None and outcome.fatal:
        print(
            f"error: {outcome.fatal}. {len(store.statuses())} finished trials are kept in {store.dir}; fix "
            f"that, then resume with the same command: {command}",
            file=sys.stderr,
        )
        return STORE_FAILED
    if outcome is None or not outcome.complete:
        print(
            f"interrupted: {len(store.statuses())} finished trials are in {store.dir}; resume with the same "
            f"command:\n  {command}",
            file=sys.stderr,
        )
        return signals.exit_status()
    counts = outcome.counts
    print(
        f"{study.name}: ran {counts.done} trials ({counts.completed} completed, {counts.diverged} diverged, "
        f"{counts.stopped} stopped early, {counts.failed} failed), {outcome.skipped} already in the store, "
        f"{outcome.wall_s:.0f} s. Results: {store.dir}",
        file=sys.stderr,
    )
    print(store_line(store), file=sys.stderr)
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


def store_line(store: ResultsStore) -> str:
    """What the store holds now, counted from it: `store: 24 trials of the current definition (20
    completed, 4 diverged)`, and how many of older definitions it keeps."""
    trials = store.current_trials()
    statuses = trials["status"].value_counts().to_dict() if not trials.empty else {}
    parts = ", ".join(
        f"{statuses[s]} {s}" for s in ("completed", "diverged", "stopped", "failed") if s in statuses
    )
    line = f"store: {len(trials)} trials of the current definition" + (f" ({parts})" if parts else "")
    older = store.definition_counts()["older"]
    return line + (f"; {older} of older definitions kept, left out of analyses" if older else "")


def _print_best(store: ResultsStore) -> None:
    from sweeper import read_cache
    from sweeper.analysis import optimum_table
    from sweeper.display import json_text, print_best_table

    record = store.study_record()
    table = optimum_table(store.current_trials(), record)
    if table:
        read_cache.remember(store.dir, ("best", None), json_text(table))  # what `best --json` would compute
        print_best_table(table, record.scale_keys)
