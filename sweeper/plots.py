"""Matplotlib figures (imported inside commands: matplotlib is slow to import)."""

from __future__ import annotations

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
