"""A joint law over several scale axes: log2 h* = a + sum_k alpha_k log2 s_k, fitted by least squares over
the bracketed scale points of one variant, with bootstrap intervals for every exponent.

Each scale point's optimum is found as the one-axis analysis finds it (seed means, profiled over the other
swept keys, parabola-refined argmin, bracketing); the intervals redraw every point's optimum from its
settings' seed means with the pooled seed noise (or resample its seeds when there is none), exactly as
`analysis.transfer_fit` does along one axis. The leave-one-corner-out check fits without the point that is
largest on every axis and predicts it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis import (
    BOOTSTRAP_SAMPLES,
    counted_trials,
    curve_optimum,
    curves_from_cells,
    draw_curves,
    draw_optima,
    pooled_sd,
)
from sweeper.objective import Objective

Point = tuple[float, ...]


@dataclass
class JointFit:
    variant: str
    hparam: str
    axes: list[str]
    points: list[Point]
    optima: list[dict[str, Any]]
    intercept: float | None = None
    alphas: dict[str, float] | None = None
    alphas_ci: dict[str, list[float]] | None = None
    fit_rms: float | None = None
    corner_error: float | None = None  # predicted minus measured log2 optimum at the largest corner
    notes: list[str] = field(default_factory=list)
    refits: np.ndarray | None = None  # (samples, 1 + axes) bootstrap coefficients

    def verdicts(self, tol: float = 0.25) -> dict[str, str]:
        """Per axis: transfers (its interval within ±tol), shifts (entirely outside), else inconclusive."""
        if self.alphas_ci is None:
            return {axis: "inconclusive" for axis in self.axes}
        out = {}
        for axis, (lo, hi) in self.alphas_ci.items():
            out[axis] = (
                "transfers"
                if -tol <= lo and hi <= tol
                else "shifts"
                if lo > tol or hi < -tol
                else "inconclusive"
            )
        return out

    def predict(self, target: dict[str, float]) -> float | None:
        """The log2 optimum the law gives at a scale point (every axis given)."""
        if self.alphas is None or self.intercept is None:
            return None
        return self.intercept + sum(self.alphas[a] * math.log2(target[a]) for a in self.axes)


def joint_cells(trials: pd.DataFrame, variant: str, axes: list[str], hparam: str, mode: str) -> list:
    """One cell per (scale point, setting of the swept keys): (point, log2 value, per-seed losses)."""
    rows = counted_trials(trials, *axes)
    rows = rows[rows["variant"] == variant]
    rule = Objective(mode=mode)
    cells = []
    for key, cell in rows.groupby([*axes, "swept"]):
        *point, swept = key
        value = json.loads(swept).get(hparam)
        if not isinstance(value, int | float) or value <= 0:
            continue
        losses = rule.trial_losses(cell["status"], cell["objective"])
        cells.append((tuple(float(p) for p in point), math.log2(float(value)), losses))
    return cells


def joint_fit(
    trials: pd.DataFrame,
    variant: str,
    axes: list[str],
    hparam: str,
    mode: str = "min",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> JointFit:
    cells = joint_cells(trials, variant, axes, hparam, mode)
    curves = curves_from_cells(cells)
    points = sorted(curves)
    optima = [curve_optimum(curves[p]) for p in points]
    fit = JointFit(variant, hparam, list(axes), points, optima)
    usable = [p for p, o in zip(points, optima, strict=True) if o["bracketed"]]
    design = np.array([[1.0, *np.log2(p)] for p in usable]) if usable else np.zeros((0, len(axes) + 1))
    if len(usable) < len(axes) + 2 or np.linalg.matrix_rank(design) < len(axes) + 1:
        fit.notes.append(
            f"{len(usable)} bracketed scale points do not determine {len(axes)} exponents and an intercept "
            f"with a residual (need {len(axes) + 2} or more, varying along every axis)"
        )
        return fit
    y = np.array([o["log2_opt"] for p, o in zip(points, optima, strict=True) if o["bracketed"]])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    fit.intercept = float(coef[0])
    fit.alphas = {axis: float(c) for axis, c in zip(axes, coef[1:], strict=True)}
    residuals = y - design @ coef
    fit.fit_rms = float(np.sqrt(np.mean(residuals**2)))
    corner = max(usable)
    if all(corner[i] == max(p[i] for p in points) for i in range(len(axes))):
        keep = [i for i, p in enumerate(usable) if p != corner]
        if len(keep) >= len(axes) + 1 and np.linalg.matrix_rank(design[keep]) == len(axes) + 1:
            partial, *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
            i = usable.index(corner)
            fit.corner_error = float(design[i] @ partial - y[i])
    sd, _ = pooled_sd(losses for _, _, losses in cells)
    rng = np.random.default_rng(seed)
    if sd is not None or min(len(losses) for _, _, losses in cells) > 1:
        ys = np.column_stack(
            [
                draw_optima(*draw_curves([(k, losses) for s, k, losses in cells if s == p], sd, rng, samples))
                for p in usable
            ]
        )
    else:  # one seed and no noise estimate: resample the residuals
        ys = (design @ coef) + rng.choice(residuals, (samples, len(residuals)), replace=True)
    refits = np.linalg.lstsq(design, ys.T, rcond=None)[0].T  # (samples, 1 + axes)
    fit.refits = refits
    fit.alphas_ci = {
        axis: [float(np.percentile(refits[:, j + 1], 5)), float(np.percentile(refits[:, j + 1], 95))]
        for j, axis in enumerate(axes)
    }
    return fit


def joint_keys(fit: JointFit, tol: float = 0.25) -> dict[str, Any]:
    """The keys a multi-axis study's `verify --json` rows gain."""
    return {
        "axes": fit.axes,
        "alphas": fit.alphas,
        "alphas_ci": fit.alphas_ci,
        "joint_verdicts": fit.verdicts(tol),
        "joint_fit_rms_octaves": fit.fit_rms,
        "leave_corner_out_error_octaves": fit.corner_error,
        "joint_points": [list(p) for p in fit.points],
        "joint_optimum_log2": [o["log2_opt"] if not o.get("all_diverged") else None for o in fit.optima],
        "joint_bracketed": [o["bracketed"] for o in fit.optima],
        "joint_notes": fit.notes,
    }


