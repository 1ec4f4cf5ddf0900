"""The `sweeper` command line. Thin: parse, call, print.

Heavy libraries (torch, ray, wandb) are imported inside commands so that `sweeper --help` is instant.
User errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

# Click's exceptions, from wherever this Typer takes Click (recent versions carry their own copy).
_click = sys.modules[typer.BadParameter.__module__]


class OneLineErrors(TyperGroup):
    """Typer's group, with a usage error (a missing or unknown option, a bad value) as one line on stderr,
    `error: sweeper run: ...`, exit status 2, instead of Rich's usage box."""

    def main(self, args: Sequence[str] | None = None, *pos: Any, standalone_mode: bool = True, **kw: Any):
        if not standalone_mode:
            return super().main(args, *pos, standalone_mode=False, **kw)
        try:
            code = super().main(args, *pos, standalone_mode=False, **kw)
        except _click.ClickException as err:
            if type(err).__name__ == "NoArgsIsHelpError":
                sys.exit(2)  # the help is printed already
            ctx = getattr(err, "ctx", None)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            hint = f" (see {ctx.command_path} --help)" if isinstance(err, _click.UsageError) and ctx else ""
            typer.echo(f"error: {where}{one_line(err.format_message()).rstrip('.')}{hint}", err=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
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


def one_line(text: object) -> str:
    return " ".join(str(text).split())


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user error into one line on stderr and exit status 2: a ConfigError (StudyError and
    StoreError among them), and the errors that reach here from files a user named (a validation error, a
    file that cannot be read or written, one that is not UTF-8 text)."""
    from pydantic import ValidationError

    from trainers.errors import ConfigError

    try:
        yield
    except ConfigError as err:
        message = str(err)
    except ValidationError as err:
        from trainers.config import format_validation_error

        message = format_validation_error(err, err.title)
    except UnicodeDecodeError as err:
        message = f"a file is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        message = f"{where}{err.strerror or err}"
    else:
        return
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(2)


@contextmanager
def training_errors() -> Iterator[None]:
    """A crash inside training (out of memory, a missing compiler, a bug): one line and exit status 1,
    the whole traceback with SWEEPER_DEBUG=1. A Ctrl-C is exit status 130."""
    import os

    try:
        yield
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as err:
        from trainers.errors import ConfigError

        if isinstance(err, ConfigError) or os.environ.get("SWEEPER_DEBUG"):
            raise
        typer.echo(
            f"error: training failed: {type(err).__name__}: {one_line(str(err))[:400]} "
            "(SWEEPER_DEBUG=1 shows the traceback)",
            err=True,
        )
        raise typer.Exit(1) from None


def print_json(value: Any) -> None:
    """One `--json` output: always valid JSON, with NaN and infinities as null (`display.json_text`)."""
    from sweeper.display import json_text

    sys.stdout.write(json_text(value) + "\n")


def read_config(config: Path | None, sets: list[str] | None, defaults: dict[str, Any] | None = None):
    """`build_config` with a --config file that cannot be read, or is not UTF-8, named in one line."""
    from trainers.config import ConfigError, build_config

    try:
        return build_config(config, sets, defaults=defaults)
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"--config {config}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 YAML"
        ) from None
    except OSError as err:
        raise ConfigError(f"--config {config}: cannot read it ({err.strerror or err})") from None


@app.command()
def train(config: ConfigOption = None, set_: SetOption = None, json_out: JsonOption = False) -> None:
    """Train one model from a config (no Ray): the way to debug a single trial by hand.

    `sweeper keys` lists every config key with its default and allowed values (dtype, device, optimizer,
    parameterization, ...)."""
    with user_errors():
        cfg = read_config(config, set_)
        from sweeper.display import TrainProgress
        from trainers.train import train as run_training

        with training_errors(), TrainProgress(cfg.total_steps) as progress:
            result = run_training(cfg, report=progress.update)
    summary = result.summary()
    if json_out:
        print_json(summary)
        return
    from sweeper.display import print_train_summary

    print_train_summary(cfg, summary)


@app.command()
def params(config: ConfigOption = None, set_: SetOption = None, json_out: JsonOption = False) -> None:
    """The per-parameter table: role, shape, init std, multiplier, effective LR and weight decay.

    It is the same plan the trainer initialises and optimises with. --json prints a list of objects with
    the keys name, role, shape, fan_in, fan_out, width_mult, init_std, multiplier, lr, weight_decay, tied,
    optimizer. `sweeper keys` lists the config keys.
    """
    with user_errors():
        cfg = read_config(config, set_)
        from trainers.data import load_corpus
        from trainers.parameterization import attention_scale, build, residual_multiplier

        vocab_size = load_corpus(cfg.corpus, cfg.vocab_size).vocab_size
        _, plans = build(cfg, vocab_size, device="meta")
    rows = [plan.as_row() for plan in plans]
    if cfg.readout_scaling == "inv_sqrt_width_ablation":
        typer.echo("note: readout_scaling=inv_sqrt_width_ablation is not muP (an ablation)", err=True)
    if json_out:
        print_json(rows)
        return
    from sweeper.display import print_params_table

    notes = [f"attention scale {attention_scale(cfg):.4g} ({cfg.effective_attn_scale})"]
    if cfg.depth_scaling != "none":
        notes.append(f"residual branches x {residual_multiplier(cfg):.4g} ({cfg.depth_scaling})")
    if cfg.eps_mode != "constant":
        notes.append(f"eps_mode {cfg.eps_mode}")
    print_params_table(cfg, rows, notes)


def parse_widths(text: str) -> list[int]:
    from trainers.errors import ConfigError

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
    from trainers.errors import ConfigError

    with user_errors():
        width_list = parse_widths(widths)
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"--lr {lr}: must be a finite number > 0")
        if plot is not None and plot.is_dir():
            raise ConfigError(f"--plot {plot}: a folder; give the PNG file to write, e.g. {plot}/coord.png")
        cfg = read_config(config, set_, defaults={"base_width": width_list[0]})
        for width in width_list:
            cfg.with_updates(width=width)  # a width the head layout cannot take fails here, before training
        from rich.progress import Progress

        from sweeper.display import stderr
        from trainers.coord_check import run_coord_check

        with training_errors(), Progress(console=stderr, transient=True) as progress:
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
        print_json(result.as_json())
    else:
        from sweeper.display import print_coord_check

        print_coord_check(result, width_list)
        if plot is not None:
            typer.echo(f"figure: {plot}")
    if not result.passed:
        raise typer.Exit(1)


ResultsOption = Annotated[Path, typer.Option("--results", help="Results root folder.")]
StudyOption = Annotated[str, typer.Option("--study", help="Study name (its folder under --results).")]


def check_results_root(results: Path, write: bool = False) -> None:
    """--results must be a folder (or not exist yet), one this user may write to with `write`: a
    ConfigError naming it otherwise."""
    import os

    from trainers.errors import ConfigError

    try:
        if results.exists() and not results.is_dir():
            raise ConfigError(f"--results {results}: a file, not a folder; give the results folder")
    except OSError as err:
        raise ConfigError(f"--results {results}: cannot read it ({err.strerror or err})") from None
    if write and results.is_dir() and not os.access(results, os.W_OK | os.X_OK):
        raise ConfigError(f"--results {results}: not writable by this user; give a folder you can write to")


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
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Wait for another driver of the same study to finish instead of refusing."
        ),
    ] = False,
) -> None:
    """Run a study, finish an interrupted one, or extend a grown one: only trials not in the store run.

    Exit status 0 when the study is complete; 130 when interrupted by Ctrl-C and 143 by SIGTERM (rerun
    the same command to resume); 1 when the pre-flight coordinate check fails (without --force) or the
    results store cannot be written (fix it, rerun to resume); 2 on bad input, or when another driver
    runs the same study (--wait waits for it instead).
    """
    from sweeper.run import run as run_study

    with user_errors():
        check_results_root(results, write=not dry_run)
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
            wait=wait,
        )
    raise typer.Exit(code)


def open_store(results: Path, study: str):
    """The store of --study under --results: a ConfigError naming the flag when there is none."""
    from sweeper.store import ResultsStore, study_names
    from trainers.errors import ConfigError

    if not study or "/" in study or "\\" in study or study.startswith("."):
        raise ConfigError(f"--study {study!r}: expected a plain study name")
    check_results_root(results)
    store = ResultsStore(results, study)
    if not store.exists():
        known = study_names(results)
        raise ConfigError(
            f"--study {study!r}: no results under {results}/; studies there: {', '.join(known) or 'none'}"
        )
    return store


def nothing_finished(store, trials) -> str:
    """The line a reader prints when the current trials (`trials`) hold no finished (completed or
    diverged) one yet."""
    statuses = list(trials["status"]) if "status" in trials.columns else []
    held = (
        f"{len(statuses)} trials, " + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        if statuses
        else "no trials"
    )
    done = sum(status in ("completed", "diverged") for status in statuses)
    if done:  # finished trials, but nothing to fit in them (a study that sweeps no key)
        swept = ", ".join(store.study_record().swept_keys) or "none"
        return f"{store.study}: no optimum to show from {done} finished trials (swept keys: {swept})"
    older = len(store.statuses()) - len(statuses)
    if older > 0:
        held += f"; {older} more of an older definition of their variant, which no analysis uses"
    return f"{store.study}: nothing finished yet ({held}); `sweeper status --study {store.study}` counts them"


@app.command()
def status(
    study: StudyOption, results: ResultsOption = Path("results"), json_out: JsonOption = False
) -> None:
    """Trial counts by status, and how many the study plans.

    --json: {"study", "planned", "completed", "diverged", "stopped", "failed", "total",
    "current_definition", "older_definitions", "wandb_offline_runs", "wandb_dir"}. Trials of an older definition of their variant (say,
    before `trainer.steps` changed) stay in the store, but no analysis uses them.
    """
    with user_errors():
        store = open_store(results, study)
        counts, _, _ = cached_answer(store, ("status",), lambda: (store.status_counts(), None))
        runs = sorted((store.dir / "wandb").glob("offline-run-*"))
    if json_out:
        print_json(
            {
                **counts,
                "wandb_offline_runs": len(runs),
                "wandb_dir": str(store.dir / "wandb") if runs else None,
            }
        )
        return
    typer.echo("  ".join(f"{k} {v if v is not None else '-'}" for k, v in counts.items()))
    if runs:
        where = store.dir / "wandb"
        typer.echo(
            f"W&B: {len(runs)} offline runs in {where}; upload them with `wandb sync {where}/offline-run-*`, "
            f"or see the figures without a server: sweeper report --study {study} --results {results}"
        )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def best(
    ctx: typer.Context,
    study: StudyOption,
    results: ResultsOption = Path("results"),
    json_out: JsonOption = False,
) -> None:
    """The best setting per variant and scale point, with bracketing and the parabola-refined optimum.

    --json: a list of {"variant", <each scale key>, "best": {key: value}, "objective", "n_trials",
    "bracketed", "refined": {key: value} or null}; "best", "objective" and "refined" are null (and
    "all_diverged" true) at a scale point where every setting diverged.

    With a target scale (any scale key, e.g. --width 4096), the optimum extrapolated there from the
    power-law fit of the study's optima, with its 90% interval: --json gives a list of {"variant", "axis",
    "target", "hparam", "value", "interval": [lo, hi], "alpha", "alpha_ci", "verdict"}. A study with
    several scale axes takes any combination (--width 4096 --tokens 2e9; an axis left out is held at its
    largest measured value) and predicts from the joint law over all of them: each object also has
    "targets" {axis: value}, "alphas", "alphas_ci" and "warning" (set when a target lies more than 4x
    beyond the measured range of its axis); "axis", "target", "alpha" are the first target's.
    """
    with user_errors():
        store = open_store(results, study)
        record = store.required_record()
        target = parse_target(ctx.args, record.scale_keys)
        rows, empty, text = cached_answer(store, ("best", target), lambda: _best_rows(store, record, target))
    if json_out:
        sys.stdout.write(text + "\n")
    elif empty:
        typer.echo(empty)
    elif target is not None:
        from sweeper.display import print_extrapolation

        print_extrapolation(rows)
    else:
        from sweeper.display import print_best_table

        print_best_table(rows, record.scale_keys)


def parse_target(args: list[str], scale_keys: list[str]) -> dict[str, float] | None:
    """`--width 4096 --tokens 2e9` (any scale keys) from the extra arguments of `best`."""
    from trainers.errors import ConfigError

    if not args:
        return None
    if len(args) % 2 or not all(a.startswith("--") for a in args[::2]):
        raise ConfigError(
            f"unexpected arguments {' '.join(args)!r}; a target is scale keys with values, e.g. --width 4096"
        )
    targets: dict[str, float] = {}
    for flag, text in zip(args[::2], args[1::2], strict=True):
        axis = flag[2:].replace("-", "_")
        if axis not in scale_keys:
            raise ConfigError(
                f"--{axis}: not a scale axis of this study; its axes: {', '.join(scale_keys) or 'none'}"
            )
        if axis in targets:
            raise ConfigError(f"--{axis} given twice")
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--{axis} {text!r}: expected a number") from None
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{axis} {text}: a target must be a finite positive number")
        targets[axis] = value
    return targets


def cached_answer(store: Any, question: tuple, compute: Any) -> tuple[Any, str | None, str]:
    """(answer, line to print when there is none, the answer as --json text), from the store's read cache
    (`sweeper.read_cache`) when it was asked before of the same store and code; `compute()` gives
    (answer, line) otherwise, and a non-empty answer is kept for next time."""
    from sweeper import read_cache

    text = read_cache.recall(store.dir, question)
    if text is not None:
        return json.loads(text), None, text
    from sweeper.display import json_text

    answer, empty = compute()
    text = json_text(answer)
    if answer:
        read_cache.remember(store.dir, question, text)
    return answer, empty, text


def _best_rows(store: Any, record: Any, target: dict[str, float] | None) -> tuple[list[dict], str | None]:
    """`best`'s rows (the optimum table, or the extrapolation to `target`), and the line to print when
    there are none."""
    from sweeper.store import analysis_columns

    trials = store.current_trials(analysis_columns(record))
    if target is not None and len(record.scale_keys) > 1:
        from sweeper.joint import joint_extrapolation_rows

        rows = joint_extrapolation_rows(trials, record, target)
    elif target is not None:
        from sweeper.analysis import extrapolation_rows

        rows = extrapolation_rows(trials, record, *next(iter(target.items())))
    else:
        from sweeper.analysis import optimum_table

        rows = optimum_table(trials, record)
    return rows, nothing_finished(store, trials) if not rows else None


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
    A scale where every value diverged has no optimum: its "optimum_log2" is null ("all_diverged" true
    there), and "drift_octaves" is null when it is the smallest or the largest.

    A study with two or more scale axes also gets the joint law log2 h* = a + sum_k alpha_k log2 s_k of
    each variant and swept key over all its axes, on every row: "axes", "alphas" {axis: exponent},
    "alphas_ci" {axis: [lo, hi]}, "joint_verdicts" {axis: verdict}, "joint_fit_rms_octaves",
    "leave_corner_out_error_octaves", "joint_points", "joint_optimum_log2", "joint_bracketed",
    "joint_notes". "alpha" stays the one-axis exponent along --axis.
    """
    from trainers.errors import ConfigError

    with user_errors():
        if not math.isfinite(tol):
            raise ConfigError(f"--tol {tol}: must be a finite number of octaves >= 0")
        store = open_store(results, study)
        record = store.required_record()
        if axis not in record.scale_keys:
            raise ConfigError(
                f"--axis {axis!r}: not a scale axis of study {study!r}; its axes: "
                f"{', '.join(record.scale_keys) or 'none'}"
            )

        def compute() -> tuple[list[dict], str | None]:
            from sweeper.analysis import verify_rows
            from sweeper.joint import with_joint_fits
            from sweeper.store import analysis_columns

            trials = store.current_trials(analysis_columns(record))
            rows = with_joint_fits(verify_rows(trials, record, axis=axis, tol=tol), trials, record, tol)
            return rows, nothing_finished(store, trials) if not rows else None

        rows, empty, text = cached_answer(store, ("verify", axis, tol), compute)
    if json_out:
        sys.stdout.write(text + "\n")
    elif empty:
        typer.echo(empty)
    else:
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
    from trainers.errors import ConfigError

    with user_errors():
        store = open_store(results, study)
        record = store.required_record()
        if axis is not None and axis not in record.scale_keys:
            raise ConfigError(
                f"--axis {axis!r}: not a scale axis of study {study!r}; its axes: "
                f"{', '.join(record.scale_keys) or 'none'}"
            )
        folder = out or store.dir / "report"
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--out {folder}: a file, not a folder; give the folder for the report")
        store.trials()  # a damaged trial table is one line, before any figure is drawn
        from sweeper.report import build_report
        from sweeper.tracking import study_tracker

        tracker = study_tracker(record.wandb, store.dir, study, disabled=no_wandb)
        try:
            path = build_report(store, folder, axis=axis, tracker=tracker)
        finally:
            if tracker is not None:
                tracker.close()
    typer.echo(f"report: {path}")


