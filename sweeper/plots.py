"""Matplotlib figures (imported inside commands: matplotlib is slow to import)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

MODULE_STYLE = {
    "embedding": ("#1b9e77", "o"),
    "attention": ("#d95f02", "s"),
    "mlp": ("#7570b3", "^"),
    "block": ("#e7298a", "D"),
    "logits": ("#444444", "v"),
}


def plot_coord_check(results: list[tuple[str, Any]], path: str | Path) -> Path:
    """One row per labelled CoordCheckResult, one log-log panel per step, one line per module kind.

    Each legend entry carries the fitted slope and a tick or a cross; failing lines are dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted({row["step"] for _, r in results for row in r.rows})
    fig, axes = plt.subplots(
        len(results), len(steps), figsize=(3.3 * len(steps), 4.3 * len(results)), squeeze=False, sharex=True
    )
    for row_axes, (label, result) in zip(axes, results, strict=True):
        slopes = {(s["module"], s["step"]): s for s in result.slopes}
        widths = sorted({row["width"] for row in result.rows})
        for ax, step in zip(row_axes, steps, strict=True):
            for module, (color, marker) in MODULE_STYLE.items():
                values = [r["l1"] for r in result.rows if r["module"] == module and r["step"] == step]
                if not values:
                    continue
                fit = slopes[(module, step)]
                plotted = [max(v, 1e-12) for v in values]
                ax.plot(
                    widths,
                    plotted,
                    color=color,
                    marker=marker,
                    markersize=4,
                    linestyle="-" if fit["ok"] else "--",
                    linewidth=1.4 if fit["ok"] else 2.0,
                    label=f"{module} {fit['slope']:+.2f} {'ok' if fit['ok'] else 'FAIL'}",
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.tick_params(labelbottom=True)
            ax.minorticks_off()
            ax.grid(alpha=0.3, which="both")
            ax.set_title(f"t = {step}" + (" (init)" if step == 1 else ""), fontsize=10)
            ax.set_xlabel("width", fontsize=8, labelpad=1)
            ax.legend(
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.16),
                ncol=2,
                frameon=False,
                title="module, slope vs width",
                title_fontsize=7,
                handlelength=1.6,
                columnspacing=0.8,
            )
        row_axes[0].set_ylabel(f"{label}\nmean |activation|", fontsize=9)
        verdict = "PASS" if result.passed else "FAIL"
        row_axes[-1].annotate(
            verdict,
            xy=(1.02, 0.5),
            xycoords="axes fraction",
            rotation=-90,
            va="center",
            fontsize=11,
            color="#1a7f37" if result.passed else "#cf222e",
            fontweight="bold",
        )
    tol = results[0][1].tolerance
    fig.suptitle(
        f"Coordinate check: slope of log|activation| vs log width must stay within ±{tol:g} "
        "(logits may shrink when the readout starts nonzero under muP)",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    from trainers.atomic import atomic_write

    untangle_ticks(fig)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))
    return path


def tick_overlaps(fig) -> list[str]:
    """Tick labels that overlap a neighbour on the same axis, as `<axes title> x: '1e5' / '2e5'`, drawn at
    the size the figure is saved at."""
    fig.canvas.draw()
    get = getattr(fig.canvas, "get_renderer", None)
    renderer = get() if get is not None else fig._get_renderer()
    found = []
    for ax in fig.axes:
        for name, labels in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
            shown = [t for t in labels if t.get_visible() and t.get_text().strip()]
            boxes = [(t.get_window_extent(renderer), t.get_text()) for t in shown]
            boxes.sort(key=lambda b: b[0].x0 if name == "x" else b[0].y0)
            for (a, a_text), (b, b_text) in itertools.pairwise(boxes):
                if a.overlaps(b):
                    found.append(f"{ax.get_title() or ax.get_ylabel()} {name}: {a_text!r} / {b_text!r}")
    return found


