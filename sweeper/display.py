"""Rich progress and summaries for the CLI (on stderr, so stdout stays clean for --json)."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sweeper.values import from_log2, value_text

stderr = Console(stderr=True)


def stdout_console() -> Console:
    """A console for tables: the terminal's width, or wide enough for whole rows when piped."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def json_safe(value: Any) -> Any:
    """A value that `json.dumps(..., allow_nan=False)` takes: numpy scalars and arrays as Python values,
    NaN and +-inf as null, tuples as lists, paths as strings, nested in dicts and lists."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return None if type(value).__name__ in ("NAType", "NaTType") else str(value)  # pandas' missing values


def json_text(value: Any, **kwargs: Any) -> str:
    """Always valid JSON (RFC 8259: no NaN or Infinity tokens) for every `--json` output."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def _fmt(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


class TrainProgress:
    """A progress bar for one training run, fed by the trainer's reports."""

    def __init__(self, total_steps: int) -> None:
        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=stderr,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, status="")
        self.started = False

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def update(self, point: dict[str, Any]) -> None:
        if not self.started:  # not before the first report: a set-up error must stay one line
            self.progress.start()
            self.started = True
        status = (
            f"train {_fmt(point['train_loss'])}  val {_fmt(point['val_loss'])}  "
            f"{_fmt(point['tokens_per_s'], ',.0f')} tok/s"
        )
        self.progress.update(self.task, completed=point["step"], status=status)


def print_train_summary(cfg: Any, summary: dict[str, Any]) -> None:
    table = Table(title=f"{cfg.parameterization}  width {cfg.width}  depth {cfg.depth}  lr {cfg.lr:g}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "status",
        "final_val_loss",
        "best_val_loss",
        "final_train_loss",
        "steps",
        "tokens",
        "wall_s",
        "tokens_per_s",
        "n_params",
        "device",
        "divergence_reason",
    ):
        value = summary.get(key)
        if value is None and key == "divergence_reason":
            continue
        text = (
            _fmt(value, ",.1f" if key in ("tokens_per_s", "wall_s") else ".4f")
            if isinstance(value, float)
            else str(value)
        )
        table.add_row(key, text)
    stdout_console().print(table)


def _param_value_text(value: float) -> str:
    if value == 0:
        return "0"
    if 0.01 <= abs(value) < 1000:
        return f"{value:.4g}"
    return f"{value:.3e}"


def print_params_table(cfg: Any, rows: list[dict[str, Any]], notes: list[str]) -> None:
    title = f"{cfg.parameterization}" + (f" (alignment {cfg.alignment})" if cfg.alignment else "")
    title += f"  width {cfg.width} (base {cfg.effective_base_width})  depth {cfg.depth}  lr {cfg.lr:g}"
    table = Table(title=title, caption="  ".join(notes) if notes else None)
    for column in rows[0] if rows else ():  # the table keys, in their order (ParamPlan.TABLE_KEYS)
        table.add_column(column, justify="left" if column in ("name", "role", "shape") else "right")
    for row in rows:
        table.add_row(
            row["name"],
            row["role"],
            "x".join(map(str, row["shape"])),
            str(row["fan_in"]),
            str(row["fan_out"]),
            f"{row['width_mult']:g}",
            _param_value_text(row["init_std"]),
            _param_value_text(row["multiplier"]),
            _param_value_text(row["lr"]),
            _param_value_text(row["weight_decay"]),
            "tied" if row["tied"] else "",
            row.get("optimizer", ""),
        )
    stdout_console().print(table)


def print_coord_check(result: Any, widths: list[int]) -> None:
    steps = sorted({s["step"] for s in result.slopes})
    table = Table(
        title=f"coordinate check over widths {', '.join(map(str, widths))}: slope of log|activation| "
        f"vs log width (tolerance ±{result.tolerance:g})"
    )
    table.add_column("module")
    for step in steps:
        table.add_column(f"t={step}", justify="right")
    for module in dict.fromkeys(s["module"] for s in result.slopes):
        cells = []
        for step in steps:
            fit = next(s for s in result.slopes if s["module"] == module and s["step"] == step)
            cells.append(f"{fit['slope']:+.2f}" if fit["ok"] else f"[bold red]{fit['slope']:+.2f} x[/]")
        table.add_row(module, *cells)
    console = stdout_console()
    console.print(table)
    if result.passed:
        console.print("[bold green]PASS[/]: every module's scale is flat in width")
    else:
        failing = sorted({s["module"] for s in result.failing()})
        console.print(f"[bold red]FAIL[/]: {', '.join(failing)} change with width")


