"""`sweeper run`: load a study, work out what the store lacks, run it on Ray, report. Heavy imports inside."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from sweeper.analysis import optimum_table
from sweeper.store import ResultsStore
from sweeper.study import Study, StudyError, load_study

INTERRUPTED = 130


def study_spec_record(
    study: Study, planned: int | None, fingerprints: dict[str, str] | None = None
) -> dict[str, Any]:
    """What the store keeps of the spec: enough for `status`, `best` and the analysis without the YAML."""
    return {
        "name": study.name,
        "description": study.description,
        "source": str(getattr(study, "source", "")),
        "scale_keys": study.scale_keys(),
        "swept_keys": study.swept_keys(),
        "variants": list(study.variants),
        "seeds": list(study.seeds),
        "search": study.search.model_dump(),
        "objective": study.objective.model_dump(),
        "planned": planned,
        "fingerprints": fingerprints or {},
        "spec": study.model_dump(mode="json", exclude={"source"}),
    }


def planned_trials(study: Study) -> int | None:
    if study.search.method == "grid":
        return None  # counted from the expanded grid by the caller
    if study.search.method == "optuna":
        return len(study.variants) * len(study.scale_points()) * study.search.num_samples * len(study.seeds)
    return None  # adaptive: decided as it goes


def resolve_inherit(study: Study, results_root: Path) -> dict[str, dict[str, Any]]:
    """Per variant, the best values of the inherited keys from the other study at its base scale point."""
    if study.inherit is None:
        return {}
    source = ResultsStore(results_root, study.inherit.study)
    trials = source.current_trials()
    if trials.empty:
        raise StudyError(
            f"{study.source}: inherit.study: no results for study {study.inherit.study!r} under {results_root}; "
            "run it first"
        )
    spec = source.spec()
    table = optimum_table(trials, spec)
    inherited: dict[str, dict[str, Any]] = {}
    for variant in study.variants:
        source_variant = study.inherit.variant or (variant if variant in spec.get("variants", []) else None)
        if source_variant is None and len(spec.get("variants", [])) == 1:
            source_variant = spec["variants"][0]
        rows = [r for r in table if r["variant"] == source_variant and r["objective"] is not None]
        if not rows:
            raise StudyError(
                f"{study.source}: inherit: study {study.inherit.study!r} has no finished optimum for variant "
                f"{source_variant or variant!r} (set inherit.variant to one of {spec.get('variants')})"
            )
        scale_keys = spec.get("scale_keys", [])
        base = min(rows, key=lambda r: tuple(r[k] for k in scale_keys))  # the base: the smallest scale point
        best_trial = _best_trial(trials, base, source_variant, spec)
        config = json.loads(best_trial["config"])
        inherited[variant] = {key: config[key] for key in study.inherit.keys}
    return inherited


def _best_trial(trials: Any, row: dict, variant: str, spec: dict) -> dict:
    candidates = trials[(trials["variant"] == variant) & (trials["status"] == "completed")]
    for key in spec.get("scale_keys", []):
        candidates = candidates[candidates[key] == row[key]]
    swept = json.dumps(row["best"], sort_keys=True)
    matching = candidates[candidates["swept"] == swept]
    ascending = spec.get("objective", {}).get("mode", "min") == "min"
    pool = matching if not matching.empty else candidates
    return pool.sort_values("objective", ascending=ascending).iloc[0].to_dict()


def dry_run(
    study: Study,
    store: ResultsStore,
    inherited: dict,
    rerun_failed: bool,
    max_concurrent: int | None = None,
    estimate: bool = True,
) -> None:
    """The plan per (variant, scale point), what the store has, and how long the rest takes here."""
    from rich.table import Table

    from sweeper.display import stdout_console
    from sweeper.estimate import EstimateUnavailable, estimate_study, format_duration, plan_rows

    console = stdout_console()
    console.print(f"[bold]{study.name}[/]: {study.description.strip()}")
    console.print(
        f"search {study.search.method}, objective {study.objective.use} {study.objective.metric} "
        f"({study.objective.mode}), seeds {study.seeds}, resources {study.resources.model_dump()}"
    )
    rows = plan_rows(study, inherited, store, rerun_failed)
    measure, estimate, why = estimate, None, "not asked for (--no-estimate)"
    try:
        if measure:
            estimate = estimate_study(
                study,
                inherited,
                store,
                rerun_failed,
                max_concurrent=max_concurrent,
                progress=_note,
                rows=rows,
            )
    except EstimateUnavailable as err:
        why = str(err)
    except KeyboardInterrupt:
        why = "the measurement was interrupted (the shapes it finished are cached)"
    table = Table(title="plan")
    for name in ("variant", "scale point", "trials", "in store", "to run"):
        table.add_column(name, justify="left" if name in ("variant", "scale point") else "right")
    if estimate is not None:
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
        if estimate is not None:
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
    if estimate is not None:
        totals += ["", format_duration(estimate.trial_s)]
    table.add_row(*totals)
    console.print(table)
    if inherited:
        console.print(f"inherited from {study.inherit.study}: {inherited}")
    if study.search.method == "adaptive":
        from sweeper.estimate import adaptive_trials

        console.print(
            f"adaptive search: the trial counts are a guess, {adaptive_trials(study):g} per variant and scale "
            "point (sweeper/estimate.py says why); the search decides as it goes"
        )
    if estimate is None:
        console.print(f"no time estimate: {why}")
        return
    if study.early_stop is not None:
        console.print("early stopping ends some trials sooner: the times assume every trial runs to its end")
    if estimate.busy is not None:
        console.print(
            f"note: measured while the machine was busy (load {estimate.busy:.1f} per core), so the times "
            "run long; SWEEPER_REMEASURE=1 measures again"
        )
    console.print(estimate.summary())


def _count(n: float, approximate: bool) -> str:
    return f"about {round(n)}" if approximate and n else str(round(n))


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


PREFLIGHT_FAILED = 1


def preflight(study: Study, store: ResultsStore, inherited: dict, force: bool) -> bool:
    """Coordinate check of every width-relative variant over the study's widths, before anything runs.

    Classic SP (no `alignment`) is left out: its activations grow with width by design. The result goes to
    the store (coord_check.json, coord_check.png, shown by `sweeper report`). Returns whether to go on.
    """
    from trainers.coord_check import run_coord_check

    widths = sorted({p["width"] for p in study.scale_points() if "width" in p})
    if len(widths) < 2:
        raise StudyError(f"{study.source}: preflight: coord_check needs a width axis with two or more values")
    probe = study.probe_params()
    checked, failures = [], []
    for variant in study.variants:
        config = study.trial_config(
            variant, study.scale_points()[0], probe, study.seeds[0], inherited.get(variant)
        )
        if config.parameterization == "sp" and config.alignment is None:
            continue
        print(f"preflight: coordinate check of {variant} over widths {widths}", file=sys.stderr)
        result = run_coord_check(config.with_updates(threads=1), widths, steps=5, seeds=2)
        checked.append((variant, result))
        if not result.passed:
            modules = sorted({s["module"] for s in result.failing()})
            failures.append(f"{variant}: {', '.join(modules)} change with width")
    if checked:
        from sweeper.plots import plot_coord_check
        from sweeper.store import atomic_write_text

        store.dir.mkdir(parents=True, exist_ok=True)
        plot_coord_check(checked, store.dir / "coord_check.png")
        atomic_write_text(
            store.dir / "coord_check.json", json.dumps({v: r.as_json() for v, r in checked}, indent=1) + "\n"
        )
    if failures:
        verdict = "going on anyway (--force)" if force else "stopping; rerun with --force to run anyway"
        print(
            f"preflight coordinate check failed: {'; '.join(failures)}. Figure: {store.dir / 'coord_check.png'}. "
            f"{verdict}",
            file=sys.stderr,
        )
        return force
    return True


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
    study = load_study(path)
    store = ResultsStore(results_root, study.name)
    try:
        inherited = resolve_inherit(study, results_root)
    except StudyError as err:
        if not dry:
            raise
        print(f"note: {err}; the plan below uses the study's own values", file=sys.stderr)
        inherited = {}
    if study.search.method == "grid":
        grid = study.grid_trials(inherited)  # validates every config before anything runs
        planned = len(grid)
    else:
        planned = planned_trials(study)
    if dry:
        dry_run(study, store, inherited, rerun_failed, max_concurrent=max_concurrent, estimate=estimate)
        return 0

    if study.preflight == "coord_check" and not preflight(study, store, inherited, force):
        return PREFLIGHT_FAILED

    from trainers.data import load_corpus

    for corpus in _corpora(study, inherited):
        load_corpus(corpus)  # build the corpus cache once, before parallel trials race for it
    store.dir.mkdir(parents=True, exist_ok=True)
    fingerprints = study.variant_fingerprints(inherited)
    store.write_spec(study_spec_record(study, planned, fingerprints))

    from sweeper import runner
    from sweeper.display import StudyDisplay, print_best_table

    stored = runner.stored_results(store, study, rerun_failed)
    if nothing_to_run(study, runner.stored_results(store, study, rerun_failed), inherited):
        print(f"{study.name}: every trial the study needs is in {store.dir}; nothing to run", file=sys.stderr)
        table = optimum_table(store.current_trials(), store.spec())
        if table:
            print_best_table(table, study.scale_keys())
        return 0
    tracker = _tracker(study, store, no_wandb)
    temp_dir = runner.start_ray(store.dir, address, study)
    outcome = None
    try:
        with StudyDisplay(study, planned, len(stored.losses) if planned else 0) as display:
            outcome = runner.run_study(
                study,
                store,
                stored,
                address=address,
                max_concurrent=max_concurrent,
                tracker=tracker,
                inherited=inherited,
                fingerprints=fingerprints,
                on_change=lambda rec: rec is not None and display.update(rec),
            )
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop_ray(temp_dir)
        if tracker is not None:
            tracker.close()

    store = ResultsStore(results_root, study.name)  # re-read: trust the store, not Ray
    table = optimum_table(store.current_trials(), store.spec())
    if table:
        print_best_table(table, study.scale_keys())
    if outcome is None or not outcome.complete:
        command = " ".join(shlex.quote(a) for a in (argv or ["sweeper", "run", str(path)]))
        statuses = store.statuses()
        print(
            f"interrupted: {len(statuses)} finished trials are in {store.dir}; resume with the same command:\n"
            f"  {command}",
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
        grid = strategy.grid_size()
        line = strategy.trials_used - strategy.extra_trials
        print(
            f"adaptive search: {strategy.trials_used} trials ({line} for the line search, "
            f"{strategy.extra_trials} at extra seeds where values were within noise); the full grid on the "
            f"study's seeds has {grid}",
            file=sys.stderr,
        )
    return 0


def nothing_to_run(study: Study, stored: Any, inherited: dict) -> bool:
    """Whether the search would hand out no trial at all (asked of a throwaway strategy), so that a
    finished study answers at once instead of starting Ray."""
    from sweeper.search import FINISHED, make_strategy

    return make_strategy(study, stored, inherited).next() is FINISHED


def _corpora(study: Study, inherited: dict) -> set[str]:
    return {
        study.trial_config(v, p, {}, study.seeds[0], inherited.get(v)).corpus
        for v in study.variants
        for p in study.scale_points()[:1]
    }


def _tracker(study: Study, store: ResultsStore, no_wandb: bool) -> Any:
    if no_wandb or study.wandb.mode == "disabled":
        return None
    from sweeper.tracking import Tracker, WandbSettings

    settings = WandbSettings(
        project=study.wandb.project, entity=study.wandb.entity, mode=study.wandb.mode, dir=store.dir
    )
    return Tracker(settings, study.name)
