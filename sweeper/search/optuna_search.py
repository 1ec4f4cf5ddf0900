"""Optuna search: per (variant, scale point), an Optuna sampler (TPE or random) proposes settings of the
swept keys; each setting runs once per seed and Optuna is told the seed-mean loss."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sweeper.objective import seed_mean
from sweeper.search.protocol import FINISHED, group_key
from sweeper.stored import Stored
from sweeper.study import PlannedTrial, Study

MAX_REPEATS = 50  # a search space this small is exhausted: stop asking
WORST = 1e9  # Optuna refuses inf: a diverged setting is told this very bad (but finite) loss


class OptunaStrategy:
    """Per (variant, scale point), an Optuna study proposes `num_samples` settings of the swept keys; each
    setting runs once per seed and is told the mean loss over its seeds."""

    def __init__(self, study: Study, stored: Stored) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study, self.stored = study, stored
        self.known = dict(stored.losses)  # what this session learns joins what the store had
        self.distributions = {key: _distribution(sweep) for key, sweep in study.sweep.items()}
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
            # Told losses (the objective oriented for minimisation), so every study minimises.
            group = _OptunaGroup(variant, point, optuna.create_study(direction="minimize", sampler=sampler))
            self.groups.append(group)
        self.planned = len(self.groups) * study.search.num_samples * len(study.seeds)
        self.queue: deque[PlannedTrial] = deque()
        self.pending: dict[str, tuple[_OptunaGroup, Any, dict[str, float]]] = {}
        self._replay_store()

    def _trials(self, group: _OptunaGroup, params: dict[str, Any]) -> list[PlannedTrial]:
        return [
            self.study.planned_trial(group.variant, group.point, params, seed) for seed in self.study.seeds
        ]

    def _replay_store(self) -> None:
        """Settings whose seeds all finished in an earlier run are told to their group's Optuna study;
        settings with only some seeds finished are enqueued, so that their missing seeds run first."""
        import optuna

        for group in self.groups:
            for params in self.stored.settings.get((group.variant, group_key(group.point)), []):
                if not _within(params, self.distributions):
                    continue
                trials = self._trials(group, params)
                known = [s.trial_id in self.known for s in trials]
                if not all(known):
                    if any(known):
                        group.study.enqueue_trial(params)
                    continue
                group.study.add_trial(
                    optuna.trial.create_trial(
                        params=params,
                        distributions=self.distributions,
                        value=_told(seed_mean([self.known[s.trial_id] for s in trials])),
                    )
                )
                group.settings += 1

    def next(self) -> PlannedTrial | str | None:
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
            trials = self._trials(group, params)
            if all(planned.trial_id in self.known or planned.trial_id in self.pending for planned in trials):
                # A setting already done or running (a resumed sampler re-proposes its first points; a small
                # categorical space repeats): tell Optuna what is known and ask again. Not a new sample.
                group.repeats += 1
                group.told.add(trial.number)
                if all(planned.trial_id in self.known for planned in trials):
                    group.study.tell(
                        trial, _told(seed_mean([self.known[planned.trial_id] for planned in trials]))
                    )
                else:
                    group.study.tell(trial, state=TrialState.FAIL)
                continue
            group.repeats = 0
            group.settings += 1
            losses: dict[str, float] = {}
            for planned in trials:
                if planned.trial_id in self.known:
                    losses[planned.trial_id] = self.known[planned.trial_id]
                else:
                    self.queue.append(planned)
                self.pending[planned.trial_id] = (group, trial, losses)
            self._maybe_tell(group, trial, losses, len(trials))
        return self.queue.popleft()

    def unissued(self) -> dict[tuple, float]:
        """Trials not handed out yet, per (variant, group_key(scale point)): the settings Optuna has still
        to propose, on every seed, and the queued trials of settings proposed already."""
        left: dict[tuple, float] = {}
        seeds = len(self.study.seeds)
        for group in self.groups:
            more = 0 if group.repeats >= MAX_REPEATS else self.study.search.num_samples - group.settings
            left[(group.variant, group_key(group.point))] = max(more, 0) * seeds
        for planned in self.queue:
            key = (planned.variant, group_key(planned.scale))
            left[key] = left.get(key, 0) + 1
        return left

    def observe(self, trial: PlannedTrial, loss: float) -> None:
        self.known[trial.trial_id] = loss
        entry = self.pending.pop(trial.trial_id, None)
        if entry is None:
            return
        group, optuna_trial, losses = entry
        losses[trial.trial_id] = loss
        self._maybe_tell(group, optuna_trial, losses, len(self.study.seeds))

    def _maybe_tell(self, group: _OptunaGroup, trial: Any, losses: dict[str, float], n: int) -> None:
        if len(losses) < n or trial.number in group.told:
            return
        group.told.add(trial.number)
        group.study.tell(trial, _told(seed_mean(list(losses.values()))))


@dataclass
class _OptunaGroup:
    variant: str
    point: dict[str, Any]
    study: Any
    settings: int = 0
    repeats: int = 0  # proposals in a row that the store already had
    told: set[int] = field(default_factory=set)


def _told(loss: float) -> float:
    return loss if math.isfinite(loss) else WORST


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
