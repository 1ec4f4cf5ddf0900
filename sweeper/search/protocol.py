"""The protocol every search strategy follows, independent of Ray.

A strategy hands out trials (`next`) and learns their outcome (`observe`, as a loss to minimise, +inf for
a diverged or failed trial). `next` returns a PlannedTrial to run now, WAIT when it needs results first,
or FINISHED. Trials already in the store are never handed out again: their stored outcome is used instead.
"""

from __future__ import annotations

from typing import Protocol

from sweeper.study import PlannedTrial, group_key

__all__ = ["FINISHED", "WAIT", "Strategy", "group_key"]

WAIT = None
FINISHED = "FINISHED"


class Strategy(Protocol):
    def next(self) -> PlannedTrial | str | None: ...

    def observe(self, trial: PlannedTrial, loss: float) -> None: ...

    def unissued(self) -> dict[tuple, float]:
        """Trials still to hand out (an estimate where the search decides as it goes), per
        (variant, group_key(scale point)): what the live display's ETA counts."""
        ...