class StudyDisplay:
    """Live view of a running study on stderr: trials done of planned (the store's included), running,
    diverged, failed, the elapsed time (ticking every second) and an ETA, and the best so far per variant
    and scale point, stored trials included."""

    def __init__(self, study: Any, stored: Any, approximate: bool = False) -> None:
        from rich.live import Live

        self.study, self.stored, self.approximate = study, stored, approximate
        self.start = time.time()
        self.progress: Any = None
        self.live = Live(console=stderr, refresh_per_second=1, transient=False, get_renderable=self.render)

    def __enter__(self) -> StudyDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)
        stderr.print()

    def update(self, progress: Any) -> None:
        """Show a `sweeper.recorder.Progress`."""
        self.progress = progress
        self.live.refresh()

    def render(self, now: float | None = None) -> Any:
        from rich.console import Group

        now = time.time() if now is None else now
        line = status_line(
            self.study.name, self.stored, self.progress, now - self.start, now, self.approximate
        )
        best = dict(self.stored.best)
        if self.progress is not None:
            best.update(self.progress.best)
        done = dict(self.progress.done_by_group) if self.progress is not None else {}
        groups = {**dict.fromkeys(self.stored.counts), **dict.fromkeys(done), **dict.fromkeys(best)}
        if not groups:
            return line
        table = Table(title="best so far", title_justify="left", show_edge=False, pad_edge=False)
        for column in ("variant", "scale point", "trials", "objective", "setting"):
            table.add_column(column, justify="right" if column in ("trials", "objective") else "left")
        variants = list(getattr(self.study, "variants", {}) or {})
        for key in sorted(groups, key=lambda k: _row_order(k, variants)):
            variant, point = key
            trials = self.stored.counts.get(key, 0) + done.get(key, 0)
            found = best.get(key)
            setting = (
                setting_text({k: v for k, v in found[1].items() if k != "objective"})
                if found
                else "none completed yet"
            )
            objective = f"{found[1]['objective']:.4f}" if found else "-"
            table.add_row(variant, ", ".join(f"{k}={v}" for k, v in point), str(trials), objective, setting)
        return Group(line, table)


def status_line(name: str, stored: Any, progress: Any, elapsed: float, now: float, approximate: bool) -> Any:
    """`lr_width  14/~40 trials (10 stored)  running 2  diverged 1  elapsed 1:05  ETA ~4:10`: trials done
    (the store's of the current definition included) of those planned ("~": the search's estimate)."""
    from rich.text import Text

    counts = progress.counts if progress is not None else None
    done_now = counts.done if counts else 0
    done = stored.total + done_now
    left = progress.left if progress is not None else None
    about = "~" if approximate else ""
    total = f"/{about}{round(done + left)}" if left is not None else ""
    statuses = stored.statuses
    diverged = statuses.get("diverged", 0) + (counts.diverged if counts else 0)
    failed = statuses.get("failed", 0) + (counts.failed if counts else 0)
    stopped = statuses.get("stopped", 0) + (counts.stopped if counts else 0)
    if progress is None:
        eta = "ETA after the first trials"
    elif progress.eta_s is None:
        eta = "ETA after the first trials" if left else ""
    else:
        eta = f"ETA {about}{_duration(max(progress.eta_s - (now - progress.at), 0.0))}"
    return Text.assemble(
        (f"{name}  ", "bold"),
        f"{done}{total} trials ({stored.total} stored)  running {counts.running if counts else 0}  ",
        (f"diverged {diverged}  ", "yellow"),
        (f"failed {failed}  " if failed else "", "red"),
        f"stopped {stopped}  " if stopped else "",
        f"elapsed {_duration(elapsed)}  {eta}".rstrip(),
    )


