"""The live display tells what the store holds (on resume too), its clock ticks, and every search method
gets trials left and an ETA (no Ray here: the strategies, the forecast and the renderer directly)."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from sweeper.display import StudyDisplay
from sweeper.forecast import Forecast, StoredState, stored_state
from sweeper.record import StudyRecord
from sweeper.recorder import Progress, RunCounts
from sweeper.search import FINISHED, AdaptiveStrategy, GridStrategy, OptunaStrategy, Stored
from sweeper.store import ResultsStore, trial_row
from sweeper.study import Study, group_key
from sweeper.values import from_log2, number_text, value_text


def make_study(search: dict, widths=(32, 64, 128), seeds=(0,)) -> Study:
    return Study.from_dict(
        {
            "name": "live",
            "trainer": {"head_dim": 16, "steps": 100},
            "variants": {"sp": {}, "mup": {"parameterization": "mup", "base_width": 32}},
            "scale": {"width": list(widths)},
            "sweep": {"lr": {"log2_grid": [-10, -4]}},
            "seeds": list(seeds),
            "search": search,
        }
    )


def bowl(trial) -> float:
    return 3.0 + 0.05 * (math.log2(trial.config.lr) + 7.0) ** 2


def drive(strategy, until: int | None = None) -> list:
    """Hand out and observe trials one at a time; stop after `until` of them."""
    done = []
    while until is None or len(done) < until:
        trial = strategy.next()
        if trial is FINISHED:
            break
        strategy.observe(trial, bowl(trial))
        done.append(trial)
    return done


def text_of(renderable) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def store_with(tmp_path, study: Study, trials: list, seconds: float = 10.0) -> ResultsStore:
    store = ResultsStore(tmp_path / "results", study.name)
    store.write_study_record(StudyRecord.of_study(study, None))
    prints = study.variant_fingerprints()
    for i, trial in enumerate(trials):
        store.record(
            trial_row(
                trial_id=trial.trial_id,
                study=study.name,
                variant=trial.variant,
                seed=trial.seed,
                scale=trial.scale,
                params=trial.params,
                config=trial.config.model_dump(mode="json"),
                status="completed",
                objective=bowl(trial),
                summary={},
                started_at=1000.0 + 100 * i,
                finished_at=1000.0 + 100 * i + seconds * trial.config.width / 32,
                fingerprint=prints[trial.variant],
            ),
            [],
        )
    return store


def test_values_are_written_with_their_log2():
    assert value_text(2.0**-8) == "0.0039 (2^-8.0)"
    assert value_text(2.0**-7.25) == "0.0066 (2^-7.25)"
    assert from_log2(-7.853) == "0.0043 (2^-7.85)"
    assert value_text(32.0) == "32 (2^5.0)"
    assert value_text(64) == "64" and value_text("mup") == "mup" and value_text(0.0) == "0"
    assert (
        number_text(6.1e-5) == "0.000061"
        and number_text(3.1e-7) == "3.1e-07"
        and number_text(1234.5) == "1200"
    )


def test_a_resumed_adaptive_run_shows_what_the_store_holds(tmp_path):
    """The bug this guards: `already in store 0` and a best so far that ignored the stored trials."""
    study = make_study({"method": "adaptive", "extra_seeds": 0})
    first = drive(AdaptiveStrategy(study, Stored()), until=10)
    store = store_with(tmp_path, study, first)
    stored = stored_state(store, study, {t.trial_id for t in first})
    assert stored.total == 10
    best_first = min(first, key=bowl)
    key = (best_first.variant, group_key(best_first.scale))
    assert stored.best[key][1] == {"objective": bowl(best_first), "lr": best_first.config.lr}
    assert sum(stored.counts.values()) == 10 and stored.statuses == {"completed": 10}

    display = StudyDisplay(study, stored, approximate=True)
    shown = text_of(display.render(now=display.start + 5))
    assert "10 trials (10 stored)" in shown and "ETA after the first trials" in shown
    assert f"{bowl(best_first):.4f}" in shown and value_text(best_first.config.lr) in shown
    later = text_of(display.render(now=display.start + 65))
    assert "elapsed 0:05" in shown and "elapsed 1:05" in later  # the clock moves with no trial ending


def test_a_stored_trial_of_an_older_definition_is_not_counted(tmp_path):
    study = make_study({"method": "adaptive", "extra_seeds": 0})
    trials = drive(AdaptiveStrategy(study, Stored()), until=4)
    store = store_with(tmp_path, study, trials)
    changed = Study.from_dict({**study.model_dump(mode="json"), "trainer": {"head_dim": 16, "steps": 200}})
    store.write_study_record(StudyRecord.of_study(changed, None))
    assert (
        stored_state(ResultsStore(store.dir.parent, "live"), changed, {t.trial_id for t in trials}).total == 0
    )


def test_adaptive_unissued_counts_every_point_not_finished_and_learns_the_per_point_count():
    study = make_study({"method": "adaptive", "extra_seeds": 0})
    fresh = AdaptiveStrategy(study, Stored())
    from sweeper.estimate import adaptive_trials

    guess = adaptive_trials(study)
    assert fresh.unissued() == {
        (v, group_key({"width": w})): guess for v in ("sp", "mup") for w in (32, 64, 128)
    }
    full = drive(AdaptiveStrategy(study, Stored()))
    per_point = len(full) / 6
    strategy = AdaptiveStrategy(study, Stored())
    drive(strategy, until=len(full) // 2)
    left = strategy.unissued()
    finished_points = sum(s.point_index for s in strategy.state.values())
    assert finished_points >= 1
    assert all(v >= 0 for v in left.values())
    assert sum(left.values()) == pytest.approx(len(full) - len(full) // 2, rel=0.5)
    untouched = [k for k in left if k[1] == group_key({"width": 128})]
    assert all(left[k] == pytest.approx(per_point, rel=0.5) for k in untouched)
    drive(strategy)
    assert sum(strategy.unissued().values()) == 0


def test_grid_and_optuna_unissued_count_down_to_nothing():
    grid_study = make_study({"method": "grid"})
    grid = GridStrategy(grid_study.grid_trials(), set())
    assert sum(grid.unissued().values()) == grid_study.trial_count()
    drive(grid, until=5)
    assert sum(grid.unissued().values()) == grid_study.trial_count() - 5
    optuna_study = make_study({"method": "optuna", "num_samples": 3}, seeds=(0, 1))
    optuna = OptunaStrategy(optuna_study, Stored())
    assert sum(optuna.unissued().values()) == 2 * 3 * 3 * 2
    drive(optuna)
    assert sum(optuna.unissued().values()) == 0


def test_the_eta_is_the_work_left_at_each_shape_over_the_trials_at_once():
    """Measured 10 s a trial at width 32 and 20 s at width 64; width 128 is scaled from 64 by the cost
    proxy (4x the matmul work per token); two trials at a time."""
    study = make_study({"method": "grid"}, widths=(32, 64, 128))
    grid = GridStrategy(study.grid_trials(), set())
    stored = StoredState(
        seconds={
            ("sp", group_key({"width": 32})): [10.0],
            ("sp", group_key({"width": 64})): [18.0, 20.0, 22.0],
        }
    )
    forecast = Forecast(study, grid, stored, concurrency=2)
    assert forecast.trial_seconds(("sp", group_key({"width": 64}))) == 20.0
    at_128 = forecast.trial_seconds(("sp", group_key({"width": 128})))
    assert 3.0 * 20.0 < at_128 < 4.5 * 20.0
    assert forecast.trial_seconds(("mup", group_key({"width": 64}))) == pytest.approx(20.0)
    left, eta = forecast.left(now=0.0)
    per_width = len(study.sweep["lr"].grid()) * 2  # two variants
    assert left == 3 * per_width
    expected = per_width * (forecast.trial_seconds(("sp", group_key({"width": 32}))) + 20.0 + at_128) / 2
    assert eta == pytest.approx(expected)
    nothing = Forecast(study, GridStrategy(study.grid_trials(), set()), StoredState(), concurrency=2)
    assert nothing.left(now=0.0)[1] is None  # no trial measured yet: no ETA


def test_the_display_counts_down_between_events_and_sorts_points_as_numbers():
    study = make_study({"method": "grid"}, widths=(32, 128))
    stored = StoredState(
        counts={("sp", group_key({"width": 128})): 3},
        best={("sp", group_key({"width": 128})): (3.1, {"objective": 3.1, "lr": 2.0**-8})},
        statuses={"completed": 2, "diverged": 1},
    )
    display = StudyDisplay(study, stored)
    best = {("sp", group_key({"width": 32})): (3.2, {"objective": 3.2, "lr": 2.0**-7})}
    display.progress = Progress(
        counts=RunCounts(completed=1, running=2),
        best=best,
        done_by_group={("sp", group_key({"width": 32})): 1},
        left=5,
        eta_s=100.0,
        at=display.start + 10,
    )
    shown = text_of(display.render(now=display.start + 40))
    assert "4/9 trials (3 stored)" in shown  # 3 stored + 1 this run, and 5 left (the running ones in them)
    assert "running 2" in shown and "diverged 1" in shown
    assert "ETA 1:10" in shown and "elapsed 0:40" in shown
    assert shown.index("width=32") < shown.index("width=128")
    assert "lr=0.0078 (2^-7.0)" in shown and "lr=0.0039 (2^-8.0)" in shown


def test_a_point_with_stored_trials_but_none_completed_is_listed():
    study = make_study({"method": "grid"}, widths=(32, 64))
    stored = StoredState(counts={("sp", group_key({"width": 64})): 4}, statuses={"diverged": 4})
    shown = text_of(StudyDisplay(study, stored).render())
    row = next(line for line in shown.splitlines() if "width=64" in line)
    assert " 4 " in row and "none completed yet" in row
