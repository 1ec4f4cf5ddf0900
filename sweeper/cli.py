"""The `sweeper` command line. Thin: parse, call, print.

Heavy libraries (torch, ray, wandb) are imported inside commands so that `sweeper --help` is instant.
User errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Hyperparameter-transfer sweeps for GPT-style models: does what you tune small hold big?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML file of trainer config keys.", show_default=False)
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override one config key: --set key=value (repeatable).", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]


@app.callback()
def main() -> None:
    """sweeper: hyperparameter-transfer sweeps for GPT-style models."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user error into one line on stderr and exit status 2."""
    from trainers.config import ConfigError

    try:
        yield
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command()
def train(config: ConfigOption = None, set_: SetOption = None, json_out: JsonOption = False) -> None:
    """Train one model from a config (no Ray): the way to debug a single trial by hand."""
    from trainers.config import build_config

    with user_errors():
        cfg = build_config(config, set_)
        from sweeper.display import TrainProgress
        from trainers.train import train as run_training

        with TrainProgress(cfg.total_steps) as progress:
            result = run_training(cfg, report=progress.update)
    summary = result.summary()
    if json_out:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    from sweeper.display import print_train_summary

    print_train_summary(cfg, summary)


@app.command()
def params(config: ConfigOption = None, set_: SetOption = None, json_out: JsonOption = False) -> None:
    """The per-parameter table: role, shape, init std, multiplier, effective LR and weight decay.

    It is the same plan the trainer initialises and optimises with. --json prints a list of objects with
    the keys name, role, shape, fan_in, fan_out, width_mult, init_std, multiplier, lr, weight_decay, tied.
    """
    from trainers.config import build_config

    with user_errors():
        cfg = build_config(config, set_)
        from trainers.data import load_corpus
        from trainers.parameterization import attention_scale, build, residual_multiplier

        vocab_size = load_corpus(cfg.corpus, cfg.vocab_size).vocab_size
        _, plans = build(cfg, vocab_size, device="meta")
    rows = [plan.as_row() for plan in plans]
    if cfg.readout_scaling == "inv_sqrt_width_ablation":
        typer.echo("note: readout_scaling=inv_sqrt_width_ablation is not muP (an ablation)", err=True)
    if json_out:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    from sweeper.display import print_params_table

    notes = [f"attention scale {attention_scale(cfg):.4g} ({cfg.effective_attn_scale})"]
    if cfg.depth_scaling != "none":
        notes.append(f"residual branches x {residual_multiplier(cfg):.4g} ({cfg.depth_scaling})")
    if cfg.eps_mode != "constant":
        notes.append(f"eps_mode {cfg.eps_mode}")
    print_params_table(cfg, rows, notes)


def parse_widths(text: str) -> list[int]:
    from trainers.config import ConfigError

    try:
        widths = sorted({int(w) for w in text.split(",") if w.strip()})
    except ValueError:
        raise ConfigError(
            f"--widths {text!r}: expected comma-separated integers, e.g. 64,128,256,512"
        ) from None
    if len(widths) < 2 or widths[0] < 1:
        raise ConfigError(f"--widths {text!r}: need at least two positive widths to fit a slope")
    return widths


