"""`inherit:`: a study takes some trainer values from another study's optimum at that study's base (its
smallest) scale point, per variant. Resolved once, then bound into the Study (`Study.with_inherited`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweeper.analysis import optimum_table
from sweeper.errors import StudyError
from sweeper.record import StudyRecord
from sweeper.store import ResultsStore
from sweeper.study import Study


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
    record = source.study_record()
    table = optimum_table(trials, record)
    inherited: dict[str, dict[str, Any]] = {}
    for variant in study.variants:
        source_variant = study.inherit.variant or (variant if variant in record.variants else None)
        if source_variant is None and len(record.variants) == 1:
            source_variant = record.variants[0]
        rows = [r for r in table if r["variant"] == source_variant and r["objective"] is not None]
        if not rows:
            raise StudyError(
                f"{study.source}: inherit: study {study.inherit.study!r} has no finished optimum for variant "
                f"{source_variant or variant!r} (set inherit.variant to one of {record.variants})"
            )
        base = min(rows, key=lambda r: tuple(r[k] for k in record.scale_keys))  # the smallest scale point
        config = json.loads(_best_trial(trials, base, source_variant, record)["config"])
        missing = [key for key in study.inherit.keys if key not in config]
        if missing:  # a user's trainer has no defaults: its configs hold only the keys its study set
            raise StudyError(
                f"{study.source}: inherit.keys: the best trial of study {study.inherit.study!r} (variant "
                f"{source_variant!r}) has no key {missing[0]!r}; its config has {', '.join(sorted(config))}"
            )
        inherited[variant] = {key: config[key] for key in study.inherit.keys}
    return inherited


def bind_inherited(study: Study, results_root: Path) -> Study:
    """The study with its inherited values bound in (the study itself when it inherits nothing)."""
    inherited = resolve_inherit(study, results_root)
    return study.with_inherited(inherited) if inherited else study


def _best_trial(trials: Any, row: dict, variant: str, record: StudyRecord) -> dict:
    candidates = trials[(trials["variant"] == variant) & (trials["status"] == "completed")]
    for key in record.scale_keys:
        candidates = candidates[candidates[key] == row[key]]
    matching = candidates[candidates["swept"] == json.dumps(row["best"], sort_keys=True)]
    pool = matching if not matching.empty else candidates
    return pool.sort_values("objective", ascending=record.objective.mode == "min").iloc[0].to_dict()