@app.command("list")
def list_studies(results: ResultsOption = Path("results"), json_out: JsonOption = False) -> None:
    """The studies under the results folder, with their trial counts.

    --json: a list of {"study", "trials", "completed", "diverged", "stopped", "failed", "planned"}; a study
    whose files cannot be read has null counts and its reason under "error".
    """
    from sweeper.store import study_summaries

    with user_errors():
        check_results_root(results)
        rows = study_summaries(results)
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"no studies under {results}/")
    for row in rows:
        if row["trials"] is None:
            typer.echo(f"{row['study']}: unreadable: {row.get('error')}")
            continue
        typer.echo(
            f"{row['study']}: {row['trials']} trials ({row['completed']} completed, {row['diverged']} "
            f"diverged, {row['stopped']} stopped, {row['failed']} failed), planned {row['planned'] or '-'}"
            + (f"; {row['error']}" if row.get("error") else "")
        )


@app.command()
def keys(json_out: JsonOption = False) -> None:
    """Every trainer config key with its default, allowed values and meaning (from the code's schema).

    These are the keys of `--set`, `--config` files and a study's trainer, variants, scale and sweep.
    --json: a list of {"key", "default", "allowed", "description"}.
    """
    from trainers.config import key_rows

    rows = key_rows()
    if json_out:
        print_json(rows)
        return
    from sweeper.display import print_key_table

    print_key_table(rows)


@app.command()
def rules() -> None:
    """Print every parameterization's rule table (Markdown), generated from the code."""
    from trainers.rules_doc import render

    sys.stdout.write(render())


if __name__ == "__main__":
    app()