def untangle_ticks(fig) -> None:
    """No two tick labels of an axis overlap: crowded x labels are turned 30 degrees, then upright, and an
    axis still crowded keeps every other label, as often as it takes."""
    for _ in range(8):
        crowded = tick_overlaps(fig)
        if not crowded:
            return
        for ax in fig.axes:
            title = ax.get_title() or ax.get_ylabel()
            for name in ("x", "y"):
                if not any(c.startswith(f"{title} {name}:") for c in crowded):
                    continue
                labels = ax.get_xticklabels() if name == "x" else ax.get_yticklabels()
                turned = labels[0].get_rotation() if labels else 0
                if name == "x" and turned < 90:
                    ax.tick_params(axis="x", labelrotation=30 if turned == 0 else 90)
                    for label in ax.get_xticklabels():
                        label.set_horizontalalignment("right" if turned == 0 else "center")
                else:
                    shown = [t for t in labels if t.get_visible() and t.get_text().strip()]
                    for label in shown[1::2]:
                        label.set_visible(False)
        fig.tight_layout()


def _legend(ax, **kwargs: Any) -> None:
    """A legend where there is something to label (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def plot_loss_vs_hparam(
    trials, record: Any, axis: str, hparam: str, path: str | Path, verify: list[dict], where: str = ""
) -> Path:
    """The muTransfer figure: loss against log2(hparam), one curve per scale (light to dark), one panel per
    variant, a band of one standard error over seeds, the optimum starred, diverged settings as crosses."""
    import numpy as np

    from sweeper.analysis import loss_cells
    from sweeper.objective import seed_mean, seed_sem
    from sweeper.record import StudyRecord

    record = StudyRecord.of(record)
    rule = record.objective
    plt = _pyplot()
    variants = list(dict.fromkeys(trials["variant"]))
    # At least 7 inches wide: the title names the study, the key and the axis, and a single panel is narrower.
    fig, axes = plt.subplots(
        1, len(variants), figsize=(max(4.6 * len(variants), 7.0), 4.0), squeeze=False, sharey=True
    )
    scales = sorted(float(s) for s in trials[axis].dropna().unique())
    cmap = plt.get_cmap("viridis")
    colours = {s: cmap(0.1 + 0.8 * i / max(len(scales) - 1, 1)) for i, s in enumerate(scales)}
    sign = 1.0 if rule.mode == "min" else -1.0
    finite_all = []
    for ax, variant in zip(axes[0], variants, strict=True):
        cells = loss_cells(trials, variant, axis, hparam, rule.mode)
        fit = next((v for v in verify if v["variant"] == variant and v["hparam"] == hparam), None)
        for scale in scales:
            # Per value of hparam, its best setting of any other swept keys: the curve `verify` fits.
            best: dict[float, np.ndarray] = {}
            for at, x, losses in cells:
                if at == scale and (x not in best or seed_mean(losses) < seed_mean(best[x])):
                    best[x] = losses
            if not best:
                continue
            diverged = [x for x in sorted(best) if not np.isfinite(seed_mean(best[x]))]
            kept = [x for x in sorted(best) if np.isfinite(seed_mean(best[x]))]
            xs = np.array(kept)
            means = np.array([rule.objective(seed_mean(best[x])) for x in kept], dtype=float)
            sems = np.array([np.nan_to_num(seed_sem(best[x])) for x in kept], dtype=float)
            order = np.argsort(xs)
            xs, means, sems = xs[order], means[order], sems[order]
            colour = colours[scale]
            ax.plot(xs, means, "-o", color=colour, markersize=3, linewidth=1.5, label=f"{axis} {scale:g}")
            if (sems > 0).any():
                ax.fill_between(xs, means - sems, means + sems, color=colour, alpha=0.2, linewidth=0)
            finite_all.extend(means.tolist())
            if diverged:
                ax.plot(
                    diverged, [np.nan] * len(diverged), "x", color=colour
                )  # placed after limits are known
                ax._sweeper_diverged = [*getattr(ax, "_sweeper_diverged", []), (diverged, colour)]
            i = fit["scales"].index(scale) if fit is not None and scale in fit["scales"] else None
            if i is not None and fit["optimum_log2"][i] is not None:  # none where every value diverged
                x_opt = fit["optimum_log2"][i]
                y_opt = np.interp(x_opt, xs, means) if len(xs) else np.nan
                ax.plot(
                    [x_opt],
                    [y_opt],
                    marker="*",
                    markersize=12,
                    color=colour,
                    markeredgecolor="black" if fit["bracketed"][i] else "red",
                    markeredgewidth=0.8,
                )
        title = variant
        if fit is not None:
            title += f": {fit['verdict']}"
            if fit["alpha"] is not None:
                title += f", alpha {fit['alpha']:+.2f}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"log2 {hparam}")
        ax.grid(alpha=0.3)
    if finite_all:
        lo, hi = min(finite_all), np.quantile(finite_all, 0.9)
        span = hi - lo
        for ax in axes[0]:
            ax.set_ylim(lo - 0.05 * span, hi + 0.25 * span)
            for diverged, colour in getattr(ax, "_sweeper_diverged", []):
                ax.plot(
                    diverged,
                    [hi + 0.2 * span] * len(diverged),
                    "x",
                    color=colour,
                    markersize=7,
                    markeredgewidth=2,
                )
    axes[0][0].set_ylabel(f"{rule.use} {rule.metric}" + ("" if sign > 0 else " (max)"))
    axes[0][-1].legend(
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0,
        title="star: optimum\n(red edge: not bracketed)\nx: diverged",
        title_fontsize=7,
    )
    at = f" at {where}" if where else ""
    fig.suptitle(f"{record.name}: loss against {hparam}, one curve per {axis}{at}", fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return _save(fig, path)


def plot_optimum_vs_scale(verify: list[dict], path: str | Path) -> Path:
    """log2 h* against log2 scale with the fitted power law and its 90% band, one line per variant."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2 + (0.18 * len(verify) if len(verify) > 3 else 0)))
    colours = plt.get_cmap("tab10")
    for i, row in enumerate(verify):
        colour = colours(i % 10)
        scales = np.array(row["scales"], dtype=float)
        ys = np.array([np.nan if y is None else y for y in row["optimum_log2"]], dtype=float)
        bracketed = np.array(row["bracketed"], dtype=bool)
        label = f"{row['variant']} ({row['hparam']}{_at_text(row)})"
        if row["alpha"] is not None:
            lo, hi = row["alpha_ci"]
            label += f": alpha {row['alpha']:+.2f} [{lo:+.2f}, {hi:+.2f}], {row['verdict']}"
            xs = np.log2(scales)
            grid = np.linspace(xs.min(), xs.max(), 50)
            slope, intercept = row["alpha"], np.mean(ys[bracketed]) - row["alpha"] * np.mean(xs[bracketed])
            ax.plot(2**grid, slope * grid + intercept, "-", color=colour, linewidth=1.2)
            ax.fill_between(
                2**grid,
                lo * (grid - xs[bracketed].mean()) + ys[bracketed].mean(),
                hi * (grid - xs[bracketed].mean()) + ys[bracketed].mean(),
                color=colour,
                alpha=0.12,
            )
        else:
            label += f": {row['verdict']}"
        ax.plot(scales[bracketed], ys[bracketed], "o", color=colour, label=label)
        ax.plot(scales[~bracketed], ys[~bracketed], "o", mfc="none", color=colour)
    ax.set_xscale("log", base=2)
    axis = verify[0]["axis"] if verify else "scale"
    ax.set_xlabel(axis)
    ax.set_ylabel("log2 optimum")
    ax.grid(alpha=0.3)
    if len(verify) > 3:  # a legend of many lines inside the axes hides points: below them instead
        _legend(ax, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    else:
        _legend(ax, fontsize=7, loc="best")
    ax.set_title("Optimum against scale (open circles: not bracketed, not fitted)", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return _save(fig, path)


def plot_best_curves(
    curves,
    best_trials,
    axis: str,
    path: str | Path,
    variants: list[str] | None = None,
    metric: str = "val_loss",
    where: str = "",
) -> Path:
    """The objective's metric (validation loss for the built-in trainer) against tokens (steps when the
    trainer reports no tokens) for the best trial of each variant and scale point (`where`: the values
    of the other scale axes, for the title)."""
    plt = _pyplot()
    variants = variants or list(dict.fromkeys(best_trials["variant"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(4.6 * len(variants), 3.8), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    scales = sorted(float(s) for s in best_trials[axis].unique())
    shown = curves[curves[metric].notna()]
    x = "tokens" if "tokens" in shown.columns and shown["tokens"].notna().all() else "step"
    log_y = bool((shown[metric] > 0).all())
    for ax, variant in zip(axes[0], variants, strict=True):
        rows = best_trials[best_trials["variant"] == variant]
        for _, trial in rows.assign(_scale=rows[axis].astype(float)).sort_values("_scale").iterrows():
            curve = shown[shown["trial_id"] == trial["trial_id"]]
            i = scales.index(float(trial[axis]))
            ax.plot(
                curve[x],
                curve[metric],
                "-",
                color=cmap(0.1 + 0.8 * i / max(len(scales) - 1, 1)),
                label=f"{axis} {float(trial[axis]):g}",
            )
        ax.set_title(variant, fontsize=10)
        ax.set_xlabel(x)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    if log_y:
        _loss_ticks(axes[0])
    label = "validation loss" if metric == "val_loss" else metric.replace("_", " ")
    axes[0][0].set_ylabel(f"{label} (log scale)" if log_y else label)
    _legend(axes[0][-1], fontsize=8)
    at = f"\nat {where}" if where else ""  # a line of its own: one panel is narrow
    fig.suptitle(f"Training curves of the best trial per scale point{at}", fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return _save(fig, path)


def _loss_ticks(axes) -> None:
    """Plain-number ticks on log-scaled loss axes."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    low, high = axes[0].get_ylim()
    ticks = [t for t in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16, 20, 30) if low <= t <= high]
    for ax in axes:
        ax.set_yticks(ticks)
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())


def _at_text(row: dict) -> str:
    """`, tokens=153600`: the other scale axes' values a verify row holds fixed ("" when none)."""
    return "".join(f", {k}={v}" for k, v in (row.get("at") or {}).items())


def plot_best_loss_vs_scale(verify: list[dict], path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for row in verify:
        losses = [(s, v) for s, v in zip(row["scales"], row["best_loss"], strict=True) if v is not None]
        if losses:
            label = f"{row['variant']} ({_at_text(row)[2:]})" if row.get("at") else row["variant"]
            ax.plot([s for s, _ in losses], [v for _, v in losses], "-o", label=label)
    ax.set_xscale("log", base=2)
    axis = verify[0]["axis"] if verify else "scale"
    ax.set_xlabel(axis)
    ax.set_ylabel("best loss")
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    ax.set_title("Best loss against scale", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return _save(fig, path)


def plot_joint_optimum(row: dict, path: str | Path) -> Path:
    """The optimum over the first two scale axes of a joint law: each measured point coloured by its log2
    optimum (open: not bracketed), and the fitted plane's contours (other axes at their largest value)."""
    import numpy as np

    plt = _pyplot()
    axes = row["axes"]
    points = np.array(row["joint_points"], dtype=float)
    optima = np.array([np.nan if y is None else y for y in row["joint_optimum_log2"]], dtype=float)
    bracketed = np.array(row["joint_bracketed"], dtype=bool)
    x, y = np.log2(points[:, 0]), np.log2(points[:, 1])
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    finite = np.isfinite(optima)
    lo, hi = (np.nanmin(optima), np.nanmax(optima)) if finite.any() else (0.0, 1.0)
    if row.get("alphas"):
        gx, gy = np.meshgrid(
            np.linspace(x.min() - 0.3, x.max() + 0.3, 40), np.linspace(y.min() - 0.3, y.max() + 0.3, 40)
        )
        rest = sum(row["alphas"][a] * np.log2(points[:, i].max()) for i, a in enumerate(axes) if i > 1)
        intercept = np.nanmean(optima[bracketed] - _plane(row, points[bracketed]))
        plane = intercept + row["alphas"][axes[0]] * gx + row["alphas"][axes[1]] * gy + rest
        lines = ax.contour(2**gx, 2**gy, plane, levels=8, colors="grey", linewidths=0.8)
        ax.clabel(lines, fmt=lambda v: f"2^{v:.1f}", fontsize=7)
    sc = ax.scatter(
        2 ** x[bracketed], 2 ** y[bracketed], c=optima[bracketed], cmap="viridis", vmin=lo, vmax=hi, s=70
    )
    ax.scatter(
        2 ** x[~bracketed],
        2 ** y[~bracketed],
        facecolors="none",
        edgecolors="red",
        s=70,
        label="not bracketed",
    )
    fig.colorbar(sc, ax=ax, label=f"log2 optimal {row['hparam']}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlim(2 ** (x.min() - 0.3), 2 ** (x.max() + 0.3))  # room for the markers on the edges
    ax.set_ylim(2 ** (y.min() - 0.3), 2 ** (y.max() + 0.3))
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    if row.get("alphas"):
        law = ", ".join(f"{a} {row['alphas'][a]:+.2f}" for a in axes)
        ax.set_title(f"{row['variant']}: {row['hparam']} optimum; fitted exponents {law}", fontsize=9)
    else:
        ax.set_title(f"{row['variant']}: {row['hparam']} optimum (no joint fit)", fontsize=9)
    if (~bracketed).any():
        _legend(ax, fontsize=7, loc="best")
    fig.tight_layout()
    plt.close(fig)
    return _save(fig, path)


def _plane(row: dict, points):
    """sum_k alpha_k log2 s_k at each point (the law without its intercept)."""
    import numpy as np

    return sum(row["alphas"][a] * np.log2(points[:, i]) for i, a in enumerate(row["axes"]))


def plot_joint_check(rows: list[dict], path: str | Path) -> Path:
    """Measured against predicted log2 optimum at every bracketed point of each joint law, with the
    leave-one-corner-out prediction of the largest corner marked."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 4.6))
    colours = plt.get_cmap("tab10")
    low, high = math.inf, -math.inf
    for i, row in enumerate(r for r in rows if r.get("alphas")):
        points = np.array(row["joint_points"], dtype=float)
        optima = np.array([np.nan if y is None else y for y in row["joint_optimum_log2"]], dtype=float)
        keep = np.array(row["joint_bracketed"], dtype=bool) & np.isfinite(optima)
        plane = _plane(row, points[keep])
        predicted = np.mean(optima[keep] - plane) + plane
        ax.plot(
            predicted, optima[keep], "o", color=colours(i % 10), label=f"{row['variant']} ({row['hparam']})"
        )
        error = row.get("leave_corner_out_error_octaves")
        if error is not None:
            corner = int(np.argmax(points[keep].sum(axis=1)))
            measured = optima[keep][corner]
            ax.plot(measured + error, measured, "*", ms=13, mfc="none", color=colours(i % 10))
        low, high = (
            min(low, predicted.min(), optima[keep].min()),
            max(high, predicted.max(), optima[keep].max()),
        )
    if math.isfinite(low):
        ax.plot([low - 0.5, high + 0.5], [low - 0.5, high + 0.5], "--", color="grey", linewidth=0.8)
    ax.set_xlabel("predicted log2 optimum (joint law)")
    ax.set_ylabel("measured log2 optimum")
    ax.set_title(
        "Joint law: measured against predicted\n(star: the largest corner, predicted without it)", fontsize=9
    )
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7, loc="best")
    fig.tight_layout()
    plt.close(fig)
    return _save(fig, path)