def numeric_axes(trials: pd.DataFrame, scale_keys: list[str]) -> list[str]:
    """The scale axes a power law can run along: present, with positive numbers only (an axis of names,
    say `norm: [layernorm, rmsnorm]`, has no log2)."""
    out = []
    for axis in scale_keys:
        if axis not in trials.columns:
            continue
        values = pd.to_numeric(trials[axis], errors="coerce")
        if values.notna().all() and (values > 0).all():
            out.append(axis)
    return out


def with_joint_fits(
    rows: list[dict[str, Any]],
    trials: pd.DataFrame,
    record: Any,
    tol: float = 0.25,
    samples: int = BOOTSTRAP_SAMPLES,
) -> list[dict[str, Any]]:
    """`verify` rows of a study with two or more scale axes, each with the joint law of its variant and
    swept key over all of them added (`joint_keys`); a one-axis study's rows as they are."""
    axes = numeric_axes(trials, record.scale_keys)
    if len(axes) < 2 or len(axes) < len(record.scale_keys):
        return rows  # one axis, or an axis of names (whose values the law could not keep apart)
    fits: dict[tuple[str, str], JointFit] = {}
    for row in rows:
        key = (row["variant"], row["hparam"])
        if key not in fits:
            fits[key] = joint_fit(trials, *key[:1], axes, key[1], record.objective.mode, samples=samples)
        row.update(joint_keys(fits[key], tol))
    return rows


BEYOND = 4.0  # a target more than this factor outside an axis's measured range gets a warning


def joint_extrapolation_rows(
    trials: pd.DataFrame, record: Any, targets: dict[str, float], samples: int = BOOTSTRAP_SAMPLES
) -> list[dict[str, Any]]:
    """`sweeper best --width W --tokens T --json` on a multi-axis study: per variant and swept key, the
    optimum the joint law predicts at the target (axes not given: their largest measured value), with
    the 90% interval of the bootstrap refits' predictions."""
    from sweeper.analysis import pow2

    axes = numeric_axes(trials, record.scale_keys)
    rows: list[dict[str, Any]] = []
    if len(axes) < len(record.scale_keys) or counted_trials(trials, *axes).empty:
        return rows  # an axis of names has no power law to evaluate
    first = next(iter(targets))
    for variant in dict.fromkeys(trials["variant"]):
        for hparam in record.swept_keys:
            fit = joint_fit(trials, variant, axes, hparam, record.objective.mode, samples=samples)
            measured = {a: [p[i] for p in fit.points] for i, a in enumerate(axes)}
            point = {a: targets.get(a, max(measured[a]) if measured[a] else math.nan) for a in axes}
            row: dict[str, Any] = {
                "variant": variant,
                "axis": first,
                "target": targets[first],
                "targets": point,
                "hparam": hparam,
                "value": None,
                "interval": None,
                "alpha": None if fit.alphas is None else fit.alphas[first],
                "alpha_ci": None if fit.alphas_ci is None else fit.alphas_ci[first],
                "alphas": fit.alphas,
                "alphas_ci": fit.alphas_ci,
                "verdict": fit.verdicts()[first],
                "reasons": list(fit.notes),
                "warning": _beyond(point, measured),
            }
            centre = fit.predict(point)
            if centre is not None and fit.refits is not None:
                x = np.array([1.0, *(math.log2(point[a]) for a in axes)])
                draws = fit.refits @ x
                row["value"] = pow2(centre)
                row["interval"] = [
                    pow2(float(np.percentile(draws, 5))),
                    pow2(float(np.percentile(draws, 95))),
                ]
                if not all(map(math.isfinite, [row["value"], *row["interval"]])):
                    row["value"] = row["value"] if math.isfinite(row["value"]) else None
                    row["interval"] = None
            rows.append(row)
    return rows


def _beyond(point: dict[str, float], measured: dict[str, list[float]]) -> str | None:
    far = []
    for axis, value in point.items():
        values = measured.get(axis) or []
        if not values:
            continue
        lo, hi = min(values), max(values)
        if value > hi * BEYOND or value < lo / BEYOND:
            far.append(
                f"{axis}={value:g} is {max(value / hi, lo / value):.0f}x beyond the measured {lo:g}..{hi:g}"
            )
    return "; ".join(far) + ": a long extrapolation, check the law there" if far else None
