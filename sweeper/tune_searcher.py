"""A Ray Tune Searcher that hands out a search strategy's trials and feeds their outcomes back."""

from __future__ import annotations

import math

from ray.tune.search import Searcher

from sweeper.ledger import TrialLedger
from sweeper.objective import Objective
from sweeper.search import FINISHED, WAIT, Strategy
from sweeper.study import group_key
from sweeper.trainable import METRIC
from sweeper.user_trainer import UserTrainerSpec


class StudySearcher(Searcher):
    """suggest() hands out the strategy's next trial; on_trial_complete() tells it the trial's loss."""

    def __init__(
        self,
        strategy: Strategy,
        objective: Objective,
        threads: int,
        ledger: TrialLedger,
        trainer: UserTrainerSpec | None = None,
    ) -> None:
        super().__init__(metric=METRIC, mode="min")
        self.strategy, self.objective, self.threads, self.ledger = strategy, objective, threads, ledger
        self.trainer = trainer  # the user's trainer; None for the built-in GPT
        self.finished = False
        self.fatal: str | None = None  # the strategy raised: the run stops, the message says why

    def __getstate__(self) -> dict:
        # Tune pickles its searcher for Tuner.restore, which sweeper never uses: the store is the record.
        return {}

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.fatal is not None:
            return None
        try:
            trial = self.strategy.next()
        except Exception as err:  # validated before the run, so a bug: stop cleanly and say what
            self.fatal = f"the {type(self.strategy).__name__} search failed: {type(err).__name__}: {err}"
            return None
        if trial is FINISHED:
            self.finished = True
            return Searcher.FINISHED
        if trial is WAIT:
            return None
        self.ledger.issue(trial_id, trial)
        train_config = trial.config.model_dump(mode="json")
        if self.trainer is None and not train_config.get("threads"):
            train_config["threads"] = self.threads
        return {
            "train_config": train_config,
            "user_trainer": None if self.trainer is None else self.trainer.as_dict(),
            "trial_key": trial.trial_id,
            "group": repr((trial.variant, group_key(trial.scale))),
            "objective": self.objective.model_dump(),
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.ledger.observe(trial_id)
        if trial is None:
            return
        loss = math.inf
        if not error and result is not None and result.get("final"):
            loss = float(result.get(METRIC, math.inf))
        try:
            self.strategy.observe(trial, loss)
        except Exception as err:
            self.fatal = f"the {type(self.strategy).__name__} search failed: {type(err).__name__}: {err}"

    @property
    def complete(self) -> bool:
        """Every trial handed out, and every outcome learnt: the search has nothing left to do."""
        return self.finished and self.ledger.unobserved == 0
