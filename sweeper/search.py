"""Search strategies over a study's trials, independent of Ray: grid, Optuna, and an adaptive line search.

A strategy hands out trials (`next`) and learns their outcome (`observe`, as a loss to minimise, +inf for
a diverged or failed trial). `next` returns a TrialSpec to run now, WAIT when it needs results first, or
FINISHED. Trials already in the store are never handed out again: their stored outcome is used instead.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sweeper.analysis import pooled_sd, within_noise
from sweeper.study import Study, TrialSpec, trial_id

WAIT = None
FINISHED = "FINISHED"
MAX_REPEATS = 50  # a search space this small is exhausted: stop asking
NOISE_OCTAVES = 1.0  # adaptive: how far from the best a value within seed noise still gets extra seeds


@dataclass
class Stored:
    """What earlier runs left in the store, as strategies need it."""

    losses: dict[str, float] = field(default_factory=dict)  # trial_id -> loss of a trial not to run again
    settings: dict[tuple, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # (variant, point) -> swept values


def as_loss(objective: float | None, mode: str) -> float:
    """The value strategies minimise: +inf for a missing objective (diverged, failed)."""
    if objective is None or not math.isfinite(objective):
        return math.inf
    return objective if mode == "min" else -objective


class GridStrategy:
    def __init__(self, trials: list[TrialSpec], done: set[str]) -> None:
        self.planned = len(trials)
        self.pending = deque(t for t in trials if t.trial_id not in done)

    def next(self) -> TrialSpec | str | None:
        return self.pending.popleft() if self.pending else FINISHED

    def observe(self, spec: TrialSpec, loss: float) -> None:
        pass


class OptunaStrategy:
    """Per (variant, scale point), an Optuna study proposes `num_samples` settings of the swept keys; each
    setting runs once per seed and is told the mean loss over its seeds."""

    def __init__(self, study: Study, stored: Stored, inherited: dict[str, dict] | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study, self.stored, self.inherited = study, stored, inherited or {}
        self.known = dict(stored.losses)  # a copy: what this session learns is not "stored"
        self.distributions = {key: _distribution(spec) for key, spec in study.sweep.items()}
        self.groups: list[_OptunaGroup] = []
        for index, (variant, point) in enumerate(
            (v, p) for v in study.variants for p in study.scale_points()
        ):
            seed = study.search.seed * 1000 + index
            sampler = (
                optuna.samplers.RandomSampler(seed=seed)
                if study.search.sampler == "random"
                else optuna.samplers.TPESampler(seed=seed)
            )
            direction = "minimize" if study.objective.mode == "min" else "maximize"
            group = _OptunaGroup(variant, point, optuna.create_study(direction=direction, sampler=sampler))
            self.groups.append(group)
        self.planned = len(self.groups) * study.search.num_samples * len(study.seeds)
        self.queue: deque[TrialSpec] = deque()
        self.pending: dict[str, tuple[_OptunaGroup, Any, dict[str, float]]] = {}
        self._replay_store()

    def _specs(self, group: _OptunaGroup, params: dict[str, Any]) -> list[TrialSpec]:
        return [
            _spec(self.study, group.variant, group.point, params, seed, self.inherited.get(group.variant))
            for seed in self.study.seeds
        ]

    def _replay_store(self) -> None:
        """Settings whose seeds all finished in an earlier run are told to their group's Optuna study;
        settings with only some seeds finished are enqueued, so that their missing seeds run first."""
        import optuna

        for group in self.groups:
            for params in self.stored.settings.get((group.variant, group_key(group.point)), []):
                if not _within(params, self.distributions):
                    continue
                specs = self._specs(group, params)
                known = [s.trial_id in self.known for s in specs]
                if not all(known):
                    if any(known):
                        group.study.enqueue_trial(params)
                    continue
                value = _mean_loss([self.known[s.trial_id] for s in specs])
                objective = value if self.study.objective.mode == "min" else -value
                group.study.add_trial(
                    optuna.trial.create_trial(
                        params=params,
                        distributions=self.distributions,
                        value=objective if math.isfinite(objective) else _worst(self.study.objective.mode),
                    )
                )
                group.settings += 1

    def next(self) -> TrialSpec | str | None:
        from optuna.trial import TrialState

        while not self.queue:
            group = next(
                (
                    g
                    for g in self.groups
                    if g.settings < self.study.search.num_samples and g.repeats < MAX_REPEATS
                ),
                None,
            )
            if group is None:
                return FINISHED
            trial = group.study.ask(self.distributions)
            params = dict(trial.params)
            specs = self._specs(group, params)
            if all(spec.trial_id in self.known or spec.trial_id in self.pending for spec in specs):
                # A setting already done or running (a resumed sampler re-proposes its first points; a small
                # categorical space repeats): tell Optuna what is known and ask again. Not a new sample.
                group.repeats += 1
                group.told.add(trial.number)
                if all(spec.trial_id in self.known for spec in specs):
                    value = _mean_loss([self.known[spec.trial_id] for spec in specs])
                    objective = value if self.study.objective.mode == "min" else -value
                    group.study.tell(
                        trial, objective if math.isfinite(objective) else _worst(self.study.objective.mode)
                    )
                else:
                    group.study.tell(trial, state=TrialState.FAIL)
                continue
            group.repeats = 0
            group.settings += 1
            losses: dict[str, float] = {}
            for spec in specs:
                if spec.trial_id in self.known:
                    losses[spec.trial_id] = self.known[spec.trial_id]
                else:
                    self.queue.append(spec)
                self.pending[spec.trial_id] = (group, trial, losses)
            self._maybe_tell(group, trial, losses, len(specs))
        return self.queue.popleft()

    def observe(self, spec: TrialSpec, loss: float) -> None:
        self.known[spec.trial_id] = loss
        entry = self.pending.pop(spec.trial_id, None)
        if entry is None:
            return
        group, trial, losses = entry
        losses[spec.trial_id] = loss
        self._maybe_tell(group, trial, losses, len(self.study.seeds))

    def _maybe_tell(self, group: _OptunaGroup, trial: Any, losses: dict[str, float], n: int) -> None:
        if len(losses) < n or trial.number in group.told:
            return
        group.told.add(trial.number)
        value = _mean_loss(list(losses.values()))
        objective = value if self.study.objective.mode == "min" else -value
        group.study.tell(trial, objective if math.isfinite(objective) else _worst(self.study.objective.mode))


@dataclass
class _OptunaGroup:
    variant: str
    point: dict[str, Any]
    study: Any
    settings: int = 0
    repeats: int = 0  # proposals in a row that the store already had
    told: set[int] = field(default_factory=set)


def _worst(mode: str) -> float:
    # Optuna refuses inf: a diverged setting is reported as a very bad (but finite) value.
    return 1e9 if mode == "min" else -1e9


def _mean_loss(losses: list[float]) -> float:
    return math.inf if any(not math.isfinite(x) for x in losses) else sum(losses) / len(losses)


def _distribution(spec: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if spec.log2_grid is not None:
        lo, hi = spec.log2_grid
        return FloatDistribution(2.0**lo, 2.0**hi, log=True)
    if spec.loguniform is not None:
        return FloatDistribution(*spec.loguniform, log=True)
    if spec.uniform is not None:
        return FloatDistribution(*spec.uniform)
    return CategoricalDistribution(list(spec.values if spec.values is not None else spec.choice))


def _within(params: dict[str, Any], distributions: dict[str, Any]) -> bool:
    """Whether stored values fit the current search space (the spec may have changed since)."""
    if set(params) != set(distributions):
        return False
    for key, dist in distributions.items():
        value = params[key]
        if hasattr(dist, "choices"):
            if value not in dist.choices:
                return False
        elif not (isinstance(value, int | float) and dist.low <= value <= dist.high):
            return False
    return True


def group_key(point: dict[str, Any]) -> tuple:
    return tuple(sorted(point.items()))


def _spec(
    study: Study, variant: str, point: dict, params: dict, seed: int, inherited: dict | None
) -> TrialSpec:
    config = study.trial_config(variant, point, params, seed, inherited)
    return TrialSpec(
        trial_id=trial_id(config),
        variant=variant,
        scale=dict(point),
        params=dict(params),
        seed=seed,
        config=config,
    )


# --- adaptive: a scale-aware line search over one key in log2 ------------------------------------------


@dataclass
class LineSearch:
    """Octave steps out from a start until the loss rises on both sides (or the grid ends) and one octave
    beyond the better side, then one half- and one quarter-octave step from the best towards its better
    neighbour. Positions are log2 of the swept value; the result has quarter-octave resolution. Like any
    line search it assumes one basin; the extra octave guards against a noisy dip."""

    start: float
    lo: float
    hi: float
    evaluated: dict[float, float] = field(default_factory=dict)  # log2 value -> mean loss over seeds
    phase: str = "coarse"  # coarse -> half -> quarter -> done

    def wanted(self) -> list[float]:
        """Positions to evaluate next (all of them may run at once); [] when waiting or done."""
        best = self.best()
        if self.phase == "coarse":
            if best is None:
                return self._inside([self.start, self.start - 1, self.start + 1])
            coarse = sorted(k for k in self.evaluated if _is_coarse(k, self.start))
            if best == coarse[0] and best - 1 >= self.lo - 1e-9:
                return [best - 1]
            if best == coarse[-1] and best + 1 <= self.hi + 1e-9:
                return [best + 1]
            # Bracketed. Noise can make a dip look like the bottom: look one octave past the better
            # neighbour too before settling.
            probe = best + 2 * self._side(best)
            if probe not in self.evaluated and self._inside([probe]):
                return [probe]
            self.phase = "half"
        if self.phase == "half":
            todo = [k for k in self._inside([best + 0.5 * self._side(best)]) if k not in self.evaluated]
            if todo:
                return todo
            self.phase = "quarter"
            best = self.best()
        if self.phase == "quarter":
            todo = [k for k in self._inside([best + 0.25 * self._side(best)]) if k not in self.evaluated]
            if todo:
                return todo
            self.phase = "done"
        return []

    def _side(self, best: float) -> int:
        """+1 or -1: towards the better of the best point's nearest evaluated neighbours (where a
        parabola through the three would put its vertex)."""
        below = [k for k in self.evaluated if k < best]
        above = [k for k in self.evaluated if k > best]
        left = self.evaluated[max(below)] if below else math.inf
        right = self.evaluated[min(above)] if above else math.inf
        return 1 if right < left else -1

    def _inside(self, positions: list[float]) -> list[float]:
        return [k for k in positions if self.lo - 1e-9 <= k <= self.hi + 1e-9]

    def best(self) -> float | None:
        finite = {k: v for k, v in self.evaluated.items() if math.isfinite(v)}
        pool = finite or self.evaluated
        return min(pool, key=lambda k: (pool[k], k)) if pool else None

    @property
    def done(self) -> bool:
        return self.phase == "done"


def _is_coarse(k: float, start: float) -> bool:
    return abs((k - start) - round(k - start)) < 1e-9


def predict_start(previous: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Start of the next scale point's search: the optimum extrapolated from the smaller scales
    ((log2 scale, log2 optimum) pairs), on the octave grid from `lo`; the grid centre with no history."""
    if not previous:
        guess = (lo + hi) / 2
    elif len(previous) == 1 or len({x for x, _ in previous}) == 1:
        guess = previous[-1][1]
    else:
        n = len(previous)
        mx = sum(x for x, _ in previous) / n
        my = sum(y for _, y in previous) / n
        sxx = sum((x - mx) ** 2 for x, _ in previous)
        slope = sum((x - mx) * (y - my) for x, y in previous) / sxx
        next_x = previous[-1][0] + (previous[-1][0] - previous[-2][0])
        guess = my + slope * (next_x - mx)
    snapped = lo + round(guess - lo)
    return min(max(snapped, lo), lo + math.floor(hi - lo + 1e-9))


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
        inherited: dict[str, dict] | None = None,
        scale_value: Callable[[dict], float] | None = None,
    ) -> None:
        self.study, self.inherited = study, inherited or {}
        self.known = dict(stored.losses)  # a copy: what this session learns is not "stored"
        ((self.key, spec),) = study.sweep.items()
        self.lo, self.hi = spec.log2_grid
        self.points = study.scale_points()
        self.scale_value = scale_value or _default_scale_value
        self.extra = study.search.extra_seeds
        self.z = study.search.noise_z
        first_extra = max(study.seeds) + 1
        self.all_seeds = [*study.seeds, *range(first_extra, first_extra + self.extra)]
        self.state = {v: _VariantSearch() for v in study.variants}
        self.queue: deque[TrialSpec] = deque()
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

    def next(self) -> TrialSpec | str | None:
        if not self.queue:
            self._advance()
        if self.queue:
            return self.queue.popleft()
        return FINISHED if all(s.point_index >= len(self.points) for s in self.state.values()) else WAIT

    def observe(self, spec: TrialSpec, loss: float) -> None:
        entry = self.waiting.pop(spec.trial_id, None)
        if entry is None:
            return
        variant, position = entry
        index = self.state[variant].point_index
        self.losses.setdefault((variant, index, position), {})[spec.seed] = loss
        self._settle(variant, index, position)

    def optima(self) -> dict[str, list[tuple[dict, float]]]:
        """Per variant, (scale point, log2 optimum) found so far."""
        return {v: [(self.points[i], k) for i, k in s.optima] for v, s in self.state.items()}

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
            spec = _spec(self.study, variant, point, params, seed, self.inherited.get(variant))
            self.trials_used += 1
            self.extra_trials += seed not in self.study.seeds
            if spec.trial_id in self.known:
                self.losses.setdefault((variant, index, position), {})[seed] = self.known[spec.trial_id]
            else:
                self.waiting[spec.trial_id] = (variant, position)
                self.queue.append(spec)
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
            search.line.evaluated[position] = _mean_loss([losses[s] for s in sorted(losses)])


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


def make_strategy(study: Study, stored: Stored, inherited: dict[str, dict] | None = None):
    if study.search.method == "grid":
        return GridStrategy(study.grid_trials(inherited), set(stored.losses))
    if study.search.method == "optuna":
        return OptunaStrategy(study, stored, inherited)
    return AdaptiveStrategy(study, stored, inherited)
