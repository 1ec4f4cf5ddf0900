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


@app.command()
def rules() -> None:
    """Print every parameterization's rule table (Markdown), generated from the code."""
    from trainers.rules_doc import render

    sys.stdout.write(render())


if __name__ == "__main__":
    app()
