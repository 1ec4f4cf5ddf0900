"""`preflight: coord_check`: before a study runs, a coordinate check of every width-relative variant over
the study's widths (activations that grow with width mean the parameterization is wired wrong)."""

from __future__ import annotations

import json
import sys

from sweeper.errors import StudyError
from sweeper.store import ResultsStore
from sweeper.study import Study
from trainers.atomic import atomic_write_text

PREFLIGHT_FAILED = 1  # the exit status of `sweeper run` when the check fails (without --force)


def preflight(study: Study, store: ResultsStore, force: bool) -> bool:
    """Run the check; returns whether to go on.

    Classic SP (no `alignment`) is left out: its activations grow with width by design. The result goes to
    the store (coord_check.json, coord_check.png, shown by `sweeper report`).
    """
    from trainers.coord_check import run_coord_check

    widths = sorted({p["width"] for p in study.scale_points() if "width" in p})
    if len(widths) < 2:
        raise StudyError(f"{study.source}: preflight: coord_check needs a width axis with two or more values")
    probe = study.probe_params()
    checked, failures = [], []
    for variant in study.variants:
        config = study.trial_config(variant, study.scale_points()[0], probe, study.seeds[0])
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
