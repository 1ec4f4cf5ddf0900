"""Time estimates from a measurement of this machine: real (tiny) training steps, cached per shape."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sweeper import estimate
from sweeper.errors import StudyError
from sweeper.estimate import EstimateUnavailable, concurrency, estimate_study, format_duration, plan_rows
from sweeper.store import ResultsStore, trial_row
from sweeper.study import Study, definition_fingerprint
from trainers.precision import cpu_name, resolve_dtype

SWEEPER = [sys.executable, "-m", "sweeper.cli"]
TINY = {
    "depth": 1,
    "head_dim": 16,
    "seq_len": 32,
    "batch_size": 8,
    "steps": 20,
    "eval_interval": 10,
    "eval_batches": 2,
    "dtype": "fp32",
}


@pytest.fixture(autouse=True)
def cache(corpus_cache, monkeypatch) -> Path:
    """The session's cache folder (conftest: never ~/.cache), without measurements of earlier tests."""
    monkeypatch.setenv("SWEEPER_CACHE", str(corpus_cache))
    monkeypatch.delenv(estimate.REMEASURE_ENV, raising=False)
    (corpus_cache / estimate.CACHE_FILE).unlink(missing_ok=True)
    return corpus_cache


def study(**spec) -> Study:
    data = {"name": "est", "trainer": dict(TINY), "wandb": {"mode": "disabled"}, "max_concurrent": 1}
    trainer = spec.pop("trainer", {})
    data.update(spec)
    data["trainer"].update(trainer)
    return Study.from_dict(data)


def record(store: ResultsStore, spec, status: str = "completed") -> None:
    store.record(
        trial_row(
            trial_id=spec.trial_id,
            study=store.study,
            variant=spec.variant,
            seed=spec.seed,
            scale=spec.scale,
            params=spec.params,
            config=spec.config.model_dump(mode="json"),
            status=status,
            objective=2.0,
            summary={"final_val_loss": 2.0, "steps": 20, "status": status},
        ),
        [],
    )


def by_point(rows) -> dict[tuple, estimate.PlanRow]:
    return {(r.variant, *r.point.values()): r for r in rows}


