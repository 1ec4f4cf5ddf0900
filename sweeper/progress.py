"""Rich progress and summaries for the CLI (on stderr, so stdout stays clean for --json)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

stderr = Console(stderr=True)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


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
    Console().print(table)