def _row_order(key: tuple, variants: list[str]) -> tuple:
    """Variants in the study's order, then scale points by their values as numbers (width=32 before
    width=128), strings after numbers."""
    variant, point = key
    rank = variants.index(variant) if variant in variants else len(variants)
    values = tuple((0, float(v), "") if isinstance(v, int | float) else (1, 0.0, str(v)) for _, v in point)
    return (rank, variant, values)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def print_best_table(rows: list[dict[str, Any]], scale_keys: list[str]) -> None:
    table = Table(title="optimum per variant and scale point")
    table.add_column("variant")
    for key in scale_keys:
        table.add_column(key, justify="right")
    columns = (
        "best",
        "refined",
        "90% interval",
        "within noise",
        "objective",
        "seed sd",
        "trials",
        "bracketed",
    )
    for column in columns:
        table.add_column(column, justify="right" if column in ("objective", "seed sd", "trials") else "left")
    for row in rows:
        best = setting_text(row.get("best"), row.get("all_diverged"))
        refined = ", ".join(f"{k}={value_text(v)}" for k, v in (row["refined"] or {}).items()) or "-"
        interval = optimum_interval_text(row)
        bracketed = (
            "[yellow]no: all diverged[/]"
            if row.get("all_diverged")
            else {True: "yes", False: "[yellow]no: at the edge[/]", None: "-"}[row["bracketed"]]
        )
        objective = "-" if row["objective"] is None else f"{row['objective']:.4f}"
        sd = row.get("noise_sd")
        table.add_row(
            row["variant"],
            *(str(row.get(k)) for k in scale_keys),
            best,
            refined,
            interval,
            "-" if row.get("all_diverged") else within_noise_text(row.get("within_noise"), markup=True),
            objective,
            "-" if sd is None else f"{sd:.4f}",
            str(row["n_trials"]),
            bracketed,
        )
    stdout_console().print(table)


def setting_text(setting: dict[str, Any] | None, all_diverged: bool | None = None) -> str:
    """A best setting as `lr=0.016 (2^-6.0)`; "all diverged" (or "-") where a scale point has none."""
    if setting is None:
        return "all diverged" if all_diverged else "-"
    return ", ".join(f"{k}={value_text(v)}" for k, v in setting.items()) or "-"


def _octaves(value: float | None, fmt: str = "+.2f") -> str:
    return "-" if value is None else format(value, fmt)


def optimum_interval_text(row: dict[str, Any]) -> str:
    """An optimum table row's 90% interval of the optimum, as `lr 0.0068 (2^-7.21) .. 0.015 (2^-6.05)`,
    or "-"."""
    if not row.get("optimum_interval"):
        return "-"
    return ", ".join(
        f"{k} {value_text(float(lo))} .. {value_text(float(hi))}"
        for k, (lo, hi) in row["optimum_interval"].items()
    )


def within_noise_text(settings: list[dict[str, Any]] | None, markup: bool = False) -> str:
    """ "best only", or how many settings are within seed noise of the best and, for one positive numeric
    key, over how many octaves (in yellow with `markup`)."""
    if settings is None:
        return "-"
    if len(settings) <= 1:
        return "best only"
    values = [next(iter(s.values())) for s in settings if len(s) == 1]
    if len(values) == len(settings) and all(isinstance(v, int | float) and v > 0 for v in values):
        span = math.log2(max(values)) - math.log2(min(values))
        text = f"{len(settings)} values, {span:.2g} octaves"
    else:
        text = f"{len(settings)} settings"
    return f"[yellow]{text}[/]" if markup else text


VERDICT_STYLE = {"transfers": "bold green", "shifts": "bold red", "inconclusive": "bold yellow"}


