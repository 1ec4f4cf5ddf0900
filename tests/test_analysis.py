"""Optima from trial tables whose answer is known."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from sweeper.analysis import optimum_table, parabola_vertex, seed_means

SPEC = {"scale_keys": ["width"], "swept_keys": ["lr"], "objective": {"mode": "min"}}


def table(rows: list[tuple]) -> pd.DataFrame:
    """rows: (variant, width, log2 lr, seed, status, objective)."""
    return pd.DataFrame(
        [
            {
                "trial_id": f"{v}{w}{k}{s}",
                "variant": v,
                "width": w,
                "scale_point": f"width={w}",
                "seed": s,
                "swept": json.dumps({"lr": 2.0**k}),
                "lr": 2.0**k,
                "status": st,
                "objective": o,
            }
            for v, w, k, s, st, o in rows
        ]
    )


def bowl(width: int, centre: float, ks=range(-10, -3), seeds=(0, 1)) -> list[tuple]:
    return [
        ("sp", width, k, s, "completed", 2.0 + 0.1 * (k - centre) ** 2 + 0.001 * s) for k in ks for s in seeds
    ]


def test_optimum_per_point_with_refinement_and_bracketing():
    rows = optimum_table(table(bowl(64, -6.3) + bowl(128, -9.9)), SPEC)
    assert [r["width"] for r in rows] == [64, 128]
    first, second = rows
    assert first["best"] == {"lr": 2.0**-6} and first["bracketed"] is True
    assert math.log2(first["refined"]["lr"]) == pytest.approx(-6.3, abs=1e-6)  # exact for a parabola
    assert first["n_trials"] == 14 and first["objective"] == pytest.approx(2.0 + 0.1 * 0.09 + 0.0005)
    assert second["best"] == {"lr": 2.0**-10} and second["bracketed"] is False and second["refined"] is None


def test_diverged_seeds_make_a_setting_too_high_and_are_not_dropped():
    rows = bowl(64, -6.0)
    rows = [r if r[2] != -6 or r[3] != 1 else ("sp", 64, -6, 1, "diverged", None) for r in rows]
    means = seed_means(table(rows))
    at_optimum = means[means["swept"] == json.dumps({"lr": 2.0**-6})].iloc[0]
    assert math.isinf(at_optimum["loss"]) and at_optimum["n_diverged"] == 1
    best = optimum_table(table(rows), SPEC)[0]["best"]
    assert best in ({"lr": 2.0**-5}, {"lr": 2.0**-7})


def test_stopped_and_failed_trials_are_left_out():
    rows = [*bowl(64, -6.0), ("sp", 64, -6.5, 0, "stopped", 0.1), ("sp", 64, -6.5, 1, "failed", None)]
    assert optimum_table(table(rows), SPEC)[0]["best"] == {"lr": 2.0**-6}


def test_parabola_vertex_rejects_a_cap_and_an_outside_vertex():
    assert parabola_vertex([0, 1, 2], [1.0, 0.0, 1.0]) == pytest.approx(1.0)
    assert parabola_vertex([0, 1, 2], [0.0, 1.0, 0.0]) is None
    assert parabola_vertex([0, 1, 2], [3.0, 2.0, 1.5]) is None


# --- optimum versus scale -----------------------------------------------------------------------------

import numpy as np  # noqa: E402

from sweeper.analysis import interpolate, transfer_fit, verdict, verify_rows  # noqa: E402

WIDTHS = (64, 128, 256, 512, 1024)


def scaling_table(
    alpha: float,
    seeds=(0, 1, 2),
    noise: float = 0.004,
    ks=np.arange(-16, -1.5, 0.5),
    variant: str = "v",
    curvature: float = 0.05,
) -> pd.DataFrame:
    """A bowl in log2(lr) whose minimum sits at -6 + alpha * log2(width / 64)."""
    rng = np.random.default_rng(1)
    rows = []
    for w in WIDTHS:
        centre = -6.0 + alpha * math.log2(w / 64)
        for k in ks:
            for s in seeds:
                rows.append(
                    (
                        variant,
                        w,
                        float(k),
                        s,
                        "completed",
                        2.0 + curvature * (k - centre) ** 2 + rng.normal(0, noise),
                    )
                )
    return table(rows)


def test_a_bowl_moving_as_inverse_width_gives_alpha_minus_one_and_shifts():
    fit = transfer_fit(scaling_table(-1.0), "v", "width", "lr")
    lo, hi = fit.alpha_ci
    assert lo <= -1.0 <= hi and hi - lo < 0.3
    assert fit.alpha == pytest.approx(-1.0, abs=0.1)
    assert fit.drift_octaves == pytest.approx(-4.0, abs=0.3)
    assert fit.regret_rel > 0.1  # the small model's LR is 16x too high at width 1024
    name, reasons = verdict(fit)
    assert name == "shifts" and "outside" in reasons[0]
    centre, (plo, phi) = fit.predict(4096)
    assert centre == pytest.approx(-12.0, abs=0.5) and plo < centre < phi


def test_a_fixed_bowl_gives_alpha_zero_and_transfers():
    fit = transfer_fit(scaling_table(0.0), "v", "width", "lr")
    lo, hi = fit.alpha_ci
    assert lo <= 0.0 <= hi and lo > -0.25 and hi < 0.25
    assert abs(fit.drift_octaves) < 0.3 and fit.regret_rel < 0.01
    assert fit.bracketed_all and fit.fit_rms < 0.2
    assert verdict(fit)[0] == "transfers"


def test_an_unbracketed_optimum_is_flagged_and_never_called_a_transfer():
    narrow = scaling_table(0.0, ks=np.arange(-10, -5.5, 0.5))  # optimum -6 sits at the top edge
    fit = transfer_fit(narrow, "v", "width", "lr")
    assert not fit.bracketed_all
    name, reasons = verdict(fit)
    assert name == "inconclusive"
    assert any("not bracketed" in r and "extend the grid upward" in r for r in reasons)


def test_noise_wider_than_the_tolerance_is_inconclusive():
    fit = transfer_fit(scaling_table(0.0, noise=0.08, seeds=(0, 1), curvature=0.01), "v", "width", "lr")
    assert verdict(fit)[0] == "inconclusive"


def test_single_seed_uses_a_residual_bootstrap():
    fit = transfer_fit(scaling_table(-1.0, seeds=(0,)), "v", "width", "lr")
    assert fit.alpha_ci[0] <= fit.alpha <= fit.alpha_ci[1]
    assert verdict(fit)[0] == "shifts"


def test_penalties_basin_and_interpolation():
    fit = transfer_fit(scaling_table(0.0, noise=0.0), "v", "width", "lr")
    assert fit.penalty_2x[0] == pytest.approx(0.05, abs=0.01)  # one octave off: curvature x 1^2
    assert fit.penalty_4x[0] == pytest.approx(0.2, abs=0.02)
    assert fit.basin_width[0] == pytest.approx(1.0, abs=0.6)  # within 1% of 2.0: |k - c| <= 0.63
    curve = {-2.0: 1.0, 0.0: 3.0, 2.0: math.inf}
    assert interpolate(curve, -1.0) == pytest.approx(2.0)
    assert interpolate(curve, 1.0) == math.inf  # towards a diverged point: counted as diverged
    assert interpolate(curve, -3.0) == 1.0  # past a finite end: the edge value


def test_verify_rows_have_the_documented_keys():
    both = pd.concat([scaling_table(-1.0, variant="sp"), scaling_table(0.0, variant="mup")])
    rows = verify_rows(both, SPEC, samples=200)
    assert [r["variant"] for r in rows] == ["sp", "mup"]
    for row in rows:
        assert {
            "variant",
            "axis",
            "hparam",
            "alpha",
            "alpha_ci",
            "drift_octaves",
            "regret_abs",
            "regret_rel",
            "bracketed_all",
            "verdict",
            "reasons",
        } <= set(row)
        assert isinstance(row["reasons"], list) and len(row["alpha_ci"]) == 2
    assert [r["verdict"] for r in rows] == ["shifts", "transfers"]


def test_divergence_below_a_completed_higher_value_is_flagged():
    rows = bowl(64, -6.0)
    rows = [r if r[2] != -8 else ("sp", 64, -8, r[3], "diverged", None) for r in rows]
    fit = transfer_fit(table(rows), "sp", "width", "lr", samples=10)
    assert any("diverged while the higher" in n for n in fit.notes)
    assert any("diverged while the higher" in r for r in verdict(fit)[1])


def test_every_reader_is_total_on_a_table_with_nothing_finished():
    from sweeper.analysis import extrapolation_rows, verify_rows

    empty = pd.DataFrame({"trial_id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
    failed = table([("sp", 64, -6, 0, "failed", None), ("sp", 128, -6, 0, "failed", None)])
    for frame in (empty, failed):
        assert optimum_table(frame, SPEC) == []
        assert verify_rows(frame, SPEC, axis="width") == []
        assert extrapolation_rows(frame, SPEC, "width", 4096.0) == []


def test_a_scale_point_where_every_setting_diverged_has_no_best_and_no_drift():
    from sweeper.analysis import verify_rows

    diverged = [("sp", 256, k, s, "diverged", None) for k in range(-10, -3) for s in (0, 1)]
    frame = table(bowl(64, -6.0) + bowl(128, -6.0) + diverged)
    rows = {r["width"]: r for r in optimum_table(frame, SPEC)}
    assert rows[64]["best"] == {"lr": 2.0**-6} and rows[64]["all_diverged"] is False
    top = rows[256]
    assert top["best"] is None and top["objective"] is None and top["refined"] is None
    assert top["bracketed"] is False and top["all_diverged"] is True and top["optimum_interval"] is None
    (row,) = verify_rows(frame, SPEC, axis="width", samples=50)
    assert row["drift_octaves"] is None and row["regret_rel"] is None
    assert row["optimum_log2"][-1] is None and row["all_diverged"] == [False, False, True]
    assert any("diverged: no optimum there" in reason for reason in row["reasons"])


def test_two_swept_keys_each_get_their_optimum_profiled_over_the_other():
    """lr's optimum falls half an octave per doubling, weight decay's rises an octave; with a cross term
    in the bowl, each key's optimum is where the loss, minimised over the other key, is lowest."""
    from sweeper.analysis import verify_rows

    rows = []
    for width in (64, 128, 256):
        lr_best, wd_best = -7 - 0.5 * math.log2(width / 64), -4 + math.log2(width / 64)
        for k in [x / 2 for x in range(-24, -7)]:
            for j in range(-10, 3):
                for seed in (0, 1):
                    a, b = k - lr_best, j - wd_best
                    loss = 3.0 + 0.1 * a * a + 0.05 * b * b + 0.06 * a * b + 0.001 * seed
                    swept = {"lr": 2.0**k, "weight_decay": 2.0**j}
                    rows.append(
                        {
                            "trial_id": f"{width}-{k}-{j}-{seed}",
                            "variant": "mup",
                            "width": width,
                            "scale_point": f"width={width}",
                            "seed": seed,
                            "swept": json.dumps(swept, sort_keys=True),
                            **swept,
                            "status": "completed",
                            "objective": loss,
                        }
                    )
    spec = {"scale_keys": ["width"], "swept_keys": ["lr", "weight_decay"], "objective": {"mode": "min"}}
    verdicts = {row["hparam"]: row for row in verify_rows(pd.DataFrame(rows), spec, samples=50)}
    assert set(verdicts) == {"lr", "weight_decay"}
    assert verdicts["lr"]["alpha"] == pytest.approx(-0.5, abs=0.1)
    assert verdicts["weight_decay"]["alpha"] == pytest.approx(1.0, abs=0.1)
    assert verdicts["lr"]["verdict"] == verdicts["weight_decay"]["verdict"] == "shifts"


def test_a_shift_that_costs_nothing_is_not_claimed():
    """The argmin runs 3 octaves per doubling, but the loss at the larger widths is flat: the smallest
    width's value is as good there (regret far below 1%), so the verdict is inconclusive and says why."""
    from sweeper.analysis import transfer_fit, verdict

    rows = bowl(64, -6.0, ks=range(-14, -3), seeds=(0,))  # one seed, as a first sweep: no noise estimate
    for width, centre in ((128, -9.0), (256, -12.0)):
        rows += [("sp", width, k, 0, "completed", 2.0 + 1e-6 * (k - centre) ** 2) for k in range(-14, -3)]
    fit = transfer_fit(table(rows), "sp", "width", "lr", samples=50)
    assert fit.alpha == pytest.approx(-3.0, abs=0.1) and fit.regret_rel < 1e-4
    name, reasons = verdict(fit)
    assert name == "inconclusive"
    assert "costs only 0.00% at the largest (below 1%): the loss is flat around the optimum" in reasons[0]
