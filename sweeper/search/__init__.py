"""Search strategies over a study's trials, independent of Ray: grid, Optuna, and an adaptive line search.

Each follows `protocol.Strategy` (next / observe). A new strategy goes in its own module here, with a
`search.method` value in `sweeper.study.SearchSpec` and a branch in `make_strategy`.
"""

from __future__ import annotations

from sweeper.search.adaptive import AdaptiveStrategy
from sweeper.search.grid import GridStrategy
from sweeper.search.line_search import LineSearch, predict_start
from sweeper.search.optuna_search import OptunaStrategy
from sweeper.search.protocol import FINISHED, WAIT, Strategy, group_key
from sweeper.stored import Stored
from sweeper.study import Study

__all__ = [
    "FINISHED",
    "WAIT",
    "AdaptiveStrategy",
    "GridStrategy",
    "LineSearch",
    "OptunaStrategy",
    "Stored",
    "Strategy",
    "group_key",
    "make_strategy",
    "predict_start",
]


def make_strategy(study: Study, stored: Stored) -> Strategy:
    """The strategy of `study.search.method`, over a study with its inherited values bound."""
    if study.search.method == "grid":
        return GridStrategy(study.grid_trials(), set(stored.losses))
    if study.search.method == "optuna":
        return OptunaStrategy(study, stored)
    return AdaptiveStrategy(study, stored)
