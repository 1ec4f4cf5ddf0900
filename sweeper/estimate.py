"""How long a study will take on this machine, from a measurement of this machine.

Each distinct trial shape (a trial's config with the keys that do not change its cost taken out) is
timed once: a real `trainers.train.train` run of a few steps, evaluating after every step, at the thread
count, device and precision a trial of the study gets. From it: seconds per optimizer step, seconds per
evaluation batch, and the fixed cost of a trial before its first step (corpus, model build, first-call
warm-up and compilation). When trials run side by side, the shapes are also timed in that many processes,
one alone and then all at once: parallel trials share caches and memory bandwidth and run slower than
one alone, the more so the wider the model (lr_width's header puts a width-512 trial two at a time on
2 cores at 250 s; bench/trainer_throughput.py's rate makes it 100 s alone). The ratio of the two rounds
is each shape's side-by-side factor. Measurements are
cached in `cache_dir()/step_times.json`, per CPU, capability, torch version (and GPU), so a second
dry-run measures nothing; `SWEEPER_REMEASURE=1` (or `refresh=True`) measures again.

A trial's estimate = steps x s/step + evaluations x eval_batches x s/batch + its fixed cost
+ RAY_TRIAL_OVERHEAD_S, all but the last times the shape's side-by-side factor. The study's wall time = the
trial-seconds still to run / trials at a time, or the longest chain of trials that must run one after
another if that is longer, + RAY_STARTUP_S. Assumptions, stated once here:
- adaptive search: per (variant, scale point), ADAPTIVE_TRIALS_PER_SEED trials per seed (the line search
  alone: the mean of a measured run, lr_width's 51 trials for 2 variants x 4 widths), plus
  `search.extra_seeds` more seeds at ADAPTIVE_EXTRA_VALUES values. The true count depends on the losses.
- early stopping (ASHA): every trial is counted as running to its end, so the estimate is an upper bound.
- optuna: trials are handed out without waiting, like a grid; adaptive runs one scale point at a time per
  variant, which limits how many of its trials can run at once.
- optuna and adaptive rows are timed at the swept keys' probe values (`Study.probe_params`): a swept key
  that changes the cost (batch_size, say) counts at that one value. A grid times every trial's own shape.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweeper.identity import definition_fingerprint
from sweeper.store import ResultsStore, point_label
from sweeper.study import Study
from trainers.config import ConfigError, TrainConfig

# bench/orchestration_overhead.py on 2 cores: 0.15 s per trial beyond the trials' own time, 0.66 s with
# Ray's start-up and shutdown spread over its 16 trials, so those take (0.66 - 0.15) x 16 = about 8 s.
RAY_TRIAL_OVERHEAD_S = 0.5
RAY_STARTUP_S = 8.0
ADAPTIVE_TRIALS_PER_SEED = 6.4
ADAPTIVE_EXTRA_VALUES = 3  # values that get `search.extra_seeds` more seeds: the best and about two more
# The first wave of a line search runs 3 settings at once; each later one waits for the one before. The
# extra seeds come in about 2 more waves (at the best, then at the values within noise of it).
ADAPTIVE_FIRST_WAVE = 3
ADAPTIVE_EXTRA_WAVES = 2

WARMUP_STEPS = 2
TIMED_STEPS = 6
MIN_TIMED_STEPS = 3
TIMED_BUDGET_S = 5.0  # stop timing a slow shape after this long once MIN_TIMED_STEPS are in
MAX_SIDE_BY_SIDE = 8  # processes in the side-by-side measurement; more trials at once reuse its factor
MAX_SIDE_BY_SIDE_SHAPES = 3  # the heaviest shapes are timed side by side; the others borrow a factor
SIDE_BY_SIDE_S = 0.75  # seconds of steps each side-by-side round times (at least TIMED_STEPS steps)
# The side-by-side measurement starts fresh processes (10-30 s on 2 cores): not worth it for a study that
# is over in a couple of minutes, whose trials then count as running as fast as alone.
SIDE_BY_SIDE_WORTH_S = 120.0
BUSY_LOAD = 0.5  # load average per core above which a measurement is flagged as taken on a busy machine

CACHE_FILE = "step_times.json"
CACHE_VERSION = 1
REMEASURE_ENV = "SWEEPER_REMEASURE"

# Keys that change what a trial learns but not what a step costs: scalars, schedules, inits, run length
# (the step and evaluation counts enter the estimate, not the measurement). Everything else (shape,
# batch, precision, device, threads, optimizer kind, compile, ...) keys a measurement of its own.
COST_NEUTRAL_KEYS = frozenset(
    {
        "seed",
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "weight_decay_mode",
        "grad_clip",
        "warmup",
        "warmup_tokens",
        "warmup_frac",
        "schedule",
        "min_lr_ratio",
        "decay_frac",
        "steps",
        "tokens",
        "eval_interval",
        "eval_batches",
        "diverge_factor",
        "diverge_patience",
        "parameterization",
        "alignment",
        "base_width",
        "base_depth",
        "depth_scaling",
        "depth_alpha",
        "residual_init",
        "gamma_embed",
        "gamma_hidden",
        "gamma_readout",
        "embed_lr_scaling",
        "readout_scaling",
        "output_mult",
        "attn_mult",
        "embed_mult",
        "attn_scale",
        "init",
        "init_std",
        "init_mult",
        "zero_init_query",
        "zero_init_readout",
    }
)


class EstimateUnavailable(Exception):
    """The measurement cannot run here; the message says why, in one line."""


@dataclass(frozen=True)
class ShapeTiming:
    step_s: float  # median seconds of one optimizer step
    eval_batch_s: float  # median seconds of one evaluation batch
    overhead_s: float  # per trial: everything before the first step beyond steady costs
    dtype: str  # the precision the trial runs in (dtype: auto resolved)
    device: str
    measured_at: str  # ISO date
    load: float  # load average per core when measured


@dataclass
class PlanRow:
    """One (variant, scale point) of the plan: counts, and the configs of the trials still to run."""

    variant: str
    point: dict[str, Any]
    planned: float
    in_store: int
    to_run: float
    approximate: bool  # adaptive: the counts are estimates
    work: list[tuple[TrainConfig, float]] = field(default_factory=list)  # (config, how many trials)
    per_trial_s: float | None = None
    total_s: float | None = None


@dataclass
class StudyEstimate:
    rows: list[PlanRow]
    trial_s: float  # trial-seconds still to run, side-by-side slowdown included
    wall_s: float
    concurrency: int  # trials at once: what the machine fits, or fewer when the search has fewer to hand out
    side_by_side: tuple[float, float]  # least and most slowdown of a trial from running `concurrency` at once
    side_by_side_measured: bool  # False: a short study, its trials count as running as fast as alone
    machine: str  # "AMD EPYC, AVX2" or the GPU's name
    dtypes: list[str]
    measured_at: str | None
    approximate: bool
    upper_bound: bool
    busy: float | None = None  # load per core of the busiest measurement used, when above BUSY_LOAD

    def summary(self) -> str:
        """The dry-run's last line."""
        if not any(r.to_run > 0 for r in self.rows):
            return "estimated wall time: nothing to run"
        word = "at most" if self.upper_bound else "about"
        at_once = f"{self.concurrency} trial{'s' if self.concurrency > 1 else ''} at a time"
        low, high = self.side_by_side
        if high > 1.005:
            spread = f"{high:.2f}x" if high - low < 0.05 else f"{low:.2f}-{high:.2f}x"
            at_once += f", each {spread} slower side by side"
        elif not self.side_by_side_measured:
            at_once += ", side-by-side slowdown not measured"
        what = ", ".join([self.machine, " and ".join(self.dtypes), at_once])
        line = f"estimated wall time: {word} {format_duration(self.wall_s)} on this machine ({what})"
        return line + (f", measured {self.measured_at}" if self.measured_at else "")


