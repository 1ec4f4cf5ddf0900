"""Ray Tune wiring: one trial = one `trainers.train.train(config, report)` call in a Ray worker.

The driver alone writes the results store and W&B (from a Tune callback). A custom Searcher hands out the
study's trials from a search strategy (grid, Optuna, adaptive) and skips what the store already has; ASHA,
when asked for, runs one bracket per (variant, scale point) so it only ever compares comparable trials.
Ray's ResultGrid is not trusted after an interrupt: completeness is judged from the store.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweeper.search import FINISHED, WAIT, Stored, as_loss, group_key, make_strategy
from sweeper.store import DONE_STATUSES, ResultsStore, trial_row
from sweeper.study import Study, TrialSpec, definition_fingerprint

METRIC = "loss"  # what Tune sees: the objective oriented for minimisation, +inf when missing


# --- the trial ---------------------------------------------------------------------------------------------


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: train one config, reporting every evaluation and a final summary."""
    from trainers.config import TrainConfig
    from trainers.train import train

    cfg = TrainConfig.model_validate(config["train_config"])
    objective = config["objective"]
    best = math.inf

    def report(point: dict[str, Any]) -> None:
        nonlocal best
        value = point.get(objective["metric"])
        loss = as_loss(value, objective["mode"])
        best = min(best, loss)
        tune.report({**_finite(point), METRIC: best if objective["use"] == "best" else loss, "final": False})

    result = train(cfg, report=report)
    summary = result.summary()
    value = summary["best_val_loss" if objective["use"] == "best" else "final_val_loss"]
    if objective["metric"] == "train_loss":
        value = summary["final_train_loss"]
    final_loss = as_loss(value, objective["mode"]) if result.status == "completed" else math.inf
    last = result.history[-1] if result.history else {"step": 0}
    tune.report({**_finite(last), METRIC: final_loss, "final": True, "summary": summary})


def _finite(point: dict[str, Any]) -> dict[str, Any]:
    return {k: (math.nan if v is None else v) for k, v in point.items()}


# --- search and scheduling ------------------------------------------------------------------------------


class StudySearcher(Searcher):
    """Adapts a search strategy to Ray Tune: suggest() hands out its trials, on_trial_complete() feeds back."""

    def __init__(self, strategy: Any, objective: dict[str, Any], resources_threads: int) -> None:
        super().__init__(metric=METRIC, mode="min")
        self.strategy, self.objective, self.threads = strategy, objective, resources_threads
        self.running: dict[str, TrialSpec] = {}
        self.finished = False

    def __getstate__(self) -> dict:
        # Tune pickles its searcher for Tuner.restore, which sweeper never uses: the store is the record.
        return {}

    def suggest(self, trial_id: str) -> dict | str | None:
        spec = self.strategy.next()
        if spec is FINISHED:
            self.finished = True
            return Searcher.FINISHED
        if spec is WAIT:
            return None
        self.running[trial_id] = spec
        train_config = spec.config.model_dump(mode="json")
        if not train_config.get("threads"):
            train_config["threads"] = self.threads
        return {
            "train_config": train_config,
            "trial_key": spec.trial_id,
            "group": repr((spec.variant, group_key(spec.scale))),
            "objective": self.objective,
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        spec = self.running.pop(trial_id, None)
        if spec is None:
            return
        loss = math.inf
        if not error and result is not None and result.get("final"):
            loss = float(result.get(METRIC, math.inf))
        self.strategy.observe(spec, loss)


class GroupedASHA(FIFOScheduler):
    """Asynchronous successive halving with one scheduler per (variant, scale point)."""

    def __init__(self, grace_steps: int, max_steps: int, reduction_factor: float) -> None:
        super().__init__()
        self.kwargs = {
            "time_attr": "step",
            "grace_period": grace_steps,
            "max_t": max_steps,
            "reduction_factor": reduction_factor,
        }
        self.groups: dict[str, AsyncHyperBandScheduler] = {}
        self._metric, self._mode = METRIC, "min"

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _of(self, trial: Any) -> AsyncHyperBandScheduler:
        key = trial.config.get("group", "")
        if key not in self.groups:
            self.groups[key] = AsyncHyperBandScheduler(metric=METRIC, mode="min", **self.kwargs)
        return self.groups[key]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        # ASHA stops a trial that reaches max_t; ours must live on to send its final summary.
        if result.get("final") or result.get("step", 0) >= self.kwargs["max_t"]:
            return TrialScheduler.CONTINUE
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)


# --- the driver's record keeping ---------------------------------------------------------------------


@dataclass
class RunCounts:
    completed: int = 0
    diverged: int = 0
    stopped: int = 0
    failed: int = 0
    running: int = 0

    @property
    def done(self) -> int:
        return self.completed + self.diverged + self.stopped + self.failed


