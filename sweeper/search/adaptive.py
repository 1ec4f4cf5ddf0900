"""Adaptive search: per variant, a line search per scale point in order, each starting where the smaller
points predict the optimum, then extra seeds where values are within seed noise of the best."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sweeper.analysis import pooled_sd, within_noise
from sweeper.objective import seed_mean
from sweeper.search.line_search import LineSearch, predict_start
from sweeper.search.protocol import FINISHED, WAIT
from sweeper.stored import Stored
from sweeper.study import PlannedTrial, Study, group_key

NOISE_OCTAVES = 1.0  # how far from the best a value within seed noise still gets extra seeds


class AdaptiveStrategy:
    """Per variant, scale points in order; each point's line search starts where the smaller points predict
    the optimum. Variants run side by side; within a variant, one scale point at a time.

    With `search.extra_seeds` > 0, a point's line search (on the study's seeds) is followed by noise
    rounds. Extra seeds are ordinary seeds numbered after the study's, at most `extra_seeds` of them at one
    value. They go first to the best value (a noise probe), then to every value within NOISE_OCTAVES of the
    best whose mean is within noise of the best's: within `noise_z` standard errors, with the seed sd pooled
    over the variant's values that have two or more seeds. The best is re-picked by seed mean (looking one
    octave past it when it ends up at the end of what was evaluated), until no value within noise can get
    more seeds. The optimum handed to the next point is that seed-mean best."""

    def __init__(
        self,
        study: Study,
        stored: Stored,
        scale_value: Callable[[dict], float] | None = None,
    ) -> None:
        self.study = study
        self.known = stored.losses
        ((self.key, spec),) = study.sweep.items()
        self.lo, self.hi = spec.log2_grid
        self.points = study.scale_points()
        self.scale_value = scale_value or _default_scale_value
        self.extra = study.search.extra_seeds
        self.z = study.search.noise_z
        first_extra = max(study.seeds) + 1
        self.all_seeds = [*study.seeds, *range(first_extra, first_extra + self.extra)]
        self.state = {v: _VariantSearch() for v in study.variants}
        self.queue: deque[PlannedTrial] = deque()
        self.waiting: dict[str, tuple[str, float]] = {}  # trial_id -> (variant, position)
        self.losses: dict[tuple[str, int, float], dict[int, float]] = {}  # -> seed -> loss
        self.trials_used = 0  # every trial the search asked for, stored ones included
        self.extra_trials = 0  # of which at the extra seeds
        self.planned = None

    def grid_size(self, step: float | None = None) -> int:
        """Trials of a full grid over the same range, on the study's seeds: at the spec's step, or at
        `step` octaves."""
        spec = self.study.sweep[self.key]
        n = len(spec.grid()) if step is None else math.floor((self.hi - self.lo) / step + 1e-9) + 1
        return len(self.study.variants) * len(self.points) * len(self.study.seeds) * n

    def next(self) -> PlannedTrial | str | None:
        if not self.queue:
            self._advance()
        if self.queue:
            return self.queue.popleft()
        return FINISHED if all(s.point_index >= len(self.points) for s in self.state.values()) else WAIT

    def observe(self, trial: PlannedTrial, loss: float) -> None:
        entry = self.waiting.pop(trial.trial_id, None)
        if entry is None:
            return
        variant, position = entry
        index = self.state[variant].point_index
        self.losses.setdefault((variant, index, position), {})[trial.seed] = loss
        self._settle(variant, index, position)

    def optima(self) -> dict[str, list[tuple[dict, float]]]:
        """Per variant, (scale point, log2 optimum) found so far."""
        return {v: [(self.points[i], k) for i, k in s.optima] for v, s in self.state.items()}

    def unissued(self) -> dict[tuple, float]:
        """An estimate of the trials not handed out yet, per (variant, group_key(scale point)), from the
        search's state: the queued ones, and at each point not finished the trials a point takes (as
        measured at the points finished so far, over every variant; `estimate.adaptive_trials` before
        any) less those handed out there already."""
        per_point = self._trials_per_point()
        left: dict[tuple, float] = {}
        for variant, search in self.state.items():
            handed = sum(
                len(seeds)
                for (v, i, _), seeds in self.losses.items()
                if v == variant and i == search.point_index
            ) + sum(1 for v, _ in self.waiting.values() if v == variant)
            queued = sum(1 for t in self.queue if t.variant == variant)
            for index in range(search.point_index, len(self.points)):
                guess = max(per_point - handed, 0.0) + queued if index == search.point_index else per_point
                left[(variant, group_key(self.points[index]))] = guess
        return left

    def _trials_per_point(self) -> float:
        finished = [(v, i) for v, s in self.state.items() for i in range(s.point_index)]
        if not finished:
            from sweeper.estimate import adaptive_trials

            return adaptive_trials(self.study)
        done = set(finished)
        used = sum(len(seeds) for (v, i, _), seeds in self.losses.items() if (v, i) in done)
        return used / len(finished)

    def seed_counts(self, variant: str, index: int) -> dict[float, int]:
        """log2 value -> seeds evaluated there, at one scale point of a variant."""
        return {k: len(seeds) for (v, i, k), seeds in self.losses.items() if v == variant and i == index}

    # --- internals ---
    def _advance(self) -> None:
        for variant, search in self.state.items():
            while search.point_index < len(self.points):
                if search.line is None:
                    history = [(math.log2(self.scale_value(self.points[i])), k) for i, k in search.optima]
                    search.line = LineSearch(
                        start=predict_start(history, self.lo, self.hi), lo=self.lo, hi=self.hi
                    )
                if not search.line.done:
                    wanted = [k for k in search.line.wanted() if k not in search.in_flight]
                    for position in wanted:
                        self._launch(variant, search, position, list(self.study.seeds))
                    if not search.line.done or search.in_flight:
                        if wanted and not search.in_flight:
                            continue  # every wanted point was in the store already: decide again
                        break
                if search.in_flight:
                    break
                more = self._noise_round(variant, search)
                for position, seeds in more:
                    self._launch(variant, search, position, seeds)
                if more:
                    if search.in_flight:
                        break
                    continue
                search.optima.append((search.point_index, search.line.best()))
                search.point_index += 1
                search.line = None
                search.expected = {}

    def _noise_round(self, variant: str, search: _VariantSearch) -> list[tuple[float, list[int]]]:
        """(position, seeds) to run next at the current point once its line search is done; [] when the
        point is done."""
        line = search.line
        finite = {k: v for k, v in line.evaluated.items() if math.isfinite(v)}
        if not self.extra or not finite:
            return []
        best = line.best()
        beyond = self._beyond(best, line)
        if beyond is not None:
            return [(beyond, list(self.study.seeds))]
        index = search.point_index
        seeds_at = {k: self.losses.get((variant, index, k), {}) for k in line.evaluated}

        def missing(k: float) -> list[int]:
            return [s for s in self.all_seeds if s not in seeds_at[k]]

        if missing(best):
            return [(best, missing(best))]
        sd, _ = pooled_sd(
            [losses[s] for s in sorted(losses)] for (v, _, _), losses in self.losses.items() if v == variant
        )
        if sd is None:
            return []
        n_best = len(seeds_at[best])
        return [
            (k, missing(k))
            for k, mean in sorted(finite.items())
            if k != best
            and abs(k - best) <= NOISE_OCTAVES + 1e-9
            and missing(k)
            and within_noise(mean, len(seeds_at[k]), finite[best], n_best, sd, self.z)
        ]

    def _beyond(self, best: float, line: LineSearch) -> float | None:
        """One octave (or to the grid's end) past a best at the end of the evaluated values, if the grid
        goes on."""
        if best <= min(line.evaluated) and best > self.lo + 1e-9:
            return max(best - 1, self.lo)
        if best >= max(line.evaluated) and best < self.hi - 1e-9:
            return min(best + 1, self.hi)
        return None

    def _launch(self, variant: str, search: _VariantSearch, position: float, seeds: list[int]) -> None:
        search.in_flight.add(position)
        search.expected.setdefault(position, set()).update(seeds)
        index = search.point_index
        point = self.points[index]
        params = {self.key: 2.0**position}
        for seed in seeds:
            trial = self.study.planned_trial(variant, point, params, seed)
            self.trials_used += 1
            self.extra_trials += seed not in self.study.seeds
            if trial.trial_id in self.known:
                self.losses.setdefault((variant, index, position), {})[seed] = self.known[trial.trial_id]
            else:
                self.waiting[trial.trial_id] = (variant, position)
                self.queue.append(trial)
        self._settle(variant, index, position)

    def _settle(self, variant: str, index: int, position: float) -> None:
        losses = self.losses.get((variant, index, position), {})
        search = self.state[variant]
        if (
            position in search.in_flight
            and search.point_index == index
            and search.expected[position] <= losses.keys()
        ):
            search.in_flight.discard(position)
            # In seed order, so that a resumed search computes the very same means and decisions.
            search.line.evaluated[position] = seed_mean([losses[s] for s in sorted(losses)])


@dataclass
class _VariantSearch:
    point_index: int = 0
    line: LineSearch | None = None
    in_flight: set[float] = field(default_factory=set)
    expected: dict[float, set[int]] = field(default_factory=dict)  # position -> seeds launched there
    optima: list[tuple[int, float]] = field(default_factory=list)


def _default_scale_value(point: dict[str, Any]) -> float:
    """The scale of a point for extrapolation: the product of its numeric values (one axis: that value)."""
    value = 1.0
    for v in point.values():
        if isinstance(v, int | float) and v > 0:
            value *= v
    return value
