"""The hand-off between the searcher, which plans a trial, and the recorder, which stores it.

The searcher `issue`s each trial under Tune's trial id. When Tune says the trial ended, the searcher
`observe`s it (to feed the strategy) and the recorder `record`s it (to write the store), in whichever order
Tune calls them; the entry goes once both have. Nothing else is shared between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweeper.study import PlannedTrial


@dataclass
class _Entry:
    trial: PlannedTrial
    observed: bool = False
    recorded: bool = False


class TrialLedger:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def issue(self, tune_id: str, trial: PlannedTrial) -> None:
        self._entries[tune_id] = _Entry(trial)

    def peek(self, tune_id: str) -> PlannedTrial | None:
        """The trial issued under this id, marking nothing (None if unknown)."""
        entry = self._entries.get(tune_id)
        return None if entry is None else entry.trial

    def observe(self, tune_id: str) -> PlannedTrial | None:
        """The trial, the first time the searcher learns it ended (None after that, or if unknown)."""
        return self._mark(tune_id, "observed")

    def record(self, tune_id: str) -> PlannedTrial | None:
        """The trial, the first time the recorder stores it (None after that, or if unknown)."""
        return self._mark(tune_id, "recorded")

    @property
    def unobserved(self) -> int:
        """Trials handed out whose outcome the search has not learnt yet."""
        return sum(not entry.observed for entry in self._entries.values())

    def _mark(self, tune_id: str, flag: str) -> PlannedTrial | None:
        entry = self._entries.get(tune_id)
        if entry is None or getattr(entry, flag):
            return None
        setattr(entry, flag, True)
        if entry.observed and entry.recorded:
            del self._entries[tune_id]
        return entry.trial
