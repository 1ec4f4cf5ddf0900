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
        from sweeper.progress import TrainProgress
        from trainers.train import train as run_training

        with TrainProgress(cfg.total_steps) as progress:
            result = run_training(cfg, report=progress.update)
    summary = result.summary()
    if json_out:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    from sweeper.progress import print_train_summary

    print_train_summary(cfg, summary)


if __name__ == "__main__":
    app()
