"""What earlier runs left in the store, as the search strategies need it: an immutable value, built once
per run (`stored_results`). A strategy copies what it wants to extend."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sweeper.store import DONE_STATUSES, ResultsStore, plain
from sweeper.study import Study, group_key


@dataclass(frozen=True)
class Stored:
    # trial_id -> loss (the objective oriented for minimisation) of a trial not to run again
    losses: Mapping[str, float] = field(default_factory=dict)
    # (variant, group_key(scale point)) -> the settings of the swept keys stored there, in store order
    settings: Mapping[tuple, tuple[dict[str, Any], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "losses", MappingProxyType(dict(self.losses)))
        settings = {key: tuple(values) for key, values in self.settings.items()}
        object.__setattr__(self, "settings", MappingProxyType(settings))


def stored_results(store: ResultsStore, study: Study, rerun_failed: bool) -> Stored:
    """Losses of the trials not to run again (failed ones too, unless rerun_failed), and the swept
    settings seen per (variant, scale point)."""
    frame = store.trials()
    if frame.empty:
        return Stored()
    keep = DONE_STATUSES if rerun_failed else (*DONE_STATUSES, "failed")
    losses: dict[str, float] = {}
    settings: dict[tuple, list[dict[str, Any]]] = {}
    for row in frame.to_dict("records"):
        if row["status"] not in keep:
            continue
        losses[row["trial_id"]] = study.objective.loss(row.get("objective"))
        scale = {k: plain(row.get(k)) for k in study.scale_keys()}
        params = json.loads(row["swept"]) if row.get("swept") else {}
        seen = settings.setdefault((row["variant"], group_key(scale)), [])
        if params not in seen:
            seen.append(params)
    return Stored(losses, settings)