def test_estimate_grows_with_width_and_steps_and_measures_each_shape_once(tmp_path, cache):
    s = study(
        trainer={"dtype": "auto"},
        scale={"width": [16, 256], "steps": [10, 40]},
        sweep={"lr": {"values": [0.001, 0.002]}},
    )
    threads = torch.get_num_threads()
    result = estimate_study(s, ResultsStore(tmp_path / "results", "est"))
    rows = by_point(result.rows)
    small, wide, wide_long = (
        rows[("default", 16, 10)].per_trial_s,
        rows[("default", 256, 10)].per_trial_s,
        rows[("default", 256, 40)].per_trial_s,
    )
    assert all(r.per_trial_s > 0 and r.total_s == pytest.approx(2 * r.per_trial_s) for r in result.rows)
    assert wide / small > 1.5
    assert wide_long / wide > 1.5
    assert result.wall_s > result.trial_s  # one trial at a time, plus Ray's start-up
    # Steps and the learning rate do not change what a step costs: one measurement per width.
    shapes = json.loads((cache / estimate.CACHE_FILE).read_text())["shapes"].values()
    assert sorted(e["shape"]["width"] for e in shapes) == [16, 256]
    assert {e["shape"]["threads"] for e in shapes} == {1}  # the threads a trial with resources.cpu 1 gets
    assert torch.get_num_threads() == threads
    torch.set_num_threads(1)
    try:
        expected = resolve_dtype("auto", torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert result.dtypes == [expected]


def test_a_second_estimate_reads_the_cache_and_remeasure_measures_again(tmp_path, cache, monkeypatch):
    s = study(scale={"width": [16, 32]}, sweep={"lr": {"values": [0.001]}})
    store = ResultsStore(tmp_path / "results", "est")
    first = estimate_study(s, store)
    assert (cache / estimate.CACHE_FILE).exists()

    def must_not_measure(config):
        raise AssertionError("measured again")

    monkeypatch.setattr(estimate, "measure_shape", must_not_measure)
    second = estimate_study(s, store)
    assert [r.per_trial_s for r in second.rows] == [r.per_trial_s for r in first.rows]
    with pytest.raises(AssertionError, match="measured again"):
        estimate_study(s, store, refresh=True)
    monkeypatch.setenv(estimate.REMEASURE_ENV, "1")
    with pytest.raises(AssertionError, match="measured again"):
        estimate_study(s, store)


def test_a_grid_half_in_the_store_is_estimated_for_the_other_half_only(tmp_path, monkeypatch):
    s = study(scale={"width": [32]}, sweep={"lr": {"values": [0.001, 0.002, 0.004, 0.008]}})
    store = ResultsStore(tmp_path / "results", "est")
    full = estimate_study(s, store)
    for spec in s.grid_trials()[:2]:
        record(store, spec)
    half = estimate_study(s, ResultsStore(tmp_path / "results", "est"))
    (row,) = half.rows
    assert (row.planned, row.in_store, row.to_run) == (4, 2, 2)
    assert half.trial_s == pytest.approx(full.trial_s / 2)
    assert half.wall_s < full.wall_s

    for spec in s.grid_trials()[2:]:
        record(store, spec)
    monkeypatch.setattr(estimate, "measure_shape", lambda config: pytest.fail("nothing left to measure"))
    done = estimate_study(s, ResultsStore(tmp_path / "results", "est"))
    assert done.trial_s == 0 and done.wall_s == 0
    assert done.rows[0].per_trial_s == row.per_trial_s  # still shown, from the cache
    assert done.summary() == "estimated wall time: nothing to run"


def test_adaptive_and_optuna_rows_count_what_the_current_definition_has_in_store(tmp_path):
    s = study(
        scale={"width": [16, 32]},
        sweep={"lr": {"log2_grid": [-10, -6]}},
        search={"method": "adaptive"},
        seeds=[0, 1],
    )
    store = ResultsStore(tmp_path / "results", "est")
    probe = s.probe_params()
    for seed, lr in [(0, 2**-10), (1, 2**-10), (0, 2**-9)]:
        config = s.trial_config("default", {"width": 16}, {"lr": lr}, seed)
        record(store, _spec(s, {"width": 16}, {"lr": lr}, seed, config))
    older = s.trial_config("default", {"width": 16}, probe, 0).with_updates(steps=99)  # an earlier definition
    assert definition_fingerprint(older, s.varied_keys()) != s.variant_fingerprints()["default"]
    record(store, _spec(s, {"width": 16}, probe, 0, older))

    rows = by_point(plan_rows(s, ResultsStore(tmp_path / "results", "est")))
    expected = estimate.adaptive_trials(s)
    assert expected >= estimate.ADAPTIVE_TRIALS_PER_SEED * 2  # per seed, and more where extra seeds run
    assert rows[("default", 16)].approximate
    assert (rows[("default", 16)].in_store, rows[("default", 16)].to_run) == (3, pytest.approx(expected - 3))
    assert (rows[("default", 32)].in_store, rows[("default", 32)].to_run) == (0, pytest.approx(expected))

    optuna = study(
        scale={"width": [16]},
        sweep={"lr": {"loguniform": [1e-4, 1e-2]}},
        search={"method": "optuna", "num_samples": 3},
    )
    (row,) = plan_rows(optuna, ResultsStore(tmp_path / "results", "none"))
    assert (row.planned, row.to_run, row.approximate) == (3, 3, False)


def _spec(s: Study, point: dict, params: dict, seed: int, config):
    from sweeper.study import PlannedTrial, trial_id

    return PlannedTrial(trial_id(config), "default", point, params, seed, config)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="trials run one at a time on one core")
