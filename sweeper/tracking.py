"""Mirror finished trials to Weights & Biases: one W&B run per trial, logged by the sweep driver.

W&B is a mirror, never the source of truth: every failure here becomes one warning and W&B logging
stops for the study, while the results store keeps everything. `wandb` is imported lazily (0.4 s).
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.values import value_text

if TYPE_CHECKING:
    import pandas


@dataclass(kw_only=True)
class WandbSettings:
    project: str = "sweeper"
    entity: str | None = None
    mode: str = "offline"  # "online" | "offline" | "disabled"
    dir: Path  # the study's results folder; W&B writes its `wandb/` folder inside it

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)


# Seconds an online run waits for the W&B server before the mirror falls back to offline.
ONLINE_TIMEOUT_S = float(os.environ.get("SWEEPER_WANDB_TIMEOUT", "15"))


class Tracker:
    """Logs finished trials as W&B runs grouped by study (group) and variant (job_type)."""

    def __init__(self, settings: WandbSettings, study: str) -> None:
        self.settings = settings
        self.study = study
        self._enabled = settings.mode != "disabled"
        self._started = False  # whether wandb was initialised, so close() has something to tear down
        self._last_error: BaseException | None = None

    def log_trial(
        self,
        *,
        name: str,
        variant: str,
        config: dict,
        curve: list[dict],
        summary: dict,
        tags: list[str] | None = None,
    ) -> str | None:
        """Log one finished trial as one run; returns the run id, or None when disabled or failed."""

        def body(wandb: Any, run: Any) -> None:
            for point in curve:
                metrics = {k: v for k, v in point.items() if k != "step" and v is not None}
                step = point.get("step")
                run.log(metrics, step=None if step is None else int(step))
            run.summary.update({k: v for k, v in summary.items() if v is not None})

        return self._run(body, name=name, job_type=variant, config=config, tags=tags)

    def log_study_summary(
        self, *, tables: dict[str, pandas.DataFrame], images: dict[str, Path] | None = None
    ) -> None:
        """Log the study's tables and figures in one extra run named `<study>-summary`."""
        images = images or {}
        if not tables and not images:
            return

        def body(wandb: Any, run: Any) -> None:
            media = {key: wandb.Table(dataframe=frame) for key, frame in tables.items()}
            media |= {key: wandb.Image(str(path)) for key, path in images.items()}
            run.log(media)

        self._run(body, name=f"{self.study}-summary", job_type="study", config=None, tags=None)

    def close(self) -> None:
        """Stop W&B's background service; runs are already complete on disk after each finish()."""
        if self._started:
            import wandb

            with suppress(Exception):
                wandb.teardown()
        self._started = False
        self._enabled = False

    def _run(
        self,
        body: Callable[[Any, Any], None],
        *,
        name: str,
        job_type: str,
        config: dict | None,
        tags: list[str] | None,
    ) -> str | None:
        if not self._enabled:
            return None
        run_id = self._attempt(body, name=name, job_type=job_type, config=config, tags=tags)
        if run_id is None and self._enabled and self.settings.mode == "online":
            # An unreachable server or a missing key: keep everything, offline, and say so once.
            self.settings.mode = "offline"
            warnings.warn(
                f"W&B online logging failed for study {self.study!r} ({self._last_error}); logging offline "
                f"under {self.settings.dir / 'wandb'} instead (upload later with `wandb sync`)",
                RuntimeWarning,
                stacklevel=3,
            )
            run_id = self._attempt(body, name=name, job_type=job_type, config=config, tags=tags)
        if run_id is None and self._last_error is not None:
            self._disable(self._last_error)
        return run_id

    def _attempt(
        self,
        body: Callable[[Any, Any], None],
        *,
        name: str,
        job_type: str,
        config: dict | None,
        tags: list[str] | None,
    ) -> str | None:
        """One run, start to finish; None (and `_last_error`) when W&B raised."""
        self._last_error = None
        run = None
        with _environment(self._environment()):
            try:
                import wandb

                self.settings.dir.mkdir(parents=True, exist_ok=True)
                run = wandb.init(
                    project=self.settings.project,
                    entity=self.settings.entity,
                    group=self.study,
                    job_type=job_type,
                    name=name,
                    config=config,
                    tags=tags,
                    dir=str(self.settings.dir),
                    mode=self.settings.mode,
                    reinit="create_new",  # many runs per process, without finishing anyone else's
                    settings=_quiet_settings(wandb, online=self.settings.mode == "online"),
                )
                self._started = True
                body(wandb, run)
                run.finish()
                return run.id
            except Exception as exc:
                if run is not None:
                    with suppress(Exception):
                        run.finish(exit_code=1)
                self._last_error = exc
                return None

    def _environment(self) -> dict[str, str]:
        # Where W&B keeps its own files: its defaults are ./artifacts and folders under the home
        # directory. The config dir is left alone so a user's W&B settings (e.g. base_url) still apply.
        # WANDB_SILENT must be in the environment: only then does an online run without an API key
        # fail instead of waiting at an interactive login prompt (settings.silent does not do that).
        home = self.settings.dir / "wandb"
        return {
            "WANDB_DIR": str(self.settings.dir),
            "WANDB_CACHE_DIR": str(home / ".cache"),
            "WANDB_DATA_DIR": str(home / ".data"),
            "WANDB_ARTIFACT_DIR": str(home / ".artifacts"),
            "WANDB_SILENT": "true",
        }

    def _disable(self, exc: BaseException) -> None:
        self._enabled = False
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        warnings.warn(
            f"W&B logging stopped for study {self.study!r} ({reason}); the results store has everything.",
            RuntimeWarning,
            stacklevel=4,
        )


def _quiet_settings(wandb: Any, online: bool = False) -> Any:
    """No console capture, no code/git/requirements snapshot, no system metrics or metadata; online, a
    short wait for the server (W&B's own default is 90 s per run) before falling back to offline."""
    timeouts = {"init_timeout": ONLINE_TIMEOUT_S, "login_timeout": ONLINE_TIMEOUT_S} if online else {}
    return wandb.Settings(
        **timeouts,
        silent=True,
        quiet=True,
        console="off",
        save_code=False,
        disable_code=True,
        disable_git=True,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        x_save_requirements=False,
    )


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore the previous values."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_ABBREVIATIONS = {"width": "w", "depth": "d", "steps": "steps", "tokens": "tok", "batch_size": "bs"}


def run_name(scale: dict, params: dict, seed: int) -> str:
    """A readable name, written as everywhere else (`sweeper.values`) without spaces:
    ({"width": 256}, {"lr": 2**-9}, 0) -> "w256-lr0.002(2^-9.0)-s0". The W&B run id, not the name, is
    what identifies a run; the trial's id is in its config."""
    parts = [f"{_ABBREVIATIONS.get(key, key)}{_format_value(value)}" for key, value in scale.items()]
    parts += [f"{_ABBREVIATIONS.get(key, key)}{_format_value(value)}" for key, value in params.items()]
    parts.append(f"s{seed}")
    return "-".join(parts)


def _format_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return value_text(float(value)).replace(" ", "")


def study_tracker(wandb: Any, folder: Path, study: str, disabled: bool = False) -> Tracker | None:
    """The W&B mirror of a study from its `wandb:` settings (a WandbSpec or RecordedWandb), or None when
    the study or the command (--no-wandb) turns it off."""
    if disabled or wandb.mode == "disabled":
        return None
    settings = WandbSettings(project=wandb.project, entity=wandb.entity, mode=wandb.mode, dir=folder)
    return Tracker(settings, study)
