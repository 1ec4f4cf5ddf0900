"""What a run has left, for the live display: how many trials the search will still hand out (its own
account, an estimate for an adaptive search) and how long they take.

A trial's time at a (variant, scale point) is the median of the trials measured there (the store's, then
this run's: finished_at - started_at); at a point with none yet, the nearest measured point's time scaled
by a cost proxy (tokens x the model's matmul size); with nothing measured, no ETA. The work left (trials
to hand out x their time, plus what the running trials still need) is divided by the trials that run at
once: the mean measured over this run once a trial has ended, the machine's concurrency before.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sweeper.store import DONE_STATUSES, ResultsStore, plain
from sweeper.study import Study, group_key

VOCAB_PROXY = 256  # the cost proxy's readout width: the built-in corpora's vocabularies are of this order


@dataclass(frozen=True)
class StoredState:
    """What the store held of the study's current definition when the run started, per (variant,
    group_key(scale point)): trials not to run again, the best so far, trial times."""

    counts: dict[tuple, int] = field(default_factory=dict)
    best: dict[tuple, tuple[float, dict]] = field(default_factory=dict)
    seconds: dict[tuple, list[float]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)  # trials per status, all points together

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def stored_state(store: ResultsStore, study: Study, not_again: Iterable[str]) -> StoredState:
    """The current definition's stored trials among `not_again` (the ids the run will not repeat)."""
    frame = store.current_trials()
    if frame.empty:
        return StoredState()
    keep = set(not_again)
    scale_keys = study.scale_keys()
    counts: dict[tuple, int] = {}
    best: dict[tuple, tuple[float, dict]] = {}
    seconds: dict[tuple, list[float]] = {}
    statuses: dict[str, int] = {}
    for row in frame.to_dict("records"):
        if row["trial_id"] not in keep:
            continue
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        key = (row["variant"], group_key({k: plain(row.get(k)) for k in scale_keys}))
        counts[key] = counts.get(key, 0) + 1
        objective = _number(row.get("objective"))
        if row["status"] == "completed" and objective is not None:
            loss = study.objective.loss(objective)
            if key not in best or loss < best[key][0]:
                params = json.loads(row["swept"]) if row.get("swept") else {}
                best[key] = (loss, {"objective": objective, **params})
        started, finished = _number(row.get("started_at")), _number(row.get("finished_at"))
        if row["status"] in DONE_STATUSES and started is not None and finished is not None:
            seconds.setdefault(key, []).append(finished - started)
    return StoredState(counts, best, seconds, statuses)


class Forecast:
    """Trials left and the time they take, updated as trials start and end (all on Tune's thread)."""

    def __init__(self, study: Study, strategy: Any, stored: StoredState, concurrency: int) -> None:
        self.study, self.strategy, self.concurrency = study, strategy, max(1, concurrency)
        self.seconds = {key: list(values) for key, values in stored.seconds.items()}
        self.running: dict[str, tuple[tuple, float]] = {}  # tune id -> (group, started)
        self.first_start: float | None = None
        self.busy_s = 0.0  # integral of trials running over time, this run
        self.last_event: float | None = None
        self.ended = 0
        self._costs: dict[tuple, float | None] = {}

    def started(self, tune_id: str, group: tuple, at: float) -> None:
        self._advance(at)
        self.first_start = at if self.first_start is None else self.first_start
        self.running[tune_id] = (group, at)

    def ended_trial(self, tune_id: str, at: float) -> None:
        self._advance(at)
        entry = self.running.pop(tune_id, None)
        if entry is not None:
            group, started = entry
            self.seconds.setdefault(group, []).append(at - started)
            self.ended += 1

    def _advance(self, at: float) -> None:
        if self.last_event is not None:
            self.busy_s += len(self.running) * max(at - self.last_event, 0.0)
        self.last_event = at

    def trial_seconds(self, group: tuple, measured: dict[tuple, float] | None = None) -> float | None:
        """A trial's time at this (variant, scale point): measured there, else scaled from the nearest
        measured point, else None. `measured`: each point's median, when the caller has them already."""
        measured = self._medians() if measured is None else measured
        if group in measured:
            return measured[group]
        if not measured:
            return None
        cost = self._cost(group)
        scaled = [(key, self._cost(key)) for key in measured]
        scaled = [(key, c) for key, c in scaled if c and cost]
        if not scaled:  # no proxy (a user's trainer): the typical trial
            return statistics.median(measured.values())
        nearest, nearest_cost = min(scaled, key=lambda kc: abs(math.log(kc[1] / cost)))
        return measured[nearest] * cost / nearest_cost

    def _medians(self) -> dict[tuple, float]:
        return {key: statistics.median(values) for key, values in self.seconds.items() if values}

    def at_once(self, now: float) -> float:
        """Trials running at a time: measured over this run once a trial has ended."""
        if self.ended and self.first_start is not None and now > self.first_start:
            busy = self.busy_s + len(self.running) * max(now - (self.last_event or now), 0.0)
            return min(max(busy / (now - self.first_start), 1.0), self.concurrency)
        return float(self.concurrency)

    def left(self, now: float | None = None) -> tuple[float, float | None]:
        """(trials left to finish, running ones included; seconds until they have, or None)."""
        now = time.time() if now is None else now
        unissued = {k: v for k, v in self.strategy.unissued().items() if v > 0}
        trials = sum(unissued.values()) + len(self.running)
        measured = self._medians()
        times = {
            g: self.trial_seconds(g, measured) for g in {*unissued, *(g for g, _ in self.running.values())}
        }
        if any(seconds is None for seconds in times.values()):
            return trials, None
        work = sum(n * times[group] for group, n in unissued.items())
        work += sum(max(times[group] - (now - started), 0.0) for group, started in self.running.values())
        parallel = min(self.at_once(now), max(trials, 1))
        return trials, work / parallel

    def _cost(self, group: tuple) -> float | None:
        if group not in self._costs:
            self._costs[group] = _trial_cost(self.study, group)
        return self._costs[group]


def _trial_cost(study: Study, group: tuple) -> float | None:
    """tokens x (12 depth width^2 + 2 width VOCAB_PROXY): a trial's matmul work up to a constant, for the
    built-in GPT; None for a user's trainer."""
    variant, point = group
    try:
        config = study.trial_config(variant, dict(point), study.probe_params(), study.seeds[0])
    except Exception:  # a point that no longer builds: no proxy
        return None
    needed = ("width", "depth", "batch_size", "seq_len", "total_steps")
    if not all(hasattr(config, name) for name in needed):
        return None
    tokens = config.total_steps * config.batch_size * config.seq_len
    return tokens * (12 * config.depth * config.width**2 + 2 * config.width * VOCAB_PROXY)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
