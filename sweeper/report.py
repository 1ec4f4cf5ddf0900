"""`sweeper report`: figures and a short Markdown report of a study, from its store alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis import counted_trials, optimum_table, verify_rows
from sweeper.display import json_text, optimum_interval_text, setting_text, within_noise_text
from sweeper.joint import with_joint_fits
from sweeper.store import ResultsStore, plain
from sweeper.values import value_text
from trainers.atomic import atomic_write_text


def best_trials(trials: pd.DataFrame, axis: str, mode: str) -> pd.DataFrame:
    """The best finished trial of each variant and value of the scale axis."""
    counted = counted_trials(trials, axis)
    if counted.empty:
        return counted
    done = counted[counted["status"] == "completed"].dropna(subset=["objective"])
    if done.empty:
        return done
    ascending = mode == "min"
    return done.sort_values("objective", ascending=ascending).groupby(["variant", axis], sort=False).head(1)


def steps_ahead(curves: pd.DataFrame, candidate: str, reference: str) -> dict[str, float] | None:
    """How many steps ahead of the reference the candidate is: the step at which the reference reaches the
    candidate's final loss (interpolated) minus the candidate's final step, and their ratio. Positive (ratio
    above 1): the candidate is ahead. Infinite when the reference never gets there."""
    if not {"trial_id", "step", "val_loss"} <= set(curves.columns):
        return None  # no curve of either (missing or unreadable files)
    cand = curves[(curves["trial_id"] == candidate) & curves["val_loss"].notna()].sort_values("step")
    ref = curves[(curves["trial_id"] == reference) & curves["val_loss"].notna()].sort_values("step")
    if cand.empty or ref.empty:
        return None
    target, final_step = float(cand["val_loss"].iloc[-1]), float(cand["step"].iloc[-1])
    below = ref[ref["val_loss"] <= target]
    if below.empty:
        return {"steps_ahead": math.inf, "ratio": math.inf, "reference_reaches": None}
    j = below.index[0]
    position = ref.index.get_loc(j)
    if position == 0:
        reach = float(ref["step"].iloc[0])
    else:
        s0, s1 = ref["step"].iloc[position - 1], ref["step"].iloc[position]
        l0, l1 = ref["val_loss"].iloc[position - 1], ref["val_loss"].iloc[position]
        reach = float(s0 + (s1 - s0) * (l0 - target) / (l0 - l1)) if l0 != l1 else float(s1)
    return {
        "steps_ahead": reach - final_step,
        "ratio": reach / final_step if final_step else math.inf,
        "reference_reaches": reach,
    }


def axis_slices(trials: pd.DataFrame, others: list[str]) -> list[tuple[str, dict[str, Any], pd.DataFrame]]:
    """(label, {other axis: value}, trials there) for each combination of the other scale axes' values,
    in increasing order; one slice of everything when there are none."""
    if not others or any(k not in trials.columns for k in others):
        return [("", {}, trials)]
    combos = trials[others].dropna().drop_duplicates().to_dict("records")
    combos.sort(key=lambda c: [float(c[k]) if isinstance(c[k], int | float) else str(c[k]) for k in others])
    slices = []
    for combo in combos:
        at = {k: plain(v) for k, v in combo.items()}
        mask = np.logical_and.reduce([trials[k] == v for k, v in combo.items()])
        slices.append((", ".join(f"{k}={v}" for k, v in at.items()), at, trials[mask]))
    return slices


def _fmt(value: Any, fmt: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def build_report(store: ResultsStore, out: Path, axis: str | None = None, tracker: Any = None) -> Path:
    from sweeper.plots import (
        plot_best_curves,
        plot_best_loss_vs_scale,
        plot_joint_check,
        plot_joint_optimum,
        plot_loss_vs_hparam,
        plot_optimum_vs_scale,
    )

    record = store.study_record()
    trials = store.current_trials()
    scale_keys = record.scale_keys
    axis = axis or (scale_keys[0] if scale_keys else None)
    mode = record.objective.mode
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    verify = verify_rows(trials, record, axis=axis) if axis else []
    verify = with_joint_fits(verify, trials, record)
    finished = not counted_trials(trials).empty
    if axis and not counted_trials(trials, axis).empty:  # figures of what finished, if anything did
        if any(v is not None for row in verify for v in row["optimum_log2"]):
            figures["optimum vs scale"] = plot_optimum_vs_scale(verify, out / "optimum_vs_scale.png")
        if any(v is not None for row in verify for v in row["best_loss"]):
            figures["best loss vs scale"] = plot_best_loss_vs_scale(verify, out / "best_loss_vs_scale.png")
        # With other scale axes, one set of curves per value of them: a curve that pooled two horizons
        # would show neither (and its star would be one horizon's optimum on the other's curve).
        for label, at, part in axis_slices(trials, [k for k in scale_keys if k != axis]):
            rows = [r for r in verify if r.get("at", {}) == at]
            suffix = f"_{'_'.join(f'{k}{v}' for k, v in at.items())}" if at else ""
            where = f" ({label})" if label else ""
            for hparam in record.swept_keys:
                figures[f"loss vs {hparam}{where}"] = plot_loss_vs_hparam(
                    part, record, axis, hparam, out / f"loss_vs_{hparam}{suffix}.png", rows, where=label
                )
            best = best_trials(part, axis, mode)
            curves = store.curves(best["trial_id"]) if not best.empty else None
            metric = record.objective.metric
            if curves is not None and metric in curves.columns and not curves.empty:
                figures[f"training curves{where}"] = plot_best_curves(
                    curves,
                    best,
                    axis,
                    out / f"best_curves{suffix}.png",
                    variants=list(dict.fromkeys(trials["variant"])),
                    metric=metric,
                    where=label,
                )
    laws = {(r["variant"], r["hparam"]): r for r in verify if r.get("joint_points")}
    for (variant, hparam), row in laws.items():
        figures[f"joint optimum, {variant} {hparam}"] = plot_joint_optimum(
            row, out / f"joint_optimum_{variant}_{hparam}.png"
        )
    if any(r.get("alphas") for r in laws.values()):
        figures["joint law check"] = plot_joint_check(list(laws.values()), out / "joint_check.png")
    coord = store.dir / "coord_check.png"
    if coord.exists():
        figures["coordinate check"] = coord

    lines = [f"# {record.name or store.study}", ""]
    if record.description:
        lines += [record.description.strip(), ""]
    counts = trials["status"].value_counts().to_dict() if not trials.empty else {}
    lines += [
        f"{len(trials)} trials: " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "none yet") + ".",
        f"Objective: {record.objective.describe()}. Search: {record.search.method}.",
        "",
    ]
    if not finished:
        lines += [
            "Nothing has finished yet (no completed or diverged trial): no optimum, verdict or figure.",
            "",
        ]
    if store.unreadable_curves:
        lines += [
            f"{len(store.unreadable_curves)} curve files could not be read and are left out of the figures: "
            + ", ".join(str(p) for p in store.unreadable_curves[:5])
            + (" ..." if len(store.unreadable_curves) > 5 else ""),
            "",
        ]
    if verify:
        lines += [
            "## Verdicts",
            "",
            "| variant | hparam | verdict | alpha | 90% interval | drift (octaves) | regret | bracketed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in verify:
            ci = row["alpha_ci"]
            lines.append(
                f"| {row['variant']} | {row['hparam']} | **{row['verdict']}** | {_fmt(row['alpha'], '+.2f')} | "
                + (f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "-")
                + f" | {_fmt(row['drift_octaves'], '+.2f')} | "
                + (_fmt(row["regret_rel"], ".2%") if row["regret_rel"] is not None else "-")
                + f" | {'yes' if row['bracketed_all'] else 'no'} |"
            )
        lines.append("")
        for row in verify:
            lines.append(f"- **{row['variant']}**: " + "; ".join(row["reasons"]))
        lines.append("")
        lines += _comparison(verify, trials, store, axis, mode)
    table = optimum_table(trials, record)
    if table:
        lines += [
            "## Optimum per variant and scale point",
            "",
            "| variant | "
            + " | ".join(scale_keys)
            + " | best | refined | 90% interval | within noise | objective | seed sd | trials | bracketed |",
            "|---|" + "---|" * len(scale_keys) + "---|---|---|---|---|---|---|---|",
        ]
        for row in table:
            best_text = setting_text(row["best"], row.get("all_diverged"))
            refined = ", ".join(f"{k}={value_text(v)}" for k, v in (row["refined"] or {}).items()) or "-"
            lines.append(
                f"| {row['variant']} | "
                + " | ".join(str(row.get(k)) for k in scale_keys)
                + f" | {best_text} | {refined} | {optimum_interval_text(row)} | "
                + ("-" if row.get("all_diverged") else within_noise_text(row.get("within_noise")))
                + f" | {_fmt(row['objective'])} | "
                + f"{_fmt(row.get('noise_sd'))} | {row['n_trials']} | "
                + {True: "yes", False: "no", None: "-"}[row["bracketed"]]
                + " |"
            )
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for title, path in figures.items():
            lines += [
                f"### {title}",
                "",
                f"![{title}]({Path(path).name if Path(path).parent == out else path})",
                "",
            ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    atomic_write_text(out / "verify.json", json_text(verify, indent=1) + "\n")
    if tracker is not None:
        tables = {
            "verify": pd.DataFrame(
                [{k: v for k, v in r.items() if not isinstance(v, list | dict)} for r in verify]
            )
        }
        if table:
            tables["optimum"] = pd.DataFrame(
                [{**r, "best": json.dumps(r["best"]), "refined": json.dumps(r["refined"])} for r in table]
            )
        tracker.log_study_summary(tables=tables, images=figures)
    return report


def _comparison(
    verify: list[dict], trials: pd.DataFrame, store: ResultsStore, axis: str, mode: str
) -> list[str]:
    """Best-loss ratio of each variant to the first, per scale, and steps ahead at the largest scale."""
    variants = list(dict.fromkeys(r["variant"] for r in verify))
    if len(variants) < 2:
        return []
    reference = variants[0]
    by_variant = {r["variant"]: r for r in verify}
    ref = by_variant[reference]
    if not ref["scales"]:
        return []  # the reference has nothing finished to compare against
    lines = [
        f"## Variants against {reference}",
        "",
        f"Best loss divided by {reference}'s best loss at each {axis} (below 1: better than {reference}).",
        "",
        "| variant | " + " | ".join(f"{axis} {s:g}" for s in ref["scales"]) + f" | steps ahead at {axis} "
        f"{ref['scales'][-1]:g} |",
        "|---|" + "---|" * (len(ref["scales"]) + 1),
    ]
    best = best_trials(trials, axis, mode)
    largest = ref["scales"][-1]
    for variant in variants[1:]:
        row = by_variant[variant]
        ratios = []
        for scale, ref_loss in zip(ref["scales"], ref["best_loss"], strict=True):
            loss = row["best_loss"][row["scales"].index(scale)] if scale in row["scales"] else None
            ratios.append(_fmt(loss / ref_loss if loss is not None and ref_loss else None, ".4f"))
        ahead = "-"
        cand = best[(best["variant"] == variant) & (best[axis].astype(float) == largest)]
        base = best[(best["variant"] == reference) & (best[axis].astype(float) == largest)]
        if not cand.empty and not base.empty:
            ids = [cand["trial_id"].iloc[0], base["trial_id"].iloc[0]]
            result = steps_ahead(store.curves(ids), *ids)
            if result is not None:
                ahead = (
                    f"{result['steps_ahead']:+.0f} ({result['ratio']:.2f}x)"
                    if math.isfinite(result["steps_ahead"])
                    else f"ahead: {reference} never gets there"
                )
        lines.append(f"| {variant} | " + " | ".join(ratios) + f" | {ahead} |")
    return [*lines, ""]
