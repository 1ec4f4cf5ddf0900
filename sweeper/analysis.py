"""From a table of trials to optima: pure functions over DataFrames (docs/analysis.md).

Seeds are averaged first; diverged trials count as +inf ("too high"), never vanish; trials stopped early by
ASHA and failed trials are left out of optima. The optimum of a (variant, scale point) is the argmin of the
seed-mean objective; for one numeric swept key it is also refined by a parabola in log2(value) through the
argmin and its two neighbours, accepted only with positive curvature and the vertex inside their span.
An argmin at either end of the values tried is not bracketed.

Seed noise is the seed standard deviation pooled over a variant's settings with two or more seeds. It
decides which settings are within noise of the best, and the intervals of the optimum and of alpha come
from redrawing every setting's seed mean with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweeper.objective import Objective, seed_mean, seed_sem
from sweeper.record import NOISE_Z, StudyRecord
from sweeper.store import plain
from sweeper.values import from_log2

COUNTED = ("completed", "diverged")
# The columns every analysis reads; a frame without them (a store with no trial yet) has nothing to count.
TRIAL_COLUMNS = ("variant", "status", "objective", "scale_point", "swept")


def counted_trials(trials: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """The trials that count for optima (completed or diverged): empty when the frame lacks a column the
    analyses read (`TRIAL_COLUMNS` and `columns`), as a store before its first finished trial does."""
    if any(c not in trials.columns for c in (*TRIAL_COLUMNS, *columns)):
        return trials.iloc[0:0]
    return trials[trials["status"].isin(COUNTED)]


def pow2(x: float) -> float:
    """2**x, +inf where it overflows (an extrapolation far out)."""
    try:
        return 2.0**x
    except OverflowError:
        return math.inf


def pooled_sd(settings: Iterable[Sequence[float]]) -> tuple[float | None, int]:
    """The seed standard deviation pooled over the settings with two or more seeds, all finite, and its
    degrees of freedom; (None, 0) when there is no such setting."""
    ss, df = 0.0, 0
    for losses in settings:
        losses = list(losses)
        if len(losses) < 2 or not all(math.isfinite(x) for x in losses):
            continue
        mean = sum(losses) / len(losses)
        ss += sum((x - mean) ** 2 for x in losses)
        df += len(losses) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def within_noise(mean: float, n: int, best_mean: float, best_n: int, sd: float, z: float = NOISE_Z) -> bool:
    """Whether a setting's seed mean (over n seeds) is within z standard errors of the best's."""
    return math.isfinite(mean) and mean - best_mean <= z * sd * math.sqrt(1 / n + 1 / best_n)


def seed_means(trials: pd.DataFrame, mode: str = "min") -> pd.DataFrame:
    """One row per (variant, scale point, setting of the swept keys): mean, standard error, seed count.

    `loss` is the objective oriented for minimisation, +inf when any seed diverged.
    """
    rows = [
        {
            "variant": variant,
            "scale_point": point,
            "swept": swept,
            "loss": seed_mean(losses),
            "sem": seed_sem(losses),
            "n_seeds": len(losses),
            "n_diverged": int((~np.isfinite(losses)).sum()),
        }
        for (variant, point, swept), losses in setting_losses(trials, mode).items()
    ]
    if not rows:
        return pd.DataFrame(
            columns=["variant", "scale_point", "swept", "loss", "sem", "n_seeds", "n_diverged"]
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
        "all_diverged": not math.isfinite(losses[best_index]),
    }
    key = swept_keys[0] if len(swept_keys) == 1 else None
    values = [s.get(key) for s in settings]
    numeric = key is not None and all(isinstance(v, int | float) for v in values)
    if result["all_diverged"]:
        # No setting finished with a loss: there is no best one, and nothing is bracketed.
        result.update(best=None, bracketed=False if numeric else None)
        return result
    if not numeric:
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


def optimum_table(
    trials: pd.DataFrame, study: StudyRecord | dict[str, Any], samples: int | None = None
) -> list[dict[str, Any]]:
    """Per (variant, scale point): the best setting, its objective, the number of trials, bracketing and
    the refined optimum. `study` is the store's study record (scale_keys, swept_keys, objective, search).

    Its uncertainty: `noise_sd`, the seed sd pooled over the variant's settings with two or more seeds
    (`noise_df` degrees of freedom; `noise_sd_point` from this point's settings alone); `within_noise`,
    the settings whose mean is within search.noise_z standard errors of the best's (the best included);
    `optimum_interval`, a 90% interval of the refined optimum of a positive numeric swept key, from
    redrawing every setting's seed mean with the pooled seed noise (`draw_curves`). The three are null
    where no setting of the variant has two seeds that finished."""
    record = StudyRecord.of(study)
    scale_keys, swept_keys = record.scale_keys, record.swept_keys
    objective_rule, z = record.objective, record.search.noise_z
    if counted_trials(trials).empty:
        return []  # nothing finished yet
    means = seed_means(trials, objective_rule.mode)
    seeds = setting_losses(trials, objective_rule.mode)
    noise = {
        variant: pooled_sd(losses for (v, _, _), losses in seeds.items() if v == variant)
        for variant in dict.fromkeys(means["variant"])
    }
    table = []
    at_points = trials[["variant", "scale_point"]].groupby(["variant", "scale_point"], sort=False).indices
    for (variant, point), group in means.groupby(["variant", "scale_point"], sort=False):
        positions = at_points[(variant, point)]
        row: dict[str, Any] = {"variant": variant}
        for key in scale_keys:
            row[key] = plain(trials[key].iloc[positions[0]]) if key in trials.columns else None
        found = optimum(group, swept_keys)
        objective = found["objective"]
        diverged = found["all_diverged"]
        sd, df = noise[variant]
        at_point = {swept: seeds[(variant, point, swept)] for swept in group["swept"]}
        row.update(
            best=found["best"],
            objective=objective_rule.objective(objective),
            n_trials=len(positions),
            bracketed=found["bracketed"],
            refined=found["refined"],
            seeds_at_best=None
            if diverged
            else int(group["n_seeds"].iloc[int(np.argmin(group["loss"].to_numpy(dtype=float)))]),
            noise_sd=sd,
            noise_df=df,
            noise_sd_point=pooled_sd(at_point.values())[0],
            within_noise=_within_noise_settings(group, sd, z),
            optimum_interval=None
            if diverged
            else _optimum_interval(at_point, swept_keys, sd, samples or BOOTSTRAP_SAMPLES),
            all_diverged=diverged,
        )
        table.append(row)
    order = {v: i for i, v in enumerate(dict.fromkeys(trials["variant"]))}
    return sorted(table, key=lambda r: (order[r["variant"]], [_sortable(r.get(k)) for k in scale_keys]))


def setting_losses(trials: pd.DataFrame, mode: str = "min") -> dict[tuple[str, str, str], np.ndarray]:
    """(variant, scale point, swept JSON) -> the per-seed losses, oriented for minimisation, +inf for a
    diverged seed."""
    counted = counted_trials(trials)
    if counted.empty:
        return {}
    keys = ["variant", "scale_point", "swept"]
    narrow = counted[[*keys, "status", "objective"]]  # grouping a wide frame copies every column
    losses = Objective(mode=mode).trial_losses(narrow["status"], narrow["objective"])
    groups = narrow.groupby(keys, sort=False).indices  # positions of each group's rows, in row order
    ordered = sorted(groups.items(), key=lambda item: item[1][0])  # groups in order of first appearance
    return {key: losses[index] for key, index in ordered}


def _within_noise_settings(points: pd.DataFrame, sd: float | None, z: float) -> list[dict[str, Any]] | None:
    if sd is None:
        return None
    losses = points["loss"].to_numpy(dtype=float)
    counts = points["n_seeds"].to_numpy(dtype=int)
    best = int(np.argmin(losses))
    if not math.isfinite(losses[best]):
        return []
    kept = [
        (json.loads(swept), loss)
        for swept, loss, n in zip(points["swept"], losses, counts, strict=True)
        if within_noise(loss, int(n), losses[best], int(counts[best]), sd, z)
    ]
    return [setting for setting, _ in sorted(kept, key=lambda item: _setting_order(item[0]))]


def _setting_order(setting: dict[str, Any]) -> list[tuple]:
    return [_sortable(setting[k]) for k in sorted(setting)]


def _optimum_interval(
    at_point: dict[str, np.ndarray], swept_keys: list[str], sd: float | None, samples: int
) -> dict[str, list[float]] | None:
    if len(swept_keys) != 1 or sd is None:
        return None
    key = swept_keys[0]
    cells = []
    for swept, losses in at_point.items():
        value = json.loads(swept).get(key)
        if not isinstance(value, int | float) or value <= 0:
            return None
        cells.append((math.log2(float(value)), losses))
    xs, draws = draw_curves(cells, sd, np.random.default_rng(0), samples)
    lo, hi = np.quantile(draw_optima(xs, draws), [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    return {key: [2.0 ** float(lo), 2.0 ** float(hi)]}


def _sortable(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, int | float) else (1, 0, str(value))


# --- optimum versus scale (docs/analysis.md sections 5-7) ----------------------------------------------

BOOTSTRAP_SAMPLES = 1000
CI_LEVEL = 0.90
REGRET_THRESHOLD = 0.01  # relative transfer regret below which a transfer is good enough


def _scale_value(row: pd.Series | dict, axis: str) -> float:
    value = row[axis]
    return float(value.item() if hasattr(value, "item") else value)


Cell = tuple[float, float, np.ndarray]  # (scale, log2 value of the hparam, per-seed losses of one setting)


def loss_cells(trials: pd.DataFrame, variant: str, axis: str, hparam: str, mode: str) -> list[Cell]:
    """One cell per (scale, setting of the swept keys): its per-seed losses (+inf for a diverged seed)."""
    rows = counted_trials(trials, axis)
    rows = rows[rows["variant"] == variant]
    rule = Objective(mode=mode)
    cells = []
    for (scale, swept), cell in rows.groupby([axis, "swept"]):
        value = json.loads(swept).get(hparam)
        if not isinstance(value, int | float) or value <= 0:
            continue
        losses = rule.trial_losses(cell["status"], cell["objective"])
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
        mean = seed_mean(losses)
        curve = curves.setdefault(scale, {})
        curve[key] = min(curve.get(key, math.inf), mean)
    return curves


def curve_counts(cells: list[Cell]) -> dict[float, dict[float, int]]:
    """Per scale: log2(hparam) -> seeds of the setting that `curves_from_cells` profiles to there."""
    best: dict[float, dict[float, tuple[float, int]]] = {}
    for scale, key, losses in cells:
        mean = seed_mean(losses)
        current = best.setdefault(scale, {}).get(key)
        if current is None or mean < current[0]:
            best[scale][key] = (mean, len(losses))
    return {scale: {k: n for k, (_, n) in curve.items()} for scale, curve in best.items()}


def draw_curves(
    cells: list[tuple[float, np.ndarray]], sd: float | None, rng: np.random.Generator, samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """`samples` redraws of one loss curve from its settings ((log2 value, per-seed losses) pairs): the
    sorted log2 values, and a (samples, values) array of seed means, profiled (the minimum) over settings
    sharing a value.

    A setting whose seeds all finished gets its mean plus normal noise of sd / sqrt(n), with `sd` the seed
    sd pooled over many settings: resampling two or three seeds would understate the noise (a resampled
    mean of n seeds has (n - 1) / n of the variance, and two seeds give three distinct means). A setting
    with a diverged seed has its seeds resampled, so that it diverges in as many draws as its seeds did.
    Without `sd`, every setting has its seeds resampled (a single seed stays as it is)."""
    xs = np.array(sorted({k for k, _ in cells}), dtype=float)
    draws = np.full((samples, len(xs)), math.inf)
    for key, losses in cells:
        column = int(np.searchsorted(xs, key))
        if sd is not None and np.isfinite(losses).all():
            drawn = losses.mean() + rng.normal(0.0, sd / math.sqrt(len(losses)), samples)
        elif len(losses) > 1:
            drawn = losses[rng.integers(0, len(losses), (samples, len(losses)))].mean(axis=1)
        else:
            drawn = np.full(samples, losses[0])
        draws[:, column] = np.minimum(draws[:, column], drawn)
    return xs, draws


def draw_optima(xs: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Per row of `draws` (losses at the log2 values xs), the log2 optimum as `curve_optimum` finds it:
    the argmin, refined by the parabola through it and its neighbours where that opens upward with its
    vertex inside them."""
    i = np.argmin(draws, axis=1)
    optima = xs[i].astype(float)
    rows = np.nonzero((i > 0) & (i < len(xs) - 1))[0]
    if len(rows):
        j = i[rows]
        x1, x2, x3 = xs[j - 1], xs[j], xs[j + 1]
        y1, y2, y3 = draws[rows, j - 1], draws[rows, j], draws[rows, j + 1]
        with np.errstate(all="ignore"):
            slope = (y2 - y1) / (x2 - x1)
            curvature = ((y3 - y2) / (x3 - x2) - slope) / (x3 - x1)
            vertex = (x1 + x2) / 2 - slope / (2 * curvature)
        ok = np.isfinite(y1) & np.isfinite(y2) & np.isfinite(y3) & (curvature > 0)
        ok &= (vertex >= x1) & (vertex <= x3)
        optima[rows[ok]] = vertex[ok]
    return optima


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
        "all_diverged": not math.isfinite(ys[i]),  # no value has a loss: no optimum at this scale
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
    noise_sd: float | None = None  # seed sd pooled over the settings with two or more seeds
    noise_df: int = 0
    noise_z: float = NOISE_Z
    within_noise: list[list[float]] | None = None  # per scale: log2 values within noise of the best
    # The slopes of the lines that pass through every bracketed point's within-noise range of the optimum;
    # None without a noise estimate or when no line does.
    noise_slopes: tuple[float, float] | None = None

    def noise_range(self, i: int) -> tuple[float, float] | None:
        """The lowest and highest log2 value within noise of the best at scale i, the refined optimum
        included; None without a noise estimate."""
        if self.within_noise is None or not self.within_noise[i]:
            return None
        values = [*self.within_noise[i], self.optima[i]["log2_opt"]]
        return float(min(values)), float(max(values))

    def noise_span(self, i: int) -> float | None:
        """Octaves within noise of the best at scale i."""
        found = self.noise_range(i)
        return None if found is None else found[1] - found[0]

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
    z: float = NOISE_Z,
) -> TransferFit:
    cells = loss_cells(trials, variant, axis, hparam, mode)
    curves = curves_from_cells(cells)
    counts = curve_counts(cells)
    sd, df = pooled_sd(losses for _, _, losses in cells)
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
        noise_sd=sd,
        noise_df=df,
        noise_z=z,
    )
    if sd is not None:
        fit.within_noise = [
            sorted(
                k
                for k, loss in curves[s].items()
                if math.isfinite(o["loss"])
                and within_noise(loss, counts[s][k], o["loss"], counts[s][o["log2_argmin"]], sd, z)
            )
            for s, o in zip(scales, optima, strict=True)
        ]
    precisions = _precision_note(trials, variant)
    if precisions:
        notes.append(precisions)
    for scale in scales:
        curve = curves[scale]
        for x in sorted(curve):
            higher = [k for k in curve if k > x and math.isfinite(curve[k])]
            if not math.isfinite(curve[x]) and higher:
                notes.append(
                    f"at {axis}={scale:g} {hparam}={from_log2(x)} diverged while the higher {from_log2(max(higher))} "
                    "completed: an early loss spike judged as divergence? (diverge_factor, diverge_patience)"
                )
                break
    if len(scales) >= 2 and all(math.isfinite(o["loss"]) for o in (optima[0], optima[-1])):
        # Only between two optima: at a scale where every value diverged there is none to drift from or to.
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
    fit.fits = _bootstrap(cells, [s for s, _ in usable], x, y, residuals, samples, seed, sd)
    ranges = [fit.noise_range(i) for i, o in enumerate(optima) if o["bracketed"]]
    if all(r is not None for r in ranges):
        fit.noise_slopes = _slopes_through(x, ranges)
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
    sd: float | None = None,
) -> np.ndarray:
    """(a, alpha) refits. With a seed-noise estimate (or several seeds everywhere), each point's optimum is
    redrawn from its settings' seed means drawn with the noise (`draw_curves`); with none, the fit's
    residuals are resampled."""
    rng = np.random.default_rng(seed)
    if sd is not None or min(len(losses) for _, _, losses in cells) > 1:
        ys = np.column_stack(
            [
                draw_optima(
                    *draw_curves([(k, losses) for s, k, losses in cells if s == scale], sd, rng, samples)
                )
                for scale in scales
            ]
        )
        return _fit_lines(x, ys)
    if len(x) < 3:
        return np.array([fit_line(x, y)] * samples)
    fitted = y - residuals
    return _fit_lines(x, fitted + rng.choice(residuals, (samples, len(residuals)), replace=True))


