"""From a table of trials to optima: pure functions over DataFrames (analysis.md).

Seeds are averaged first; diverged trials count as +inf ("too high"), never vanish; trials stopped early by
ASHA and failed trials are left out of optima. The optimum of a (variant, scale point) is the argmin of the
seed-mean objective; for one numeric swept key it is also refined by a parabola in log2(value) through the
argmin and its two neighbours, accepted only with positive curvature and the vertex inside their span.
An argmin at either end of the values tried is not bracketed.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

COUNTED = ("completed", "diverged")


def seed_means(trials: pd.DataFrame, mode: str = "min") -> pd.DataFrame:
    """One row per (variant, scale point, setting of the swept keys): mean, standard error, seed count.

    `loss` is the objective oriented for minimisation, +inf when any seed diverged.
    """
    counted = trials[trials["status"].isin(COUNTED)].copy()
    if counted.empty:
        return pd.DataFrame(
            columns=["variant", "scale_point", "swept", "loss", "sem", "n_seeds", "n_diverged"]
        )
    sign = 1.0 if mode == "min" else -1.0
    counted["loss"] = [
        sign * o if status == "completed" and o is not None and math.isfinite(o) else math.inf
        for status, o in zip(counted["status"], counted["objective"], strict=True)
    ]
    rows = []
    for (variant, point, swept), group in counted.groupby(["variant", "scale_point", "swept"], sort=False):
        losses = group["loss"].to_numpy(dtype=float)
        finite = np.isfinite(losses).all()
        mean = float(losses.mean()) if finite else math.inf
        sem = float(losses.std(ddof=1) / math.sqrt(len(losses))) if finite and len(losses) > 1 else math.nan
        rows.append(
            {
                "variant": variant,
                "scale_point": point,
                "swept": swept,
                "loss": mean,
                "sem": sem,
                "n_seeds": len(losses),
                "n_diverged": int((~np.isfinite(losses)).sum()),
            }
        )
    return pd.DataFrame(rows)


def parabola_vertex(x: list[float], y: list[float]) -> float | None:
    """Vertex of the parabola through three points, if it opens upward and lies inside their span."""
    if len(x) != 3 or not all(math.isfinite(v) for v in y):
        return None
    a, b, _ = np.polyfit(x, y, 2)
    if a <= 0:
        return None
    vertex = -b / (2 * a)
    return float(vertex) if min(x) <= vertex <= max(x) else None


def optimum(points: pd.DataFrame, swept_keys: list[str]) -> dict[str, Any]:
    """The optimum of one (variant, scale point) from its seed-mean rows."""
    settings = [json.loads(s) for s in points["swept"]]
    losses = points["loss"].to_numpy(dtype=float)
    best_index = int(np.argmin(losses))
    best = settings[best_index]
    result: dict[str, Any] = {
        "best": best,
        "objective": float(losses[best_index]),
        "bracketed": None,
        "refined": None,
        "edge": None,
    }
    if len(swept_keys) != 1:
        return result
    key = swept_keys[0]
    values = [s.get(key) for s in settings]
    if not all(isinstance(v, int | float) for v in values):
        return result
    order = np.argsort(values)
    xs = [float(values[i]) for i in order]
    ys = [float(losses[i]) for i in order]
    position = xs.index(float(best[key]))
    at_low, at_high = position == 0, position == len(xs) - 1
    result["bracketed"] = not (at_low or at_high) and math.isfinite(ys[position])
    result["edge"] = "low" if at_low else "high" if at_high else None
    if result["bracketed"] and all(x > 0 for x in xs):
        logs = [math.log2(x) for x in xs[position - 1 : position + 2]]
        vertex = parabola_vertex(logs, ys[position - 1 : position + 2])
        result["refined"] = {key: 2.0**vertex} if vertex is not None else None
    return result


def optimum_table(trials: pd.DataFrame, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (variant, scale point): the best setting, its objective, the number of trials, bracketing and
    the refined optimum. `spec` is the store's study.json (scale_keys, swept_keys, objective)."""
    scale_keys, swept_keys = spec.get("scale_keys", []), spec.get("swept_keys", [])
    mode = spec.get("objective", {}).get("mode", "min")
    means = seed_means(trials, mode)
    table = []
    for (variant, point), group in means.groupby(["variant", "scale_point"], sort=False):
        sample = trials[(trials["variant"] == variant) & (trials["scale_point"] == point)]
        row: dict[str, Any] = {"variant": variant}
        for key in scale_keys:
            value = sample[key].iloc[0]
            row[key] = value.item() if hasattr(value, "item") else value
        found = optimum(group, swept_keys)
        objective = found["objective"]
        row.update(
            best=found["best"],
            objective=(objective if mode == "min" else -objective) if math.isfinite(objective) else None,
            n_trials=len(sample),
            bracketed=found["bracketed"],
            refined=found["refined"],
        )
        table.append(row)
    return table