def print_verify(rows: list[dict[str, Any]]) -> None:
    console = stdout_console()
    laws_shown: set[tuple] = set()  # a multi-axis study's joint law, printed once per variant and key
    for row in rows:
        at = ", ".join(f"{k}={v}" for k, v in row["at"].items())
        head = (
            f"[bold]{row['variant']}[/]"
            + (f" ({at})" if at else "")
            + f": {row['hparam']} along {row['axis']}  "
        )
        console.print(head + f"[{VERDICT_STYLE[row['verdict']]}]{row['verdict']}[/]")
        table = Table(show_edge=False, pad_edge=False, box=None)
        table.add_column(row["axis"], justify="right")
        table.add_column(f"best {row['hparam']}", justify="right")
        table.add_column("best loss", justify="right")
        table.add_column("bracketed")
        table.add_column("basin (oct.)", justify="right")
        table.add_column("loss +2x", justify="right")
        for i, scale in enumerate(row["scales"]):
            loss = row["best_loss"][i]
            basin = row["basin_width_octaves"][i]
            pen = row["penalty_2x"][i]
            optimum = row["optimum_log2"][i]
            table.add_row(
                f"{scale:g}",
                "all diverged" if optimum is None else from_log2(optimum),
                "-" if loss is None else f"{loss:.4f}",
                "yes" if row["bracketed"][i] else "[yellow]no[/]",
                "-" if basin is None else f"{basin:.2f}",
                "-" if pen is None else f"{pen:+.4f}",
            )
        console.print(table)
        if row["alpha"] is not None:
            ci = row["alpha_ci"]
            console.print(
                f"  alpha {row['alpha']:+.2f}"
                + (f" [90% {ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
                + f"  drift {_octaves(row['drift_octaves'])} octaves  regret "
                + ("-" if row["regret_rel"] is None else f"{row['regret_rel']:.2%}")
                + (
                    f"  fit rms {row['fit_rms_octaves']:.2f} oct."
                    if row["fit_rms_octaves"] is not None
                    else ""
                )
            )
        law = (row["variant"], row["hparam"])
        if law in laws_shown:
            pass
        elif row.get("alphas"):
            parts = [
                f"{axis} {alpha:+.2f} [{row['alphas_ci'][axis][0]:+.2f}, {row['alphas_ci'][axis][1]:+.2f}] "
                f"{row['joint_verdicts'][axis]}"
                for axis, alpha in row["alphas"].items()
            ]
            console.print(f"  joint law over {' x '.join(row['axes'])}: " + "; ".join(parts))
        elif row.get("joint_notes"):
            console.print(f"  joint law over {' x '.join(row['axes'])}: {row['joint_notes'][0]}")
        if "axes" in row:
            laws_shown.add(law)
        for reason in row["reasons"]:
            console.print(f"  - {reason}")
        console.print()


def print_extrapolation(rows: list[dict[str, Any]]) -> None:
    """`sweeper best --<axis> <target>`: one line per variant and swept key."""
    for row in rows:
        targets = row.get("targets") or {row["axis"]: row["target"]}
        where = f"{row['hparam']} at " + ", ".join(f"{k}={v:g}" for k, v in targets.items())
        if row["value"] is None and row["alpha"] is not None:
            print(
                f"{row['variant']}: {where}: out of floating-point range (alpha {row['alpha']:+.2f}, "
                f"verdict {row['verdict']}): a target that far out is no extrapolation"
            )
            continue
        if row["value"] is None:
            print(f"{row['variant']}: {where}: no fit ({'; '.join(row['reasons'])})")
            continue
        lo, hi = row["interval"] or (row["value"], row["value"])
        value = f"{value_text(float(row['value']))}, 90% interval {value_text(float(lo))} .. {value_text(float(hi))}"
        if row.get("alphas"):
            law = ", ".join(f"alpha_{k} {v:+.2f}" for k, v in row["alphas"].items())
            print(f"{row['variant']}: {where}: {value}; {law}")
        else:
            print(f"{row['variant']}: {where}: {value}; alpha {row['alpha']:+.2f}, verdict {row['verdict']}")
        if row.get("warning"):
            print(f"  warning: {row['warning']}")


def print_key_table(rows: list[dict[str, Any]]) -> None:
    """`sweeper keys`: one row per trainer config key."""
    table = Table(title="trainer config keys (--set key=value, a --config file, or a study)")
    for column in ("key", "default", "allowed", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        default = row["default"]
        table.add_row(
            row["key"], "-" if default is None else str(default), row["allowed"], row["description"]
        )
    stdout_console().print(table)