def _fit_lines(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """`fit_line` for each row of ys: an array of (a, alpha) rows."""
    dx = x - x.mean()
    alpha = (dx * (ys - ys.mean(axis=1, keepdims=True))).sum(axis=1) / (dx**2).sum()
    return np.column_stack([ys.mean(axis=1) - alpha * x.mean(), alpha])


def _slopes_through(x: np.ndarray, ranges: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The interval of slopes of the lines y = a + slope x that pass through every [lo, hi] range at its x;
    None when no line does."""
    if len(ranges) < 2:
        return None
    low, high = -math.inf, math.inf
    for i in range(len(x)):
        for j in range(len(x)):
            if x[j] > x[i]:
                low = max(low, (ranges[j][0] - ranges[i][1]) / (x[j] - x[i]))
                high = min(high, (ranges[j][1] - ranges[i][0]) / (x[j] - x[i]))
    return (float(low), float(high)) if low <= high + 1e-12 else None


def _precision_note(trials: pd.DataFrame, variant: str) -> str | None:
    if "dtype_used" not in trials.columns:
        return None
    used = trials.loc[trials["variant"] == variant, "dtype_used"].dropna()
    counts = used[used.astype(str) != ""].astype(str).value_counts()
    if len(counts) < 2:
        return None
    listed = ", ".join(f"{name}: {n}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"trials ran under mixed precisions ({listed}): their losses may not be comparable"


def verdict(
    fit: TransferFit, tol: float = 0.25, regret_threshold: float = REGRET_THRESHOLD
) -> tuple[str, list[str]]:
    """transfers | shifts | inconclusive, with the reasons (docs/analysis.md section 7). A shift is claimed
    only when seed noise cannot explain it: not when a line with a slope within ±tol passes through every
    bracketed point's values within noise of its best."""
    reasons: list[str] = list(fit.notes)
    unbracketed = [(s, o["edge"]) for s, o in zip(fit.scales, fit.optima, strict=True) if not o["bracketed"]]
    if not fit.scales:
        reasons.append(f"no finished (completed or diverged) trial of {fit.variant} to fit")
    for scale, optimum in zip(fit.scales, fit.optima, strict=True):
        edge = optimum["edge"]
        if optimum["bracketed"]:
            continue
        if optimum.get("all_diverged"):
            reasons.append(
                f"every value of {fit.hparam} tried at {fit.axis}={scale:g} diverged: no optimum there"
            )
            continue
        direction = "upward" if edge == "high" else "downward"
        reasons.append(
            f"not bracketed at {fit.axis}={scale:g}: the optimum is at the {edge} end; extend the grid {direction}"
        )
    too_few = len(fit.scales) - len(unbracketed) < 3
    if too_few:
        reasons.append(
            f"only {len(fit.scales) - len(unbracketed)} bracketed scale points (3 or more make a fit)"
        )
    if fit.alpha_ci is None:
        return "inconclusive", reasons or ["no fit"]
    if fit.noise_sd is None:
        reasons.append(
            "no setting has two seeds that finished: alpha's interval comes from the scatter of the optima "
            "about the fit, not from seed noise; more seeds (or search.extra_seeds) would measure the noise"
        )
    lo, hi = fit.alpha_ci
    interval = f"alpha {fit.alpha:+.2f}, 90% interval [{lo:+.2f}, {hi:+.2f}]"
    noisy = _noise_reason(fit)
    if (lo > tol or hi < -tol) and too_few:
        # Two points always fit a line exactly: their bootstrap interval says nothing about the noise.
        reasons.insert(0, f"{interval} lies outside ±{tol:g}, from fewer than 3 bracketed points: not a fit")
        return "inconclusive", reasons
    if lo > tol or hi < -tol:
        if not _flat_line_fits(fit, tol) and fit.regret_rel is not None and fit.regret_rel < regret_threshold:
            # The argmin moves, but the small scale's value is as good at the largest: a flat loss whose
            # argmin wanders (seed noise, a wide basin). A shift that costs nothing is not resolved.
            basins = ", ".join(f"{b:.1f}" for b in fit.basin_width if b is not None)
            reasons.insert(
                0,
                f"{interval} lies outside ±{tol:g}, but the smallest {fit.axis}'s optimum costs only "
                f"{fit.regret_rel:.2%} at the largest (below {regret_threshold:.0%}): the loss is flat around "
                f"the optimum (within 1% over {basins} octaves), so where the optimum sits is not resolved",
            )
            return "inconclusive", reasons
        if not _flat_line_fits(fit, tol):
            reasons.insert(
                0,
                f"{interval} lies outside ±{tol:g}: "
                f"the optimum moves about {abs(fit.alpha):.2f} octaves per doubling of {fit.axis}",
            )
            return "shifts", reasons
        a, b = fit.noise_slopes
        reasons[:0] = [
            f"{interval} lies outside ±{tol:g}, but lines with slopes {a:+.2f} to {b:+.2f} pass through "
            f"every {fit.axis}'s optimum within seed noise: the shift is not resolved above the noise",
            *([noisy] if noisy else []),
        ]
        return "inconclusive", reasons
    inside = -tol <= lo and hi <= tol
    if inside:
        reasons.insert(0, f"{interval} within ±{tol:g}")
    elif noisy and fit.noise_sd is not None:
        reasons[:0] = [f"{interval} straddles ±{tol:g}: the optima are within seed noise", noisy]
    else:
        reasons.insert(0, f"{interval} straddles ±{tol:g}: too noisy to tell (more seeds or scale points)")
    regret_ok = fit.regret_rel is not None and fit.regret_rel < regret_threshold
    if fit.regret_rel is not None:
        reasons.append(
            f"transfer regret {fit.regret_rel:.2%} of the best loss at the largest {fit.axis} "
            f"({'below' if regret_ok else 'above'} {regret_threshold:.0%})"
        )
    if inside and regret_ok and not unbracketed and len(fit.scales) >= 3:
        return "transfers", reasons
    return "inconclusive", reasons


def noise_limited(fit: TransferFit, tol: float = 0.25) -> bool:
    """Whether seed noise is what keeps the optimum's movement from being told: alpha's interval
    straddles ±tol while some bracketed point's optimum is within noise over a range of values, or it lies
    outside ±tol but a line with a slope within ±tol passes through every point's within-noise range."""
    if fit.alpha_ci is None or fit.noise_sd is None:
        return False
    lo, hi = fit.alpha_ci
    if lo > tol or hi < -tol:
        return _flat_line_fits(fit, tol)
    return not (-tol <= lo and hi <= tol) and _noise_reason(fit) is not None


def _flat_line_fits(fit: TransferFit, tol: float) -> bool:
    return fit.noise_slopes is not None and fit.noise_slopes[0] <= tol and fit.noise_slopes[1] >= -tol


def _noise_reason(fit: TransferFit) -> str | None:
    """Names the bracketed scale points whose optimum is within seed noise over a range of values."""
    spans = [
        (scale, fit.noise_span(i))
        for i, scale in enumerate(fit.scales)
        if fit.optima[i]["bracketed"] and (fit.noise_span(i) or 0) > 1e-9
    ]
    if not spans:
        return None
    where = ", ".join(
        f"{span:.2f} octaves at {fit.axis}={scale:g}" if i == 0 else f"{span:.2f} at {fit.axis}={scale:g}"
        for i, (scale, span) in enumerate(spans)
    )
    return (
        f"optimum within seed noise (sd {fit.noise_sd:.3g}, {fit.noise_z:g} standard errors) over {where}: "
        "more seeds there (seeds, or search.extra_seeds) would narrow it"
    )


def verify_rows(
    trials: pd.DataFrame,
    study: StudyRecord | dict[str, Any],
    axis: str = "width",
    tol: float = 0.25,
    samples: int = BOOTSTRAP_SAMPLES,
) -> list[dict[str, Any]]:
    """`sweeper verify --json`: per variant (and per value of any other scale axis) and swept key."""
    record = StudyRecord.of(study)
    mode, z = record.objective.mode, record.search.noise_z
    others = [k for k in record.scale_keys if k != axis]
    if counted_trials(trials, axis, *others).empty:
        return []  # nothing finished yet (or no trial has the axis): no transfer to judge
    rows = []
    for variant in dict.fromkeys(trials["variant"]):
        subset = trials[trials["variant"] == variant]
        combos = subset[others].drop_duplicates().to_dict("records") if others else [{}]
        for combo in combos:
            part = subset
            for key, value in combo.items():
                part = part[part[key] == value]
            for hparam in record.swept_keys:
                fit = transfer_fit(part, variant, axis, hparam, mode, samples=samples, z=z)
                name, reasons = verdict(fit, tol)
                row = _verify_row(fit, name, reasons, {k: plain(v) for k, v in combo.items()})
                row["noise_limited"] = name == "inconclusive" and noise_limited(fit, tol)
                rows.append(row)
    return rows


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _verify_row(fit: TransferFit, name: str, reasons: list[str], at: dict[str, Any]) -> dict[str, Any]:
    return {
        "variant": fit.variant,
        "axis": fit.axis,
        "hparam": fit.hparam,
        "alpha": _finite_or_none(fit.alpha),
        "alpha_ci": list(fit.alpha_ci) if fit.alpha_ci else None,
        "drift_octaves": _finite_or_none(fit.drift_octaves),
        "regret_abs": _finite_or_none(fit.regret_abs)
        if fit.regret_abs is None or math.isfinite(fit.regret_abs)
        else None,
        "regret_rel": _finite_or_none(fit.regret_rel),
        "bracketed_all": fit.bracketed_all,
        "verdict": name,
        "reasons": reasons,
        "at": at,
        "scales": fit.scales,
        "optimum_log2": [None if o.get("all_diverged") else o["log2_opt"] for o in fit.optima],
        "all_diverged": [bool(o.get("all_diverged")) for o in fit.optima],
        "best_loss": [_finite_or_none(o["loss"]) for o in fit.optima],
        "bracketed": [o["bracketed"] for o in fit.optima],
        "fit_rms_octaves": _finite_or_none(fit.fit_rms),
        "leave_largest_out_error_octaves": _finite_or_none(fit.leave_largest_out_error),
        "basin_width_octaves": fit.basin_width,
        "penalty_2x": [_finite_or_none(p) for p in fit.penalty_2x],
        "penalty_4x": [_finite_or_none(p) for p in fit.penalty_4x],
        "noise_sd": _finite_or_none(fit.noise_sd),
        "noise_df": fit.noise_df,
        "within_noise_octaves": [fit.noise_span(i) for i in range(len(fit.scales))],
        "noise_slopes": list(fit.noise_slopes) if fit.noise_slopes else None,
    }


def extrapolation_rows(
    trials: pd.DataFrame, study: StudyRecord | dict[str, Any], axis: str, target: float
) -> list[dict[str, Any]]:
    """`sweeper best --<axis> <target> --json`: per variant and swept key, the optimum extrapolated to
    `target` from the power-law fit of the study's optima, with its 90% interval and the verdict."""
    record = StudyRecord.of(study)
    rows = []
    if counted_trials(trials, axis).empty:
        return rows  # nothing finished yet: nothing to extrapolate from
    for variant in dict.fromkeys(trials["variant"]):
        for hparam in record.swept_keys:
            fit = transfer_fit(trials, variant, axis, hparam, record.objective.mode, z=record.search.noise_z)
            name, reasons = verdict(fit)
            row = {
                "variant": variant,
                "axis": axis,
                "target": target,
                "hparam": hparam,
                "value": None,
                "interval": None,
                "alpha": fit.alpha,
                "alpha_ci": list(fit.alpha_ci) if fit.alpha_ci else None,
                "verdict": name,
                "reasons": reasons,
            }
            if fit.alpha is not None:
                centre, interval = fit.predict(target)
                row["value"] = _finite_or_none(pow2(centre))
                row["interval"] = [pow2(interval[0]), pow2(interval[1])] if interval else None
                if row["interval"] is not None and not all(map(math.isfinite, row["interval"])):
                    row["interval"] = None
            rows.append(row)
    return rows
