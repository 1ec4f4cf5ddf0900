"""Search strategies on synthetic objectives whose optimum is known (no Ray, no training)."""

from __future__ import annotations

import math

import pytest

from sweeper.search import (
    FINISHED,
    WAIT,
    AdaptiveStrategy,
    GridStrategy,
    LineSearch,
    OptunaStrategy,
    Stored,
    predict_start,
)
from sweeper.study import Study


def make_study(search: dict, widths=(64, 128, 256, 512), seeds=(0,), lo=-14, hi=-4) -> Study:
    return Study.from_dict(
        {
            "name": "synthetic",
            "trainer": {"head_dim": 16},
            "variants": {"sp": {}, "mup": {"parameterization": "mup", "base_width": 64}},
            "scale": {"width": list(widths)},
            "sweep": {"lr": {"log2_grid": [lo, hi]}},
            "seeds": list(seeds),
            "search": search,
        }
    )


def bowl(spec) -> float:
    """SP's optimum falls an octave per doubling of width (from 2^-6 at width 64); muP's stays at 2^-8."""
    width, lr = spec.config.width, spec.config.lr
    centre = -6.0 - math.log2(width / 64) if spec.variant == "sp" else -8.0
    return 3.0 + 0.05 * (math.log2(lr) - centre) ** 2 + 0.001 * spec.seed


def drive(strategy, objective=bowl, batch: int = 3) -> list:
    """Run a strategy to the end with `batch` trials in flight, as Tune would."""
    ran, in_flight = [], []
    for _ in range(10_000):
        while len(in_flight) < batch:
            spec = strategy.next()
            if spec is FINISHED or spec is WAIT:
                break
            in_flight.append(spec)
        if not in_flight:
            assert strategy.next() is FINISHED
            return ran
        spec = in_flight.pop(0)
        ran.append(spec)
        strategy.observe(spec, objective(spec))
    raise AssertionError("strategy never finished")


def best_lr(trials, variant: str, width: int) -> float:
    group = [t for t in trials if t.variant == variant and t.config.width == width]
    return min(group, key=bowl).config.lr


def test_adaptive_lands_on_the_grid_optimum_with_fewer_trials():
    grid_study = make_study({"method": "grid"})
    grid_trials = drive(GridStrategy(grid_study.grid_trials(), set()))
    # The line search alone: extra seeds (tests/test_noise.py) add trials where the basin is within noise.
    adaptive = AdaptiveStrategy(make_study({"method": "adaptive", "extra_seeds": 0}), Stored())
    adaptive_trials = drive(adaptive)
    assert len(grid_trials) == 2 * 4 * 11
    assert len(adaptive_trials) < 0.6 * len(grid_trials)  # and at quarter-octave resolution, not one octave
    assert adaptive.trials_used == len(adaptive_trials)
    for variant in ("sp", "mup"):
        for width in (64, 128, 256, 512):
            grid_best = math.log2(best_lr(grid_trials, variant, width))
            found = math.log2(best_lr(adaptive_trials, variant, width))
            assert abs(found - grid_best) <= 0.25, (variant, width)
    optima = adaptive.optima()
    assert [k for _, k in optima["mup"]] == pytest.approx([-8.0] * 4)
    assert [k for _, k in optima["sp"]] == pytest.approx([-6.0, -7.0, -8.0, -9.0])


def test_adaptive_starts_wider_points_at_the_predicted_optimum():
    adaptive = AdaptiveStrategy(make_study({"method": "adaptive"}), Stored())
    trials = drive(adaptive)
    sp_512 = [t for t in trials if t.variant == "sp" and t.config.width == 512]
    assert math.log2(sp_512[0].config.lr) == pytest.approx(-9.0)  # extrapolated, not the grid centre (-9 too)
    sp_256 = [t for t in trials if t.variant == "sp" and t.config.width == 256]
    assert math.log2(sp_256[0].config.lr) == pytest.approx(-8.0)
    assert len({t.config.lr for t in sp_256}) <= 6  # 3 coarse + refinements: the prediction was right


def test_adaptive_reuses_stored_trials_and_flags_nothing_new_when_done():
    study = make_study({"method": "adaptive"}, widths=(64, 128))
    first = drive(AdaptiveStrategy(study, Stored()))
    stored = Stored(losses={t.trial_id: bowl(t) for t in first})
    again = drive(AdaptiveStrategy(study, stored))
    assert again == []


def test_line_search_walks_out_of_an_edge_and_stops_at_the_grid_end():
    search = LineSearch(start=-10, lo=-14, hi=-4)
    loss = lambda k: (k + 5.2) ** 2  # noqa: E731 - optimum near the top of the grid
    for _ in range(50):
        wanted = search.wanted()
        if not wanted:
            break
        for k in wanted:
            search.evaluated[k] = loss(k)
    assert search.done and search.best() == pytest.approx(-5.25)
    edge = LineSearch(start=-5, lo=-14, hi=-4)
    for _ in range(50):
        wanted = edge.wanted()
        if not wanted:
            break
        for k in wanted:
            edge.evaluated[k] = -k  # keeps improving upward: unbracketed at the top of the grid
    assert edge.done and max(edge.evaluated) == -4