@app.command("coord-check")
def coord_check(
    config: ConfigOption = None,
    set_: SetOption = None,
    widths: Annotated[str, typer.Option(help="Comma-separated widths.")] = "64,128,256,512",
    steps: Annotated[int, typer.Option(min=1, help="Training steps per width (t=1 is at init).")] = 5,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds averaged per width.")] = 3,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the config's lr).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the log-log figure to this PNG.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Train each width a few steps and check that activation scales stay flat in width.

    Exit status 0 when every module passes, 1 when one fails, 2 on bad input. base_width defaults to
    the smallest width. --json: {"passed", "rows": [{module, step, width, l1}], "slopes": [{module,
    step, slope, ok}], "tolerance"}.
    """
    from trainers.config import ConfigError, build_config

    with user_errors():
        width_list = parse_widths(widths)
        if lr is not None and lr <= 0:
            raise ConfigError(f"--lr {lr}: must be > 0")
        cfg = build_config(config, set_, defaults={"base_width": width_list[0]})
        for width in width_list:
            cfg.with_updates(width=width)  # a width the head layout cannot take fails here, before training
        from rich.progress import Progress

        from sweeper.display import stderr
        from trainers.coord_check import run_coord_check

        with Progress(console=stderr, transient=True) as progress:
            task = progress.add_task("coord check", total=len(width_list) * seeds)
            result = run_coord_check(
                cfg,
                width_list,
                steps=steps,
                seeds=seeds,
                lr=lr,
                on_model_done=lambda *_: progress.advance(task),
            )
    if plot is not None:
        from sweeper.plots import plot_coord_check

        label = cfg.parameterization + (f" ({cfg.alignment})" if cfg.alignment else "")
        plot_coord_check([(label, result)], plot)
    if json_out:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
    else:
        from sweeper.display import print_coord_check

        print_coord_check(result, width_list)
        if plot is not None:
            typer.echo(f"figure: {plot}")
    if not result.passed:
        raise typer.Exit(1)


ResultsOption = Annotated[Path, typer.Option("--results", help="Results root folder.")]
StudyOption = Annotated[str, typer.Option("--study", help="Study name (its folder under --results).")]


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="The study's YAML file.", show_default=False)],
    results: ResultsOption = Path("results"),
    address: Annotated[str | None, typer.Option(help="Join a Ray cluster (e.g. 10.0.0.5:6379).")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="At most this many trials at once.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="List the plan, what is already done, and how long the rest takes here."
        ),
    ] = False,
    no_estimate: Annotated[
        bool,
        typer.Option("--no-estimate", help="With --dry-run: skip measuring step times (no time estimate)."),
    ] = False,
    no_wandb: Annotated[bool, typer.Option("--no-wandb", help="Do not mirror trials to W&B.")] = False,
    rerun_failed: Annotated[bool, typer.Option("--rerun-failed", help="Run failed trials again.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Run even if the pre-flight coordinate check fails.")
    ] = False,
) -> None:
    """Run a study, finish an interrupted one, or extend a grown one: only trials not in the store run.

    Exit status 0 when the study is complete, 130 when interrupted (rerun the same command to resume),
    1 when the study's pre-flight coordinate check fails (without --force), 2 on bad input.
    """
    from sweeper.run import run as run_study

    with user_errors():
        code = run_study(
            study,
            results,
            address=address,
            max_concurrent=max_concurrent,
            dry=dry_run,
            estimate=not no_estimate,
            no_wandb=no_wandb,
            rerun_failed=rerun_failed,
            force=force,
            argv=["sweeper", *sys.argv[1:]],
        )
    raise typer.Exit(code)


def open_store(results: Path, study: str):
    from sweeper.store import ResultsStore
    from trainers.config import ConfigError

    if not study or "/" in study or study.startswith("."):
        raise ConfigError(f"--study {study!r}: expected a plain study name")
    store = ResultsStore(results, study)
    if not store.exists():
        known = (
            sorted(p.name for p in results.iterdir() if (p / "study.json").exists())
            if results.is_dir()
            else []
        )
        raise ConfigError(
            f"--study {study!r}: no results under {results}/; studies there: {', '.join(known) or 'none'}"
        )
    return store


@app.command()
def status(
    study: StudyOption, results: ResultsOption = Path("results"), json_out: JsonOption = False
) -> None:
    """Trial counts by status, and how many the study plans.

    --json: {"study", "planned", "completed", "diverged", "stopped", "failed", "total",
    "current_definition", "older_definitions"}. Trials of an older definition of their variant (say,
    before `trainer.steps` changed) stay in the store, but no analysis uses them.
    """
    with user_errors():
        store = open_store(results, study)
    counts = store.status_counts()
    if json_out:
        sys.stdout.write(json.dumps(counts) + "\n")
        return
    typer.echo("  ".join(f"{k} {v if v is not None else '-'}" for k, v in counts.items()))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def best(
    ctx: typer.Context,
    study: StudyOption,
    results: ResultsOption = Path("results"),
    json_out: JsonOption = False,
) -> None:
    """The best setting per variant and scale point, with bracketing and the parabola-refined optimum.

    --json: a list of {"variant", <each scale key>, "best": {key: value}, "objective", "n_trials",
    "bracketed", "refined": {key: value} or null}.

    With a target scale (any scale key, e.g. --width 4096), the optimum extrapolated there from the
    power-law fit of the study's optima, with its 90% interval: --json gives a list of {"variant", "axis",
    "target", "hparam", "value", "interval": [lo, hi], "alpha", "alpha_ci", "verdict"}.
    """
    with user_errors():
        store = open_store(results, study)
        record = store.study_record()
        target = parse_target(ctx.args, record.scale_keys)
    if target is not None:
        from sweeper.analysis import extrapolation_rows

        rows = extrapolation_rows(store.current_trials(), record, *target)
        if json_out:
            sys.stdout.write(json.dumps(rows) + "\n")
            return
        from sweeper.display import print_extrapolation

        print_extrapolation(rows)
        return
    from sweeper.analysis import optimum_table

    rows = optimum_table(store.current_trials(), record)
    if json_out:
        sys.stdout.write(json.dumps(rows, default=_json_default) + "\n")
        return
    from sweeper.display import print_best_table

    print_best_table(rows, record.scale_keys)


def parse_target(args: list[str], scale_keys: list[str]) -> tuple[str, float] | None:
    """`--width 4096` (any scale key) from the extra arguments of `best`."""
    from trainers.config import ConfigError

    if not args:
        return None
    if len(args) != 2 or not args[0].startswith("--"):
        raise ConfigError(
            f"unexpected arguments {' '.join(args)!r}; a target is one scale key, e.g. --width 4096"
        )
    axis = args[0][2:].replace("-", "_")
    if axis not in scale_keys:
        raise ConfigError(
            f"--{axis}: not a scale axis of this study; its axes: {', '.join(scale_keys) or 'none'}"
        )
    try:
        value = float(args[1])
    except ValueError:
        raise ConfigError(f"--{axis} {args[1]!r}: expected a number") from None
    if value <= 0:
        raise ConfigError(f"--{axis} {args[1]}: must be > 0")
    return axis, value


@app.command()
def verify(
    study: StudyOption,
    results: ResultsOption = Path("results"),
    axis: Annotated[str, typer.Option(help="The scale axis to test transfer along.")] = "width",
    tol: Annotated[
        float, typer.Option(min=0.0, help="Octaves of drift per doubling that still count as transfer.")
    ] = 0.25,
    json_out: JsonOption = False,
) -> None:
    """Does the optimum transfer along a scale axis? Per variant: the exponent alpha of h* ~ scale^alpha
    with its 90% bootstrap interval, drift, transfer regret, and a verdict (transfers, shifts,
    inconclusive) with its reasons.

    --json: a list of {"variant", "axis", "hparam", "alpha", "alpha_ci": [lo, hi], "drift_octaves",
    "regret_abs", "regret_rel", "bracketed_all", "verdict", "reasons": [...]} plus per-scale detail
    ("scales", "optimum_log2", "best_loss", "bracketed", "fit_rms_octaves",
    "leave_largest_out_error_octaves", "basin_width_octaves", "penalty_2x", "penalty_4x", "at").
    """
    from trainers.config import ConfigError

    with user_errors():
        store = open_store(results, study)
        record = store.study_record()
        if axis not in record.scale_keys:
            raise ConfigError(
                f"--axis {axis!r}: not a scale axis of study {study!r}; its axes: "
                f"{', '.join(record.scale_keys) or 'none'}"
            )
    from sweeper.analysis import verify_rows

    rows = verify_rows(store.current_trials(), record, axis=axis, tol=tol)
    if json_out:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    from sweeper.display import print_verify

    print_verify(rows)


@app.command()
def report(
    study: StudyOption,
    results: ResultsOption = Path("results"),
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for report.md and the figures (default: results/<study>/report)."),
    ] = None,
    axis: Annotated[str | None, typer.Option(help="Scale axis (default: the study's first).")] = None,
    no_wandb: Annotated[bool, typer.Option("--no-wandb", help="Do not log the report to W&B.")] = False,
) -> None:
    """Figures (loss vs hyperparameter per scale, optimum vs scale, training curves, best loss vs scale) and
    report.md with the verdicts and tables; logged to the study's W&B group when the study uses W&B."""
    from trainers.config import ConfigError

    with user_errors():
        store = open_store(results, study)
        record = store.study_record()
        if axis is not None and axis not in record.scale_keys:
            raise ConfigError(f"--axis {axis!r}: not a scale axis of study {study!r}")
    from sweeper.report import build_report
    from sweeper.tracking import study_tracker

    tracker = study_tracker(record.wandb, store.dir, study, disabled=no_wandb)
    try:
        path = build_report(store, out or store.dir / "report", axis=axis, tracker=tracker)
    finally:
        if tracker is not None:
            tracker.close()
    typer.echo(f"report: {path}")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@app.command("list")
def list_studies(results: ResultsOption = Path("results"), json_out: JsonOption = False) -> None:
    """The studies under the results folder, with their trial counts.

    --json: a list of {"study", "trials", "completed", "diverged", "stopped", "failed", "planned"}.
    """
    from sweeper.store import study_summaries

    rows = study_summaries(results)
    if json_out:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    if not rows:
        typer.echo(f"no studies under {results}/")
    for row in rows:
        typer.echo(
            f"{row['study']}: {row['trials']} trials ({row['completed']} completed, {row['diverged']} "
            f"diverged, {row['stopped']} stopped, {row['failed']} failed), planned {row['planned'] or '-'}"
        )


@app.command()
def rules() -> None:
    """Print every parameterization's rule table (Markdown), generated from the code."""
    from trainers.rules_doc import render

    sys.stdout.write(render())


if __name__ == "__main__":
    app()