def format_duration(seconds: float) -> str:
    """9 s, 1 min 15 s, 2 h 5 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 600:
        minutes, secs = divmod(seconds, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# --- the plan: what is left to run ------------------------------------------------------------------------


def trial_threads(study: Study) -> int:
    """The torch threads a trial gets (as `execute.run_study` hands them out)."""
    return max(1, int(study.resources.cpu))


def plan_rows(study: Study, store: ResultsStore, rerun_failed: bool = False) -> list[PlanRow]:
    """Per (variant, scale point): trials planned, in the store, to run; no torch needed."""
    done = store.done_ids(rerun_failed)
    if study.search.method == "grid":
        groups: dict[tuple, list] = {}
        for t in study.grid_trials():
            groups.setdefault((t.variant, tuple(t.scale.items())), []).append(t)
        rows = []
        for (variant, point), items in groups.items():
            left = Counter(t.config for t in items if t.trial_id not in done)
            rows.append(
                PlanRow(
                    variant,
                    dict(point),
                    planned=len(items),
                    in_store=len(items) - sum(left.values()),
                    to_run=sum(left.values()),
                    approximate=False,
                    work=[(config, n) for config, n in left.items()],
                )
            )
        return rows
    adaptive = study.search.method == "adaptive"
    per_group = adaptive_trials(study) if adaptive else study.search.num_samples * len(study.seeds)
    stored = _stored_per_group(study, store, done)
    probe = study.probe_params()
    rows = []
    for variant in study.variants:
        for point in study.scale_points():
            have = stored.get((variant, point_label(point)), 0)
            left = per_group - have
            left = 0 if left < 0.5 else left  # an adaptive guess: under half a trial left is none
            config = study.trial_config(variant, point, probe, study.seeds[0])
            rows.append(
                PlanRow(variant, point, per_group, have, left, adaptive, [(config, left)] if left else [])
            )
    return rows


def adaptive_trials(study: Study) -> float:
    """The guess of an adaptive search's trials per (variant, scale point); see the module's doc."""
    extra = getattr(study.search, "extra_seeds", 0)
    return ADAPTIVE_TRIALS_PER_SEED * len(study.seeds) + extra * ADAPTIVE_EXTRA_VALUES


def _adaptive_waves(study: Study) -> float:
    """Rounds of trials at one scale point that must run one after another."""
    extra = ADAPTIVE_EXTRA_WAVES if getattr(study.search, "extra_seeds", 0) else 0
    return ADAPTIVE_TRIALS_PER_SEED - (ADAPTIVE_FIRST_WAVE - 1) + extra


def _stored_per_group(study: Study, store: ResultsStore, done: set[str]) -> dict[tuple[str, str], int]:
    """Stored trials not to run again, of each variant's current definition, per (variant, point label)."""
    frame = store.trials()
    if frame.empty or "variant" not in frame.columns:
        return {}
    prints = study.variant_fingerprints()
    counts: Counter[tuple[str, str]] = Counter()
    for row in frame.to_dict("records"):
        if row["trial_id"] not in done or row["variant"] not in prints:
            continue
        fingerprint = row.get("fingerprint")
        if not isinstance(fingerprint, str):
            try:
                fingerprint = definition_fingerprint(json.loads(row["config"]), study.varied_keys())
            except (ValueError, TypeError, KeyError):
                continue
        if fingerprint == prints[row["variant"]]:
            counts[(row["variant"], row.get("scale_point") or "base")] += 1
    return dict(counts)


