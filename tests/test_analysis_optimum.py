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
