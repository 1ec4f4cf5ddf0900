"""The objective, owned in one place: which number of a trial's summary is optimised, how it turns into
the loss that every search and analysis minimises, and how a setting's seeds become one number.

A missing objective is a loss of +inf ("too high"): a diverged trial is never dropped. (The search also
counts a failed trial as +inf; the analysis leaves failed and early-stopped trials out, docs/analysis.md
section 1.) A setting's seed mean is +inf when any of its seeds is: one diverged seed makes it unusable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # numpy is imported where it is used: `best` answered from its cache never needs it
    import numpy as np


class Objective(BaseModel):
    """The study's `objective:` block, and the rules that go with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The built-in trainer reports val_loss and train_loss; a user's trainer any metric it reports (the
    # study checks which, `Study._check_trainer`).
    metric: str = Field("val_loss", min_length=1, max_length=100)
    mode: Literal["min", "max"] = "min"
    use: Literal["final", "best"] = "final"

    def of_summary(self, summary: dict[str, Any]) -> float | None:
        """The objective of a finished trial, from its summary (the built-in `TrainResult.summary()` or a
        user trainer's `UserResult.summary()`): `final_<metric>` or `best_<metric>`; None when it has none."""
        return summary.get(f"{self.use}_{self.metric}")

    def loss(self, objective: float | None) -> float:
        """The objective oriented for minimisation; +inf for a missing or non-finite one."""
        if objective is None or not math.isfinite(objective):
            return math.inf
        return objective if self.mode == "min" else -objective

    def objective(self, loss: float) -> float | None:
        """The inverse of `loss`: None for +inf."""
        if not math.isfinite(loss):
            return None
        return loss if self.mode == "min" else -loss

    def trial_loss(self, status: str, objective: float | None) -> float:
        """The loss of one stored trial: its objective if it completed, else +inf."""
        return self.loss(objective) if status == "completed" else math.inf

    def trial_losses(self, statuses: Sequence[str], objectives: Sequence[float | None]) -> np.ndarray:
        import numpy as np

        return np.array(
            [self.trial_loss(s, o) for s, o in zip(statuses, objectives, strict=True)], dtype=float
        )

    def describe(self) -> str:
        return f"{self.use} {self.metric} ({'lower' if self.mode == 'min' else 'higher'} is better)"


def seed_mean(losses: Sequence[float] | np.ndarray) -> float:
    """One setting's loss over its seeds: the mean, or +inf when any seed is +inf (or there are none)."""
    import numpy as np

    values = np.asarray(losses, dtype=float)
    if values.size == 0 or not np.isfinite(values).all():
        return math.inf
    return float(values.mean())


def seed_sem(losses: Sequence[float] | np.ndarray) -> float:
    """The standard error of `seed_mean`: nan with fewer than two seeds or a non-finite one."""
    import numpy as np

    values = np.asarray(losses, dtype=float)
    if values.size < 2 or not np.isfinite(values).all():
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.size))