def test_diverged_points_count_as_too_high():
    search = LineSearch(start=-8, lo=-14, hi=-4)
    for _ in range(50):
        wanted = search.wanted()
        if not wanted:
            break
        for k in wanted:
            search.evaluated[k] = math.inf if k >= -7 else (k + 7) ** 2
    assert search.best() <= -7.25


def test_predict_start_extrapolates_a_power_law():
    assert predict_start([], -14, -4) == -9
    assert predict_start([(6, -6.0)], -14, -4) == -6
    assert predict_start([(6, -6.0), (7, -7.0)], -14, -4) == -8
    assert predict_start([(6, -6.0), (7, -7.0)], -7, -4) == -7  # clamped into the grid


def test_optuna_runs_num_samples_per_point_each_over_all_seeds_and_resumes():
    study = make_study({"method": "optuna", "num_samples": 5, "seed": 3}, widths=(64, 128), seeds=(0, 1))
    first = drive(OptunaStrategy(study, Stored()))
    assert len(first) == 2 * 2 * 5 * 2
    per_setting = {}
    for t in first:
        per_setting.setdefault((t.variant, t.config.width, t.config.lr), set()).add(t.seed)
    assert all(seeds == {0, 1} for seeds in per_setting.values()) and len(per_setting) == 20
    settings = {}
    for t in first:
        settings.setdefault((t.variant, (("width", t.config.width),)), []).append({"lr": t.config.lr})
    stored = Stored(
        losses={t.trial_id: bowl(t) for t in first},
        settings={k: [dict(s) for s in {tuple(d.items()) for d in v}] for k, v in settings.items()},
    )
    assert drive(OptunaStrategy(study, stored)) == []
    more = make_study({"method": "optuna", "num_samples": 6, "seed": 3}, widths=(64, 128), seeds=(0, 1))
    before = set(stored.losses)
    extra = drive(OptunaStrategy(more, stored))
    assert len(extra) == 2 * 2 * 1 * 2
    assert not {t.trial_id for t in extra} & before


def test_grid_skips_stored_trials():
    study = make_study({"method": "grid"}, widths=(64,))
    trials = study.grid_trials()
    done = {t.trial_id for t in trials[:5]}
    ran = drive(GridStrategy(trials, done))
    assert len(ran) == len(trials) - 5 and not {t.trial_id for t in ran} & done


def test_optuna_never_hands_out_a_trial_twice_in_a_small_categorical_space():
    study = Study.from_dict(
        {
            "name": "cat",
            "trainer": {"head_dim": 16},
            "scale": {"width": [64]},
            "sweep": {"lr": {"values": [0.001, 0.002, 0.004]}},
            "search": {"method": "optuna", "num_samples": 6},
        }
    )
    ran = drive(OptunaStrategy(study, Stored()), batch=2)
    ids = [t.trial_id for t in ran]
    assert len(ids) == len(set(ids)) == 3
    assert {t.config.lr for t in ran} == {0.001, 0.002, 0.004}


def test_optuna_resume_finishes_settings_whose_seeds_were_cut_off():
    study = make_study({"method": "optuna", "num_samples": 3, "seed": 5}, widths=(64,), seeds=(0, 1))
    first = drive(OptunaStrategy(study, Stored()))
    kept = [t for t in first if not (t.seed == 1 and t.config.lr == first[0].config.lr)]  # one seed lost
    settings = {}
    for t in kept:
        settings.setdefault((t.variant, (("width", 64),)), [])
        if {"lr": t.config.lr} not in settings[(t.variant, (("width", 64),))]:
            settings[(t.variant, (("width", 64),))].append({"lr": t.config.lr})
    stored = Stored(losses={t.trial_id: bowl(t) for t in kept}, settings=settings)
    resumed = drive(OptunaStrategy(study, stored))
    missing = {t.trial_id for t in first} - {t.trial_id for t in kept}
    assert {t.trial_id for t in resumed} == missing


def test_variants_that_resolve_to_the_same_config_are_refused():
    from sweeper.study import StudyError

    with pytest.raises(StudyError, match="'sp' and 'sp_again' give identical trials"):
        Study.from_dict(
            {
                "name": "dup",
                "trainer": {"head_dim": 16},
                "variants": {
                    "sp": {"parameterization": "sp"},
                    "sp_again": {"weight_decay_mode": "coupled_scaled"},
                },
                "sweep": {"lr": {"values": [0.001]}},
            }
        )
