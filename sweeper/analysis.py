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
from dataclasses import dataclass, field
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
    order = {v: i for i, v in enumerate(dict.fromkeys(trials["variant"]))}
    return sorted(table, key=lambda r: (order[r["variant"]], [_sortable(r.get(k)) for k in scale_keys]))


def _sortable(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, int | float) else (1, 0, str(value))


# --- optimum versus scale (analysis.md sections 2-4) --------------------------------------------------------

BOOTSTRAP_SAMPLES = 1000
CI_LEVEL = 0.90
REGRET_THRESHOLD = 0.01  # relative transfer regret below which a transfer is good enough


def _scale_value(row: pd.Series | dict, axis: str) -> float:
    value = row[axis]
    return float(value.item() if hasattr(value, "item") else value)


Cell = tuple[float, float, np.ndarray]  # (scale, log2 value of the hparam, per-seed losses of one setting)


def loss_cells(trials: pd.DataFrame, variant: str, axis: str, hparam: str, mode: str) -> list[Cell]:
    """One cell per (scale, setting of the swept keys): its per-seed losses (+inf for a diverged seed)."""
    rows = trials[(trials["variant"] == variant) & trials["status"].isin(COUNTED)]
    sign = 1.0 if mode == "min" else -1.0
    cells = []
    for (scale, swept), cell in rows.groupby([axis, "swept"]):
        value = json.loads(swept).get(hparam)
        if not isinstance(value, int | float) or value <= 0:
            continue
        losses = np.array(
            [
                sign * o if s == "completed" and o is not None and math.isfinite(o) else math.inf
                for s, o in zip(cell["status"], cell["objective"], strict=True)
            ]
        )
        cells.append((float(scale), math.log2(float(value)), losses))
    return cells


def curves_from_cells(
    cells: list[Cell], rng: np.random.Generator | None = None
) -> dict[float, dict[float, float]]:
    """Per scale: log2(hparam) -> seed-mean loss of the best setting of the other swept keys at that value
    (a profile over them; with one swept key, the seed mean itself). With `rng`, seeds are resampled with
    replacement within each setting first."""
    curves: dict[float, dict[float, float]] = {}
    for scale, key, losses in cells:
        if rng is not None and len(losses) > 1:
            losses = losses[rng.integers(0, len(losses), len(losses))]
        mean = float(losses.mean()) if np.isfinite(losses).all() else math.inf
        curve = curves.setdefault(scale, {})
        curve[key] = min(curve.get(key, math.inf), mean)
    return curves


def point_curves(
    trials: pd.DataFrame, variant: str, axis: str, hparam: str, mode: str
) -> dict[float, dict[float, float]]:
    return curves_from_cells(loss_cells(trials, variant, axis, hparam, mode))


def curve_optimum(curve: dict[float, float]) -> dict[str, Any]:
    """Optimum of one loss-vs-log2(h) curve: argmin, parabola refinement, bracketing."""
    xs = sorted(curve)
    ys = [curve[x] for x in xs]
    i = int(np.argmin(ys))
    bracketed = 0 < i < len(xs) - 1 and math.isfinite(ys[i])
    refined = parabola_vertex(xs[i - 1 : i + 2], ys[i - 1 : i + 2]) if bracketed else None
    return {
        "log2_argmin": xs[i],
        "log2_opt": refined if refined is not None else xs[i],
        "refined": refined is not None,
        "bracketed": bracketed,
        "edge": None if bracketed else ("low" if i == 0 else "high"),
        "loss": ys[i],
    }


def interpolate(curve: dict[float, float], x: float) -> float:
    """Loss at log2(h) = x, linear between the evaluated points; the edge value outside them."""
    xs = sorted(k for k, v in curve.items() if math.isfinite(v))
    if not xs:
        return math.inf
    if x <= xs[0]:
        return curve[xs[0]] if x == xs[0] else _beyond(curve, xs[0], x)
    if x >= xs[-1]:
        return curve[xs[-1]] if x == xs[-1] else _beyond(curve, xs[-1], x)
    j = int(np.searchsorted(xs, x))
    x0, x1 = xs[j - 1], xs[j]
    return curve[x0] + (curve[x1] - curve[x0]) * (x - x0) / (x1 - x0)


