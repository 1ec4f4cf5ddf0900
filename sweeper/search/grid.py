"""Grid search: every trial of variant x scale point x seed x sweep grid, in that order."""

from __future__ import annotations

from collections import Counter, deque

from sweeper.search.protocol import FINISHED
from sweeper.study import PlannedTrial, group_key


class GridStrategy:
    def __init__(self, trials: list[PlannedTrial], done: set[str]) -> None:
        self.planned = len(trials)
        self.pending = deque(t for t in trials if t.trial_id not in done)

    def next(self) -> PlannedTrial | str | None:
        return self.pending.popleft() if self.pending else FINISHED

    def observe(self, trial: PlannedTrial, loss: float) -> None:
        pass

    def unissued(self) -> dict[tuple, float]:
        """Trials not handed out yet, per (variant, group_key(scale point))."""
        return dict(Counter((t.variant, group_key(t.scale)) for t in self.pending))
