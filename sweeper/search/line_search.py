"""The adaptive search's line search over one key in log2, and where the next scale point's search starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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