class Recorder(tune.Callback):
    """Collects each trial's curve from its reports and, when it ends, writes it to the store and W&B."""

    def __init__(
        self,
        study: Study,
        store: ResultsStore,
        searcher: StudySearcher,
        tracker: Any,
        on_change: Callable[[], None],
        fingerprints: dict[str, str] | None = None,
    ) -> None:
        self.study, self.store, self.searcher, self.tracker = study, store, searcher, tracker
        self.fingerprints = fingerprints or {}
        self.on_change = on_change
        self.curves: dict[str, list[dict]] = {}
        self.started: dict[str, float] = {}
        self.specs: dict[str, TrialSpec] = {}
        self.counts = RunCounts()
        self.best: dict[tuple, tuple[float, dict]] = {}
        self.recorded_params: set[tuple] = set()

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks for Tuner.restore, which sweeper never uses; this one holds live objects.
        return {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.specs[trial.trial_id] = self.searcher.running.get(trial.trial_id) or self.specs.get(
            trial.trial_id
        )
        self.started.setdefault(trial.trial_id, time.time())
        self.curves[trial.trial_id] = []
        self.counts.running += 1
        self.on_change()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.curves[trial.trial_id] = []  # the retry reports its curve from the start
        self.counts.running = max(0, self.counts.running - 1)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not result.get("final"):
            point = {
                k: result.get(k)
                for k in (
                    "step",
                    "tokens",
                    "train_loss",
                    "val_loss",
                    "lr",
                    "grad_norm",
                    "tokens_per_s",
                    "elapsed_s",
                )
            }
            self.curves.setdefault(trial.trial_id, []).append(_none_for_nan(point))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if result.get("final"):
            summary = result.get("summary") or {}
            status = summary.get("status", "completed")
        elif self.study.early_stop is not None:
            curve = self.curves.get(trial.trial_id, [])
            val = [p["val_loss"] for p in curve if p.get("val_loss") is not None]
            last = curve[-1] if curve else {}
            summary = {
                "steps": last.get("step"),
                "tokens": last.get("tokens"),
                "best_val_loss": min(val) if val else None,
            }
            status = "stopped"
        else:  # ended without its final report and nothing stops trials early: an interrupted run
            self.curves.pop(trial.trial_id, None)
            return
        self._record(trial, status, summary, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = getattr(trial, "error_msg", None) or "trial raised an error (see the Ray logs)"
        self._record(trial, "failed", {}, str(error).strip().splitlines()[-1][:500] if error else None)

    def _record(self, trial: Any, status: str, summary: dict, error: str | None) -> None:
        spec = self.specs.get(trial.trial_id) or self.searcher.running.get(trial.trial_id)
        if spec is None:
            return
        self.counts.running = max(0, self.counts.running - 1)
        setattr(self.counts, status, getattr(self.counts, status) + 1)
        objective = _objective(summary, self.study) if status == "completed" else None
        curve = self.curves.pop(trial.trial_id, [])
        row = trial_row(
            trial_id=spec.trial_id,
            study=self.study.name,
            variant=spec.variant,
            seed=spec.seed,
            scale=spec.scale,
            params=spec.params,
            config=spec.config.model_dump(mode="json"),
            status=status,
            objective=objective,
            summary=summary,
            error=error,
            started_at=self.started.pop(trial.trial_id, None),
            finished_at=time.time(),
            fingerprint=self.fingerprints.get(spec.variant)
            or definition_fingerprint(spec.config, self.study.varied_keys()),
        )
        self.store.record(row, curve)
        self._record_params(spec)
        if objective is not None:
            key = (spec.variant, group_key(spec.scale))
            loss = as_loss(objective, self.study.objective.mode)
            if key not in self.best or loss < self.best[key][0]:
                self.best[key] = (loss, {"objective": objective, **spec.params})
        if self.tracker is not None:
            from sweeper.tracking import run_name

            self.tracker.log_trial(
                name=run_name(spec.scale, spec.params, spec.seed),
                variant=spec.variant,
                config={**spec.config.model_dump(mode="json"), "trial_id": spec.trial_id, "status": status},
                curve=curve,
                summary={**summary, "objective": objective, "status": status},
            )
        self.on_change()

    def _record_params(self, spec: TrialSpec) -> None:
        key = (spec.variant, group_key(spec.scale))
        if key in self.recorded_params:
            return
        self.recorded_params.add(key)
        from trainers.data import load_corpus
        from trainers.parameterization import build

        vocab = load_corpus(spec.config.corpus, spec.config.vocab_size).vocab_size
        _, plans = build(spec.config, vocab, device="meta")
        self.store.record_params(spec.variant, spec.scale, [p.as_row() for p in plans])


def _objective(summary: dict, study: Study) -> float | None:
    if study.objective.metric == "train_loss":
        return summary.get("final_train_loss")
    return summary.get("best_val_loss" if study.objective.use == "best" else "final_val_loss")


def _none_for_nan(point: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in point.items()}


# --- Ray session -----------------------------------------------------------------------------------------


def ray_temp_dir(results_dir: Path) -> Path:
    """Ray's session folder: under the study's results folder when the path is short enough for Ray's
    unix sockets (about 107 bytes in all), else a folder in /tmp named after the results folder."""
    candidate = results_dir.resolve() / ".ray"
    if len(str(candidate)) <= 40:
        return candidate
    digest = hashlib.sha256(str(results_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"sweeper-ray-{digest}"


def kill_leftover_ray(temp_dir: Path) -> int:
    """Stop Ray processes of an earlier local session in `temp_dir` (a killed driver leaves some)."""
    marker = str(temp_dir)
    killed = 0
    proc = Path("/proc")
    if proc.exists():
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"{marker}/" in cmdline or cmdline.rstrip().endswith(marker) or f"{marker} " in cmdline:
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
    else:
        killed = int(subprocess.run(["pkill", "-9", "-f", marker], check=False).returncode == 0)
    return killed


@dataclass
class RunOutcome:
    complete: bool
    counts: RunCounts
    planned: int | None
    skipped: int
    wall_s: float
    strategy: Any = None
    best: dict = field(default_factory=dict)


def start_ray(results_dir: Path, address: str | None, study: Study) -> Path | None:
    if address:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        return None
    temp_dir = ray_temp_dir(results_dir)
    kill_leftover_ray(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    trial_tmp = results_dir / ".tmp"
    trial_tmp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, private instance only
    os.environ["TMPDIR"] = str(trial_tmp)  # checkpoint and W&B leftovers of killed trials stay in the study
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_DEDUP_LOGS"] = "0"
    gpus = study.resources.gpu and _local_gpus()
    if study.resources.gpu and not gpus:
        from sweeper.study import StudyError

        raise StudyError(
            f"{study.source}: resources.gpu={study.resources.gpu:g} but this machine has no CUDA GPU; "
            "set resources.gpu: 0, or join a cluster with GPUs (--address)"
        )
    ray.init(
        num_cpus=os.cpu_count(),
        num_gpus=gpus or 0,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        log_to_driver=False,
        logging_level="ERROR",
        configure_logging=True,
    )
    return temp_dir


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def stop_ray(temp_dir: Path | None) -> None:
    ray.shutdown()
    if temp_dir is not None:
        kill_leftover_ray(temp_dir)


def run_study(
    study: Study,
    store: ResultsStore,
    stored: Stored,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    tracker: Any = None,
    inherited: dict[str, dict] | None = None,
    on_change: Callable[[Recorder | None], None] | None = None,
    fingerprints: dict[str, str] | None = None,
) -> RunOutcome:
    """Run what the store does not have yet. Returns whether the study is now complete."""
    start = time.time()
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's own console tables: sweeper has its display
    strategy = make_strategy(study, stored, inherited)
    threads = max(1, int(study.resources.cpu))
    searcher = StudySearcher(
        strategy,
        {"metric": study.objective.metric, "mode": study.objective.mode, "use": study.objective.use},
        threads,
    )
    recorder_box: dict[str, Recorder] = {}
    recorder = Recorder(
        study,
        store,
        searcher,
        tracker,
        lambda: on_change and on_change(recorder_box.get("r")),
        fingerprints or study.variant_fingerprints(inherited),
    )
    recorder_box["r"] = recorder
    scheduler = None
    if study.early_stop is not None:
        probe = study.probe_params()
        steps = max(
            study.trial_config(v, p, probe, study.seeds[0], (inherited or {}).get(v)).total_steps
            for v in study.variants
            for p in study.scale_points()
        )
        scheduler = GroupedASHA(study.early_stop.grace_steps, steps, study.early_stop.reduction_factor)
    resources = {"cpu": study.resources.cpu, "gpu": study.resources.gpu}
    tuner = tune.Tuner(
        tune.with_resources(run_trial, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=max_concurrent or study.max_concurrent,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"t_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str((store.dir / "ray_results").resolve()),
            verbose=0,
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
    tuner.fit()
    complete = searcher.finished and not searcher.running
    return RunOutcome(
        complete=complete,
        counts=recorder.counts,
        planned=getattr(strategy, "planned", None),
        skipped=len(stored.losses),
        wall_s=time.time() - start,
        strategy=strategy,
        best=recorder.best,
    )


def stored_results(store: ResultsStore, study: Study, rerun_failed: bool) -> Stored:
    """Losses of the trials not to run again, and the swept settings seen per (variant, scale point)."""
    import json

    stored = Stored()
    frame = store.trials()
    if frame.empty:
        return stored
    keep = DONE_STATUSES if rerun_failed else (*DONE_STATUSES, "failed")
    for row in frame.to_dict("records"):
        if row["status"] not in keep:
            continue
        stored.losses[row["trial_id"]] = as_loss(row.get("objective"), study.objective.mode)
        scale = {k: _plain(row.get(k)) for k in study.scale_keys()}
        params = json.loads(row["swept"]) if row.get("swept") else {}
        settings = stored.settings.setdefault((row["variant"], group_key(scale)), [])
        if params not in settings:
            settings.append(params)
    return stored


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