def _beyond(curve: dict[float, float], edge: float, x: float) -> float:
    # Past the finite points: if the next point that way diverged, so would this; else the edge value.
    outward = [k for k in curve if (k > edge if x > edge else k < edge)]
    return (
        math.inf
        if outward and not math.isfinite(curve[min(outward, key=lambda k: abs(k - edge))])
        else curve[edge]
    )


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares y = a + alpha x; returns (a, alpha)."""
    mx, my = x.mean(), y.mean()
    alpha = float(((x - mx) * (y - my)).sum() / ((x - mx) ** 2).sum())
    return float(my - alpha * mx), alpha


@dataclass
class TransferFit:
    variant: str
    axis: str
    hparam: str
    scales: list[float]
    optima: list[dict[str, Any]]  # per scale: curve_optimum output
    alpha: float | None
    alpha_ci: tuple[float, float] | None
    intercept: float | None
    fits: np.ndarray | None  # bootstrap (a, alpha) pairs, for extrapolation intervals
    fit_rms: float | None
    leave_largest_out_error: float | None  # octaves
    drift_octaves: float | None
    regret_abs: float | None
    regret_rel: float | None
    basin_width: list[float | None]  # octaves within 1% of the best loss, per scale
    penalty_2x: list[float | None]  # loss increase when off the optimum by a factor 2, per scale
    penalty_4x: list[float | None]
    bracketed_all: bool
    notes: list[str] = field(default_factory=list)

    def predict(self, scale: float) -> tuple[float, tuple[float, float] | None]:
        """log2 optimum at `scale` and its 90% interval."""
        x = math.log2(scale)
        centre = self.intercept + self.alpha * x
        if self.fits is None or not len(self.fits):
            return centre, None
        preds = self.fits[:, 0] + self.fits[:, 1] * x
        lo, hi = np.quantile(preds, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
        return centre, (float(lo), float(hi))


def _basin(curve: dict[float, float], best: float) -> float | None:
    finite = sorted(k for k, v in curve.items() if math.isfinite(v) and v <= best * 1.01 + 1e-12)
    return float(finite[-1] - finite[0]) if finite else None


def _penalty(curve: dict[float, float], opt: float, octaves: float, best: float) -> float | None:
    values = [interpolate(curve, opt + s * octaves) for s in (-1, 1)]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.inf
    return float(max(finite) - best) if len(finite) == 2 else math.inf


def transfer_fit(
    trials: pd.DataFrame,
    variant: str,
    axis: str,
    hparam: str,
    mode: str = "min",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> TransferFit:
    cells = loss_cells(trials, variant, axis, hparam, mode)
    curves = curves_from_cells(cells)
    scales = sorted(curves)
    optima = [curve_optimum(curves[s]) for s in scales]
    bracketed = [o["bracketed"] for o in optima]
    usable = [(s, o) for s, o in zip(scales, optima, strict=True) if o["bracketed"]]
    notes: list[str] = []
    fit = TransferFit(
        variant=variant,
        axis=axis,
        hparam=hparam,
        scales=scales,
        optima=optima,
        alpha=None,
        alpha_ci=None,
        intercept=None,
        fits=None,
        fit_rms=None,
        leave_largest_out_error=None,
        drift_octaves=None,
        regret_abs=None,
        regret_rel=None,
        basin_width=[_basin(curves[s], o["loss"]) for s, o in zip(scales, optima, strict=True)],
        penalty_2x=[
            _penalty(curves[s], o["log2_opt"], 1, o["loss"]) for s, o in zip(scales, optima, strict=True)
        ],
        penalty_4x=[
            _penalty(curves[s], o["log2_opt"], 2, o["loss"]) for s, o in zip(scales, optima, strict=True)
        ],
        bracketed_all=bool(bracketed) and all(bracketed),
        notes=notes,
    )
    for scale in scales:
        curve = curves[scale]
        for x in sorted(curve):
            higher = [k for k in curve if k > x and math.isfinite(curve[k])]
            if not math.isfinite(curve[x]) and higher:
                notes.append(
                    f"at {axis}={scale:g} {hparam}=2^{x:.2f} diverged while the higher 2^{max(higher):.2f} "
                    "completed: an early loss spike judged as divergence? (diverge_factor, diverge_patience)"
                )
                break
    if len(scales) >= 2:
        first, last = optima[0], optima[-1]
        fit.drift_octaves = last["log2_opt"] - first["log2_opt"]
        at_large = interpolate(curves[scales[-1]], first["log2_opt"])
        fit.regret_abs = float(at_large - last["loss"]) if math.isfinite(at_large) else math.inf
        fit.regret_rel = fit.regret_abs / abs(last["loss"]) if math.isfinite(fit.regret_abs) else math.inf
    if len(usable) < 2:
        return fit
    x = np.log2([s for s, _ in usable])
    y = np.array([o["log2_opt"] for _, o in usable])
    fit.intercept, fit.alpha = fit_line(x, y)
    residuals = y - (fit.intercept + fit.alpha * x)
    fit.fit_rms = float(np.sqrt(np.mean(residuals**2)))
    if len(usable) >= 3:
        a, alpha = fit_line(x[:-1], y[:-1])
        fit.leave_largest_out_error = float(a + alpha * x[-1] - y[-1])
    fit.fits = _bootstrap(cells, [s for s, _ in usable], x, y, residuals, samples, seed)
    if fit.fits is not None and len(fit.fits):
        lo, hi = np.quantile(fit.fits[:, 1], [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
        fit.alpha_ci = (float(lo), float(hi))
    return fit


def _bootstrap(
    cells: list[Cell],
    scales: list[float],
    x: np.ndarray,
    y: np.ndarray,
    residuals: np.ndarray,
    samples: int,
    seed: int,
) -> np.ndarray:
    """(a, alpha) refits: seeds resampled within each setting when there are several, else the fit's
    residuals resampled."""
    rng = np.random.default_rng(seed)
    fits = []
    if min(len(losses) for _, _, losses in cells) > 1:
        for _ in range(samples):
            curves = curves_from_cells(cells, rng)
            ys = [curve_optimum(curves[s])["log2_opt"] for s in scales]
            fits.append(fit_line(x, np.array(ys)))
    elif len(x) < 3:
        return np.array([fit_line(x, y)] * samples)
    else:
        fitted = y - residuals
        for _ in range(samples):
            fits.append(fit_line(x, fitted + rng.choice(residuals, len(residuals), replace=True)))
    return np.array(fits)


def verdict(
    fit: TransferFit, tol: float = 0.25, regret_threshold: float = REGRET_THRESHOLD
) -> tuple[str, list[str]]:
    """transfers | shifts | inconclusive, with the reasons (analysis.md section 4)."""
    reasons: list[str] = list(fit.notes)
    unbracketed = [(s, o["edge"]) for s, o in zip(fit.scales, fit.optima, strict=True) if not o["bracketed"]]
    for scale, edge in unbracketed:
        direction = "upward" if edge == "high" else "downward"
        reasons.append(
            f"not bracketed at {fit.axis}={scale:g}: the optimum is at the {edge} end; extend the grid {direction}"
        )
    if len(fit.scales) - len(unbracketed) < 3:
        reasons.append(
            f"only {len(fit.scales) - len(unbracketed)} bracketed scale points (3 or more make a fit)"
        )
    if fit.alpha_ci is None:
        return "inconclusive", reasons or ["no fit"]
    lo, hi = fit.alpha_ci
    if lo > tol or hi < -tol:
        reasons.insert(
            0,
            f"alpha {fit.alpha:+.2f}, 90% interval [{lo:+.2f}, {hi:+.2f}] lies outside ±{tol:g}: "
            f"the optimum moves about {abs(fit.alpha):.2f} octaves per doubling of {fit.axis}",
        )
        return "shifts", reasons
    inside = -tol <= lo and hi <= tol
    if inside:
        reasons.insert(0, f"alpha {fit.alpha:+.2f}, 90% interval [{lo:+.2f}, {hi:+.2f}] within ±{tol:g}")
    else:
        reasons.insert(
            0,
            f"alpha {fit.alpha:+.2f}, 90% interval [{lo:+.2f}, {hi:+.2f}] straddles ±{tol:g}: "
            "too noisy to tell (more seeds or scale points)",
        )
    regret_ok = fit.regret_rel is not None and fit.regret_rel < regret_threshold
    if fit.regret_rel is not None:
        reasons.append(
            f"transfer regret {fit.regret_rel:.2%} of the best loss at the largest {fit.axis} "
            f"({'below' if regret_ok else 'above'} {regret_threshold:.0%})"
        )
    if inside and regret_ok and not unbracketed and len(fit.scales) >= 3:
        return "transfers", reasons
    return "inconclusive", reasons


def verify_rows(
    trials: pd.DataFrame,
    spec: dict[str, Any],
    axis: str = "width",
    tol: float = 0.25,
    samples: int = BOOTSTRAP_SAMPLES,
) -> list[dict[str, Any]]:
    """`sweeper verify --json`: per variant (and per value of any other scale axis) and swept key."""
    mode = spec.get("objective", {}).get("mode", "min")
    others = [k for k in spec.get("scale_keys", []) if k != axis]
    rows = []
    for variant in dict.fromkeys(trials["variant"]):
        subset = trials[trials["variant"] == variant]
        combos = subset[others].drop_duplicates().to_dict("records") if others else [{}]
        for combo in combos:
            part = subset
            for key, value in combo.items():
                part = part[part[key] == value]
            for hparam in spec.get("swept_keys", []):
                fit = transfer_fit(part, variant, axis, hparam, mode, samples=samples)
                name, reasons = verdict(fit, tol)
                rows.append(_verify_row(fit, name, reasons, {k: _plain(v) for k, v in combo.items()}))
    return rows


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _verify_row(fit: TransferFit, name: str, reasons: list[str], at: dict[str, Any]) -> dict[str, Any]:
    return {
        "variant": fit.variant,
        "axis": fit.axis,
        "hparam": fit.hparam,
        "alpha": _num(fit.alpha),
        "alpha_ci": list(fit.alpha_ci) if fit.alpha_ci else None,
        "drift_octaves": _num(fit.drift_octaves),
        "regret_abs": _num(fit.regret_abs)
        if fit.regret_abs is None or math.isfinite(fit.regret_abs)
        else None,
        "regret_rel": _num(fit.regret_rel),
        "bracketed_all": fit.bracketed_all,
        "verdict": name,
        "reasons": reasons,
        "at": at,
        "scales": fit.scales,
        "optimum_log2": [o["log2_opt"] for o in fit.optima],
        "best_loss": [_num(o["loss"]) for o in fit.optima],
        "bracketed": [o["bracketed"] for o in fit.optima],
        "fit_rms_octaves": _num(fit.fit_rms),
        "leave_largest_out_error_octaves": _num(fit.leave_largest_out_error),
        "basin_width_octaves": fit.basin_width,
        "penalty_2x": [_num(p) for p in fit.penalty_2x],
        "penalty_4x": [_num(p) for p in fit.penalty_4x],
    }
