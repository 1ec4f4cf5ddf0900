"""`sweeper run --dry-run`: the plan per (variant, scale point), what the store has, and how long the rest
takes on this machine (measured by `sweeper.estimate`)."""

from __future__ import annotations

import sys

from sweeper.store import ResultsStore
from sweeper.study import Study


def print_plan(
    study: Study,
    store: ResultsStore,
    rerun_failed: bool,
    max_concurrent: int | None = None,
    estimate: bool = True,
) -> None:
    """Print the plan of `study` (inherited values bound, when it has them) to stdout."""
    from rich.table import Table

    from sweeper.display import stdout_console
    from sweeper.estimate import (
        EstimateUnavailable,
        adaptive_trials,
        estimate_study,
        format_duration,
        plan_rows,
    )

    console = stdout_console()
    console.print(f"[bold]{study.name}[/]: {study.description.strip()}")
    console.print(
        f"search {study.search.method}, objective {study.objective.use} {study.objective.metric} "
        f"({study.objective.mode}), seeds {study.seeds}, resources {study.resources.model_dump()}"
    )
    rows = plan_rows(study, store, rerun_failed)
    measured, why = None, "not asked for (--no-estimate)"
    try:
        if estimate:
            measured = estimate_study(
                study, store, rerun_failed, max_concurrent=max_concurrent, progress=_note, rows=rows
            )
    except EstimateUnavailable as err:
        why = str(err)
    except KeyboardInterrupt:
        why = "the measurement was interrupted (the shapes it finished are cached)"
    table = Table(title="plan")
    for name in ("variant", "scale point", "trials", "in store", "to run"):
        table.add_column(name, justify="left" if name in ("variant", "scale point") else "right")
    if measured is not None:
        table.add_column("est. per trial", justify="right")
        table.add_column("est. time", justify="right")
    for row in rows:
        cells = [
            row.variant,
            ", ".join(f"{k}={v}" for k, v in row.point.items()),
            _count(row.planned, row.approximate),
            str(row.in_store),
            _count(row.to_run, row.approximate),
        ]
        if measured is not None:
            cells += [
                "-" if row.per_trial_s is None else format_duration(row.per_trial_s),
                format_duration(row.total_s or 0.0) if row.to_run else "-",
            ]
        table.add_row(*cells)
    approximate = any(r.approximate for r in rows)
    totals = [
        "[bold]all",
        "",
        _count(sum(r.planned for r in rows), approximate),
        str(sum(r.in_store for r in rows)),
        _count(sum(r.to_run for r in rows), approximate),
    ]
    if measured is not None:
        totals += ["", format_duration(measured.trial_s)]
    table.add_row(*totals)
    console.print(table)
    if study.inherited:
        console.print(f"inherited from {study.inherit.study}: {study.inherited}")
    if study.search.method == "adaptive":
        console.print(
            f"adaptive search: the trial counts are a guess, {adaptive_trials(study):g} per variant and scale "
            "point (sweeper/estimate.py says why); the search decides as it goes"
        )
    if measured is None:
        console.print(f"no time estimate: {why}")
        return
    if study.early_stop is not None:
        console.print("early stopping ends some trials sooner: the times assume every trial runs to its end")
    if measured.busy is not None:
        console.print(
            f"note: measured while the machine was busy (load {measured.busy:.1f} per core), so the times "
            "run long; SWEEPER_REMEASURE=1 measures again"
        )
    console.print(measured.summary())


def _count(n: float, approximate: bool) -> str:
    return f"about {round(n)}" if approximate and n else str(round(n))


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