# --- concurrency ------------------------------------------------------------------------------------------


def concurrency(
    study: Study, max_concurrent: int | None = None, cores: int | None = None, gpus: int | None = None
) -> int:
    """Trials at once on this machine: what Ray fits of `resources` (sized to os.cpu_count() cores and
    the local GPUs, as `local_ray.start` sizes it), capped by --max-concurrent or the study's."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    fit = max(1, math.floor(cores / study.resources.cpu + 1e-9))
    if study.resources.gpu:
        gpus = _local_gpus() if gpus is None else gpus
        fit = min(fit, max(1, math.floor(gpus / study.resources.gpu + 1e-9)))
    cap = max_concurrent or study.max_concurrent
    return min(fit, cap) if cap else fit


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _parallel_width(study: Study, rows: list[PlanRow]) -> float:
    """How many trials the search can hand out at once (adaptive waits for results between waves)."""
    left = sum(r.to_run for r in rows)
    if study.search.method != "adaptive":
        return left
    return min(left, len(study.variants) * len(study.seeds) * ADAPTIVE_FIRST_WAVE)


# --- the estimate -----------------------------------------------------------------------------------------


def estimate_study(
    study: Study,
    store: ResultsStore,
    rerun_failed: bool = False,
    *,
    max_concurrent: int | None = None,
    refresh: bool | None = None,
    progress: Callable[[str], None] | None = None,
    rows: list[PlanRow] | None = None,
) -> StudyEstimate:
    """The study's time on this machine: per row and in total. Raises EstimateUnavailable with the reason
    when its trials cannot run here (no such device, a missing corpus, ...)."""
    if study.custom_trainer:
        raise EstimateUnavailable(
            f"sweeper times only its built-in trainer, not {study.trainer_label} (the store's wall_s column "
            "has the time of each trial run so far)"
        )
    rows = plan_rows(study, store, rerun_failed) if rows is None else rows
    if refresh is None:
        refresh = os.environ.get(REMEASURE_ENV, "") not in ("", "0")
    threads = trial_threads(study)
    for row in rows:
        row.work = [(as_run(study, config, threads), n) for config, n in row.work]
    # Rows with nothing left to run still show a per-trial time when their shape is in the cache.
    probe = study.probe_params()
    probes = {
        id(r): as_run(study, study.trial_config(r.variant, r.point, probe, study.seeds[0]), threads)
        for r in rows
        if not r.work
    }
    needed = {shape_key(c): c for r in rows for c, n in r.work if n > 0}
    from trainers.precision import cache_dir, write_json_atomic

    cache_path = cache_dir() / CACHE_FILE
    cache = _read_cache(cache_path)
    timings: dict[str, ShapeTiming] = {}
    for key, config in {**{shape_key(c): c for c in probes.values()}, **needed}.items():
        cached = None if refresh and key in needed else _cached(cache, config)
        if cached is not None:
            timings[key] = cached
    missing = {k: c for k, c in needed.items() if k not in timings}
    if missing:
        if progress:
            load = _load_per_core()
            busy = (
                f"; the machine is busy (load {load:.1f} per core), so times will run long"
                if load > BUSY_LOAD
                else ""
            )
            plural = "s" if len(missing) > 1 else ""
            progress(f"measuring step time of {len(missing)} shape{plural}, cached for next time{busy} ...")
        for key, config in missing.items():
            try:
                timings[key] = measure_shape(config)
            except (ConfigError, OSError, RuntimeError) as err:
                raise EstimateUnavailable(_one_line(err)) from None
            cache["shapes"][_entry_key(config, key)] = {"shape": json.loads(key), **asdict(timings[key])}
            write_json_atomic(
                cache_path, cache
            )  # after each shape: an interrupted measurement keeps its part

    at_once = concurrency(study, max_concurrent)
    side = min(at_once, max(1, math.ceil(_parallel_width(study, rows))))
    factors: dict[str, float] = {}
    found: dict[str, float] = {}
    if side > 1 and needed:
        by_shape: Counter[str] = Counter()
        for row in rows:
            for config, n in row.work:
                by_shape[shape_key(config)] += n * _trial_seconds(config, timings[shape_key(config)], 1.0)
        worth = sum(by_shape.values()) / side > SIDE_BY_SIDE_WORTH_S
        heaviest = sorted(by_shape, key=by_shape.__getitem__, reverse=True)[:MAX_SIDE_BY_SIDE_SHAPES]
        found = side_by_side_factors(
            [needed[k] for k in heaviest], side, timings, refresh, cache_path, progress, measure=worth
        )
    if side > 1:
        # Finished rows show their per-trial time too, with a factor measured before if there is one.
        shown = {shape_key(c): c for c in probes.values() if shape_key(c) in timings}
        others = [c for k, c in shown.items() if k not in found]
        found.update(side_by_side_factors(others, side, timings, False, cache_path, measure=False))
        if found:  # a shape not timed side by side borrows from the nearest in step time
            for key in {*needed, *shown}:
                near = min(found, key=lambda k: abs(math.log(timings[k].step_s / timings[key].step_s)))
                factors[key] = found.get(key, found[near])
    measured_side = side == 1 or any(k in factors for k in needed)

    trial_s, longest = 0.0, 0.0
    chains: Counter[str] = Counter()
    for row in rows:
        seconds = [
            (n, _trial_seconds(c, timings[shape_key(c)], factors.get(shape_key(c), 1.0))) for c, n in row.work
        ]
        if seconds:
            row.total_s = sum(n * s for n, s in seconds)
            row.per_trial_s = row.total_s / sum(n for n, _ in seconds)
            longest = max(longest, *(s for _, s in seconds))
        else:
            config = probes[id(row)]
            timing = timings.get(shape_key(config))
            row.total_s = 0.0
            factor = factors.get(shape_key(config), 1.0)
            row.per_trial_s = None if timing is None else _trial_seconds(config, timing, factor)
        trial_s += row.total_s
        if study.search.method == "adaptive" and row.to_run:
            # One scale point at a time per variant; each wave after the first waits for the one before.
            waves = max(1.0, _adaptive_waves(study) * row.to_run / row.planned)
            chains[row.variant] += waves * (row.per_trial_s or 0.0)
    wall = (max(trial_s / side, longest, *chains.values()) + RAY_STARTUP_S) if trial_s else 0.0
    used = [timings[shape_key(c)] for r in rows for c, _ in r.work]
    busiest = max((t.load for t in used), default=0.0)
    to_run = [factors[k] for k in needed if k in factors]
    return StudyEstimate(
        rows=rows,
        trial_s=trial_s,
        wall_s=wall,
        concurrency=side,
        side_by_side=(min(to_run, default=1.0), max(to_run, default=1.0)),
        side_by_side_measured=measured_side,
        machine=describe_machine("cuda" if any(t.device == "cuda" for t in used) else "cpu"),
        dtypes=sorted({t.dtype for t in used}),
        measured_at=min((t.measured_at for t in used), default=None),
        approximate=study.search.method == "adaptive",
        upper_bound=study.early_stop is not None,
        busy=busiest if busiest > BUSY_LOAD else None,
    )


def as_run(study: Study, config: TrainConfig, threads: int) -> TrainConfig:
    """`config` as a trial of `study` runs it: on the device Ray gives it, with the threads it gets."""
    updates: dict[str, Any] = {"device": trial_device(study, config)}
    if not config.threads:
        updates["threads"] = threads
    return config.with_updates(**updates)


def trial_evaluations(config: TrainConfig) -> int:
    """Evaluations in one trial: at step 0, every eval_interval steps, and at the end (see train())."""
    total, interval = config.total_steps, config.eval_interval
    return 1 + total // interval + (1 if total % interval else 0)


def _trial_seconds(config: TrainConfig, timing: ShapeTiming, factor: float) -> float:
    work = (
        config.total_steps * timing.step_s
        + trial_evaluations(config) * config.eval_batches * timing.eval_batch_s
        + timing.overhead_s
    )
    return work * factor + RAY_TRIAL_OVERHEAD_S


def trial_device(study: Study, config: TrainConfig) -> str:
    """The device a trial runs on. Ray hides the GPUs from a trial that asks for none (it sets
    CUDA_VISIBLE_DEVICES to empty), so `auto` means the CPU unless resources.gpu is set."""
    if study.resources.gpu:
        if not _local_gpus():
            raise EstimateUnavailable(
                f"resources.gpu={study.resources.gpu:g} but this machine has no CUDA GPU"
            )
        return "cpu" if config.device == "cpu" else "cuda"
    if config.device == "cuda":
        raise EstimateUnavailable("device cuda with resources.gpu 0: Ray gives such trials no GPU")
    return "cpu"


def shape_key(config: TrainConfig) -> str:
    """The config keys that set what a step costs, as canonical JSON."""
    values = config.model_dump(mode="json")
    kept = {k: v for k, v in values.items() if k not in COST_NEUTRAL_KEYS}
    # constant and scaled eps are the same AdamW with other eps values; atan2 is another optimizer.
    kept["eps_mode"] = "atan2" if config.eps_mode == "atan2" else "eps"
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


# --- measuring --------------------------------------------------------------------------------------------


class _Enough(Exception):
    """Raised from the report callback to end a probe run once it has its samples."""


def measure_shape(config: TrainConfig) -> ShapeTiming:
    """Time a few real training steps and evaluation batches of `config` (its device and threads), in
    this process. Raises ConfigError when the config cannot run here (device, corpus)."""
    import torch

    from trainers.data import load_corpus
    from trainers.precision import resolve_dtype
    from trainers.train import resolve_device

    device = resolve_device(config.device)
    load_corpus(config.corpus, config.vocab_size)  # built once here, as `sweeper run` does before trials
    previous = torch.get_num_threads()
    load = _load_per_core()
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        _warm_process(config)
        dtype = resolve_dtype(config.dtype, device)
        marks = _probe_run(config)
    finally:
        torch.set_num_threads(previous)
    steps = [s for _, s in marks[1:]]
    evals = [(t - t_before) - s for (t_before, _), (t, s) in itertools.pairwise(marks)]
    timed = slice(WARMUP_STEPS, None) if len(steps) > WARMUP_STEPS else slice(-1, None)
    step_s = statistics.median(steps[timed])
    eval_s = max(0.0, statistics.median(evals[timed]))
    # The first report comes after setup and the first evaluation; the warm-up steps and evaluations
    # cost more than steady ones. All of that is paid once per trial.
    extra = sum(s - step_s for s in steps[: timed.start or 0]) + sum(
        e - eval_s for e in evals[: timed.start or 0]
    )
    overhead = max(0.0, marks[0][0] - eval_s + extra)
    return ShapeTiming(
        step_s=step_s,
        eval_batch_s=eval_s,
        overhead_s=overhead,
        dtype=dtype,
        device=device.type,
        measured_at=datetime.date.today().isoformat(),
        load=round(load, 2),
    )


def _probe_config(config: TrainConfig, timed: int, lr_scale: float = 1.0) -> TrainConfig:
    return config.with_updates(
        steps=WARMUP_STEPS + timed,
        tokens=None,
        eval_interval=1,
        eval_batches=1,
        lr=config.lr * lr_scale,
    )


def _probe_run(
    config: TrainConfig, timed: int = TIMED_STEPS, barrier: Callable[[], None] | None = None
) -> list[tuple[float, float]]:
    """(seconds since the run started, seconds of the step just before) at each report of a short run.

    The first entry is the report after the first evaluation (its step time is 0). Entry k > 0 follows
    step k and its evaluation of one batch. A run that diverges at once is repeated at a smaller LR (the
    LR does not change the cost)."""
    for lr_scale in (1.0, 1e-3):
        marks = _timed_train(_probe_config(config, timed, lr_scale), timed, barrier)
        if len(marks) > 1:
            return marks
    raise RuntimeError("the probe run diverged at its first step, even at 1/1000 of the learning rate")


def _timed_train(
    probe: TrainConfig, timed_steps: int, barrier: Callable[[], None] | None
) -> list[tuple[float, float]]:
    from trainers.train import train

    marks: list[tuple[float, float]] = []
    start = time.perf_counter()

    def report(point: dict[str, Any]) -> None:
        rate = point.get("tokens_per_s")
        marks.append((time.perf_counter() - start, probe.tokens_per_step / rate if rate else 0.0))
        timed = len(marks) - 1 - WARMUP_STEPS
        if barrier is not None and timed == 0:
            barrier()
        if timed >= timed_steps or (
            barrier is None
            and timed >= MIN_TIMED_STEPS
            and marks[-1][0] - marks[WARMUP_STEPS][0] > TIMED_BUDGET_S
        ):
            raise _Enough

    with contextlib.suppress(_Enough):
        train(probe, report)
    return marks


_warm = False


def _warm_process(config: TrainConfig) -> None:
    """One tiny step first, so that the process's one-time start-up (a Ray worker pays it once, not per
    trial) is not charged to the first shape measured."""
    global _warm
    if _warm:
        return
    from trainers.train import train

    tiny = {"width": 16, "depth": 1, "head_dim": 16, "seq_len": 16, "batch_size": 2, "steps": 1}
    train(
        TrainConfig(
            **tiny, eval_batches=1, corpus=config.corpus, device=config.device, threads=config.threads
        )
    )
    _warm = True


def side_by_side_factors(
    configs: list[TrainConfig],
    processes: int,
    timings: dict[str, ShapeTiming],
    refresh: bool,
    cache_path: Path,
    progress: Callable[[str], None] | None = None,
    measure: bool = True,
) -> dict[str, float]:
    """Per shape key, how much slower a step is when `processes` trials run at once than when one runs
    alone (cached). Below 1 is noise and counts as 1. Shapes neither cached nor measured (`measure`
    false, or the measurement failed) are left out."""
    processes = min(processes, MAX_SIDE_BY_SIDE)
    cache = _read_cache(cache_path)
    keys = {shape_key(c): _entry_key(c, f"{shape_key(c)}|x{processes}") for c in configs}
    found: dict[str, float] = {}
    for config in configs:
        entry = cache["side_by_side"].get(keys[shape_key(config)])
        if entry is not None and not refresh:
            found[shape_key(config)] = float(entry["factor"])
    todo = [c for c in configs if shape_key(c) not in found]
    if not todo or not measure:
        return found
    if progress:
        progress(
            f"timing {processes} trials side by side, {len(todo)} shape{'s' if len(todo) > 1 else ''} ..."
        )
    load = _load_per_core()
    budget = [
        max(TIMED_STEPS, min(500, math.ceil(SIDE_BY_SIDE_S / timings[shape_key(c)].step_s))) for c in todo
    ]
    try:
        rounds = measure_side_by_side(todo, processes, budget)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
        if progress:
            progress(f"could not time trials side by side ({_one_line(err)}); assuming no slowdown")
        return found
    for config, (alone, together) in zip(todo, rounds, strict=True):
        factor = max(1.0, together / alone) if alone > 0 else 1.0
        found[shape_key(config)] = factor
        cache["side_by_side"][keys[shape_key(config)]] = {
            "shape": json.loads(shape_key(config)),
            "processes": processes,
            "step_s_alone": alone,
            "step_s_together": together,
            "factor": factor,
            "measured_at": datetime.date.today().isoformat(),
            "load": round(load, 2),
        }
    from trainers.precision import write_json_atomic

    write_json_atomic(cache_path, cache)
    return found


def measure_side_by_side(
    configs: list[TrainConfig], processes: int, steps: list[int] | None = None
) -> list[tuple[float, float]]:
    """Per config, (median step time with one process stepping, with `processes` stepping at once).

    Each process is a fresh interpreter, as a Ray worker is. Per config and round, the processes that
    take part warm up, wait for each other, then time their steps; in the first round only one does.
    On a busy machine both rounds also compete with the other work, and the ratio comes out high."""
    steps = steps or [TIMED_STEPS] * len(configs)
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "configs.json"
        plan.write_text(
            json.dumps([[c.model_dump(mode="json"), n] for c, n in zip(configs, steps, strict=True)])
        )
        errors = Path(tmp) / "stderr"
        command = [sys.executable, "-m", "sweeper.estimate", "--side-by-side", str(plan)]
        with errors.open("w") as err:
            children = [
                subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
                )
                for _ in range(processes)
            ]
        try:
            results = []
            for index in range(len(configs)):
                alone = _side_by_side_round(children[:1], index, errors)  # the others wait
                together = _side_by_side_round(children, index, errors)
                results.append((statistics.median(alone), statistics.median(together)))
            for child in children:
                child.stdin.close()
                child.wait(timeout=60)
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    return results


def _side_by_side_round(running: list, index: int, errors: Path) -> list[float]:
    def send(child: Any, line: str) -> None:
        child.stdin.write(line + "\n")
        child.stdin.flush()

    def expect(child: Any, what: str) -> str:
        line = child.stdout.readline()
        if not line.startswith(what):
            tail = " ".join(errors.read_text().split()[-40:])
            raise RuntimeError(f"a side-by-side probe failed: {tail or 'no output'}")
        return line

    for child in running:
        send(child, f"run {index}")
    for child in running:
        expect(child, "ready")
    for child in running:
        send(child, "go")
    times: list[float] = []
    for child in running:
        times += json.loads(expect(child, "{"))["steps"]
    return times


def _side_by_side_child(plan_path: str) -> None:
    """Reads `run INDEX` lines: warms up that config, prints `ready`, waits for `go`, times its steps and
    prints them as JSON. Ends when stdin closes."""
    import torch

    plan = [(TrainConfig.model_validate(c), n) for c, n in json.loads(Path(plan_path).read_text())]
    if plan and plan[0][0].threads:
        torch.set_num_threads(plan[0][0].threads)
    _warm_process(plan[0][0])

    def barrier() -> None:
        print("ready", flush=True)
        sys.stdin.readline()

    while line := sys.stdin.readline():
        config, steps = plan[int(line.split()[1])]
        if config.threads:
            torch.set_num_threads(config.threads)
        marks = _probe_run(config, steps, barrier)
        print(json.dumps({"steps": [s for _, s in marks[1 + WARMUP_STEPS :]]}), flush=True)


# --- the machine and the cache ------------------------------------------------------------------------------


@functools.cache
def machine_key(device: str) -> str:
    import torch

    from trainers.precision import cpu_name

    parts = [cpu_name(), torch.backends.cpu.get_cpu_capability(), torch.__version__]
    if device == "cuda":
        parts += [torch.cuda.get_device_name(0), str(torch.version.cuda)]
    return "|".join(parts)


def describe_machine(device: str) -> str:
    import torch

    from trainers.precision import cpu_name

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()}, {torch.backends.cpu.get_cpu_capability()}"


def _entry_key(config: TrainConfig, what: str) -> str:
    """The cache key of a measurement of `what` on this machine (config.device says which part of it)."""
    machine = machine_key(config.device)
    return hashlib.sha256(f"{machine}|{what}".encode()).hexdigest()[:20]


def _cached(cache: dict, config: TrainConfig) -> ShapeTiming | None:
    entry = cache["shapes"].get(_entry_key(config, shape_key(config)))
    try:
        timing = ShapeTiming(**{k: entry[k] for k in ShapeTiming.__dataclass_fields__})
    except (KeyError, TypeError):
        return None  # not there, or an entry of another format: measure again
    return timing


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        data = {}
    return {
        "version": CACHE_VERSION,
        "shapes": data.get("shapes", {}),
        "side_by_side": data.get("side_by_side", {}),
    }


def _load_per_core() -> float:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--side-by-side":
        _side_by_side_child(sys.argv[2])
    else:
        raise SystemExit("usage: python -m sweeper.estimate --side-by-side PLAN_JSON (used by the estimate)")