def test_trials_side_by_side_are_estimated_slower_by_a_factor_measured_once(tmp_path, cache, monkeypatch):
    # 100,000 steps: long enough a study to be worth timing side by side; steps do not change the shape.
    monkeypatch.setattr(estimate, "SIDE_BY_SIDE_S", 0.3)  # shorter rounds: this test checks the wiring
    s = study(trainer={"steps": 100_000}, scale={"width": [16]}, sweep={"lr": {"values": [0.001, 0.002]}})
    store = ResultsStore(tmp_path / "results", "est")
    alone = estimate_study(s, store, max_concurrent=1)
    together = estimate_study(s, store, max_concurrent=2)
    (entry,) = json.loads((cache / estimate.CACHE_FILE).read_text())["side_by_side"].values()
    assert entry["processes"] == 2 and entry["step_s_together"] > 0
    assert together.side_by_side == (entry["factor"], entry["factor"]) and entry["factor"] >= 1
    assert together.side_by_side_measured
    overhead = estimate.RAY_TRIAL_OVERHEAD_S
    slower = (together.rows[0].per_trial_s - overhead) / (alone.rows[0].per_trial_s - overhead)
    assert slower == pytest.approx(entry["factor"])
    assert together.wall_s == pytest.approx(
        together.rows[0].per_trial_s + estimate.RAY_STARTUP_S
    )  # 2 trials, 2 at once

    monkeypatch.setattr(estimate, "measure_side_by_side", lambda *a: pytest.fail("measured again"))
    assert estimate_study(s, store, max_concurrent=2).side_by_side == together.side_by_side


def test_concurrency_is_what_ray_fits_capped_by_max_concurrent():
    one_cpu = study(max_concurrent=None)
    assert concurrency(one_cpu, cores=4) == 4
    assert concurrency(one_cpu, max_concurrent=3, cores=4) == 3
    assert concurrency(study(max_concurrent=2), cores=4) == 2
    assert concurrency(study(max_concurrent=None, resources={"cpu": 2}), cores=4) == 2
    assert concurrency(study(max_concurrent=None, resources={"cpu": 3}), cores=2) == 1
    gpu = study(max_concurrent=None, resources={"cpu": 1, "gpu": 0.25})
    assert concurrency(gpu, cores=16, gpus=1) == 4
    assert concurrency(gpu, cores=2, gpus=1) == 2


def test_trials_that_cannot_run_here_give_a_reason_instead_of_an_estimate(tmp_path):
    store = ResultsStore(tmp_path / "results", "est")
    with pytest.raises(StudyError, match="no such file"):  # refused by validation, before any estimate
        study(trainer={"corpus": str(tmp_path / "no-such-corpus.txt")}, scale={"width": [16]})
    hidden = study(trainer={"device": "cuda"}, scale={"width": [16]})
    with pytest.raises(EstimateUnavailable, match="no GPU"):
        estimate_study(hidden, store)
    if not torch.cuda.is_available():
        gpu = study(scale={"width": [16]}, resources={"cpu": 1, "gpu": 1})
        with pytest.raises(EstimateUnavailable, match="no CUDA GPU"):
            estimate_study(gpu, store)


def test_durations_read_like_a_person_would_say_them():
    assert [format_duration(s) for s in (9.4, 75, 14 * 60 + 10, 3599, 2 * 3600 + 5 * 60)] == [
        "9 s",
        "1 min 15 s",
        "14 min",
        "1 h",
        "2 h 5 min",
    ]


def write(tmp_path: Path, **spec) -> Path:
    data = {"name": "tiny", "trainer": dict(TINY), "wandb": {"mode": "disabled"}, **spec}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def dry_run(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SWEEPER, "run", str(path), "--dry-run", "--results", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dry_run_prints_the_time_per_trial_and_the_study_wall_time(tmp_path, cache):
    path = write(tmp_path, scale={"width": [16, 32]}, sweep={"lr": {"values": [0.001, 0.002]}})
    first = dry_run(path, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "measuring step time of 2 shapes" in first.stderr
    assert "est. per trial" in first.stdout and "est. time" in first.stdout
    (line,) = [x for x in first.stdout.splitlines() if x.startswith("estimated wall time: about ")]
    at_once = min(os.cpu_count() or 1, 4)
    assert cpu_name() in line and "fp32" in line and f"{at_once} trial" in line
    assert line.endswith(f"measured {datetime.date.today().isoformat()}")
    if at_once > 1:  # a study this short is not worth timing trials side by side
        assert "side-by-side slowdown not measured" in line
    assert not (tmp_path / "results").exists()

    second = dry_run(path, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "measuring" not in second.stderr
    assert line in second.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_dry_run_without_a_measurement_prints_the_plan_and_why(tmp_path):
    path = write(tmp_path, trainer={**TINY, "device": "cuda"}, scale={"width": [16]})
    proc = dry_run(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "plan" in proc.stdout and "est. per trial" not in proc.stdout
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("no time estimate: ")]
    assert "GPU" in line
