"""The joint law over several scale axes: exponents known in advance are recovered within their intervals,
from trial tables and from a real study over a synthetic trainer."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from sweeper.joint import joint_fit, with_joint_fits
from sweeper.record import StudyRecord

WIDTHS, TOKENS = (64, 128, 256, 512), (1e6, 2e6, 4e6, 8e6)


def law(width: float, tokens: float) -> float:
    """log2 lr* = -6 - (log2 width - 6) + 0.3 (log2 tokens - 20)."""
    return -6 - (math.log2(width) - 6) + 0.3 * (math.log2(tokens) - 20)


def trials(
    noise: float = 0.004, seeds=(0, 1, 2), corner_shift: float = 0.0, data_seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(data_seed)
    rows = []
    for width in WIDTHS:
        for tokens in TOKENS:
            centre = law(width, tokens) + (corner_shift if (width, tokens) == (512, 8e6) else 0.0)
            for k in np.arange(-12, -1, 0.5):
                for seed in seeds:
                    loss = 3.0 + 0.05 * (k - centre) ** 2 + rng.normal(0, noise)
                    rows.append(
                        {
                            "trial_id": f"{width}-{tokens}-{k}-{seed}",
                            "variant": "mup",
                            "width": width,
                            "tokens": tokens,
                            "scale_point": f"tokens={tokens}, width={width}",
                            "seed": seed,
                            "swept": json.dumps({"lr": 2.0**k}),
                            "lr": 2.0**k,
                            "status": "completed",
                            "objective": loss,
                        }
                    )
    return pd.DataFrame(rows)


def test_the_joint_exponents_are_recovered_within_their_intervals():
    fit = joint_fit(trials(noise=0.0), "mup", ["width", "tokens"], "lr", samples=50)
    assert fit.alphas == pytest.approx({"width": -1.0, "tokens": 0.3}, abs=1e-9)  # exact without noise
    assert fit.predict({"width": 4096, "tokens": 64e6}) == pytest.approx(law(4096, 64e6), abs=1e-9)
    covered = {"width": 0, "tokens": 0}
    for data_seed in range(10):  # the 90% intervals cover the true exponents about 9 times in 10
        fit = joint_fit(trials(data_seed=data_seed), "mup", ["width", "tokens"], "lr", samples=200)
        assert fit.alphas["width"] == pytest.approx(-1.0, abs=0.06)
        assert fit.alphas["tokens"] == pytest.approx(0.3, abs=0.06)
        for axis, true in (("width", -1.0), ("tokens", 0.3)):
            lo, hi = fit.alphas_ci[axis]
            covered[axis] += lo <= true <= hi
            assert hi - lo < 0.2
        assert fit.verdicts() == {"width": "shifts", "tokens": "shifts"}
        assert abs(fit.corner_error) < 0.3 and fit.fit_rms < 0.15
    assert min(covered.values()) >= 7, covered


def test_a_corner_off_the_law_shows_in_the_leave_one_corner_out_error():
    fit = joint_fit(trials(corner_shift=2.0), "mup", ["width", "tokens"], "lr", samples=50)
    assert fit.corner_error < -1.5  # the law from the other points predicts 2 octaves below the corner


def test_too_few_points_give_no_law_and_say_why():
    small = trials()
    small = small[(small["width"] == 64) | (small["tokens"] == 1e6)]  # an L: no point off both axes' base
    small = small[small["width"].isin([64, 128]) & small["tokens"].isin([1e6, 2e6])]
    fit = joint_fit(small, "mup", ["width", "tokens"], "lr", samples=20)
    assert fit.alphas is None and "do not determine 2 exponents" in fit.notes[0]
    assert fit.verdicts() == {"width": "inconclusive", "tokens": "inconclusive"}


def test_verify_rows_of_a_multi_axis_study_gain_the_joint_keys_and_keep_alpha():
    from sweeper.analysis import verify_rows

    record = StudyRecord.of(
        {"scale_keys": ["width", "tokens"], "swept_keys": ["lr"], "objective": {"mode": "min"}}
    )
    table = trials()
    rows = with_joint_fits(verify_rows(table, record, axis="width", samples=50), table, record, samples=50)
    assert len(rows) == len(TOKENS)  # one per tokens value, as before
    for row in rows:
        assert row["axes"] == ["width", "tokens"] and set(row["alphas"]) == {"width", "tokens"}
        assert row["alpha"] == pytest.approx(-1.0, abs=0.1)  # the one-axis exponent along --axis
    one_axis = StudyRecord.of({"scale_keys": ["width"], "swept_keys": ["lr"], "objective": {"mode": "min"}})
    plain = table[table["tokens"] == 1e6]
    assert "axes" not in with_joint_fits(verify_rows(plain, one_axis, samples=20), plain, one_axis)[0]


TRAINER = """
import math

def train(config, report):
    # The law of test_joint.law, plus seed noise: the optimum lr falls an octave per doubling of width
    # and rises 0.3 octaves per doubling of tokens.
    centre = -6 - (math.log2(config["width"]) - 6) + 0.3 * (math.log2(config["tokens"]) - 20)
    gap = math.log2(config["lr"]) - centre
    noise = ((config["seed"] * 7919 + int(config["lr"] * 1e9)) % 1000) / 1e6
    report({"step": 1, "val_loss": 3.0 + 0.05 * gap * gap + noise})
    return {"status": "completed"}
"""


@pytest.mark.slow
def test_verify_and_its_json_give_the_joint_law_of_a_real_study(tmp_path):
    (tmp_path / "law_trainer.py").write_text(textwrap.dedent(TRAINER))
    (tmp_path / "law.yaml").write_text(
        "name: law\ntrainer_entry: law_trainer:train\n"
        "scale: {width: [64, 128, 256], tokens: [1000000, 2000000, 4000000]}\n"
        "sweep: {lr: {log2_grid: [-11, -3]}}\nseeds: [0, 1]\nwandb: {mode: disabled}\n"
    )
    run = [sys.executable, "-m", "sweeper.cli"]
    done = subprocess.run(
        [*run, "run", "law.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    verify = subprocess.run(
        [*run, "verify", "--study", "law", "--json"], cwd=tmp_path, capture_output=True, text=True
    )
    rows = json.loads(verify.stdout)
    assert {tuple(r["axes"]) for r in rows} == {("width", "tokens")}
    alphas, ci = rows[0]["alphas"], rows[0]["alphas_ci"]
    assert alphas["width"] == pytest.approx(-1.0, abs=0.15) and alphas["tokens"] == pytest.approx(
        0.3, abs=0.15
    )
    assert ci["width"][0] <= -1.0 <= ci["width"][1] or abs(alphas["width"] + 1) < 0.1
    text = subprocess.run(
        [*run, "verify", "--study", "law"], cwd=tmp_path, capture_output=True, text=True
    ).stdout
    assert text.count("joint law over width x tokens:") == 1 and "shifts" in text

    best = [*run, "best", "--study", "law", "--width", "1024", "--tokens", "8e6"]
    out = subprocess.run([*best, "--json"], cwd=tmp_path, capture_output=True, text=True).stdout
    row = json.loads(out)[0]
    assert row["targets"] == {"width": 1024.0, "tokens": 8e6}
    assert row["axis"] == "width" and row["target"] == 1024
    assert math.log2(row["value"]) == pytest.approx(law(1024, 8e6), abs=0.3)
    lo, hi = row["interval"]
    assert lo < row["value"] < hi and row["warning"] is None
    far = subprocess.run([*best[:6], "--tokens", "1e9"], cwd=tmp_path, capture_output=True, text=True)
    assert "lr at width=256, tokens=1e+09" in far.stdout  # width left out: its largest measured value
    assert "warning: tokens=1e+09 is 250x beyond the measured 1e+06..4e+06" in far.stdout
    twice = [*best[:6], "--width", "64", "--width", "128"]
    bad = subprocess.run(twice, cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "--width given twice" in bad.stderr

    report = subprocess.run([*run, "report", "--study", "law"], cwd=tmp_path, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-2000:]
    out = tmp_path / "results" / "law" / "report"
    assert (out / "joint_optimum_default_lr.png").stat().st_size > 10_000
    assert (out / "joint_check.png").stat().st_size > 10_000


def test_a_study_with_an_axis_of_names_gets_no_joint_law():
    from sweeper.analysis import verify_rows

    table = trials()
    table["norm"] = np.where(table["tokens"] > 2e6, "rmsnorm", "layernorm")
    record = StudyRecord.of(
        {"scale_keys": ["width", "tokens", "norm"], "swept_keys": ["lr"], "objective": {"mode": "min"}}
    )
    rows = with_joint_fits(verify_rows(table, record, axis="width", samples=20), table, record, samples=20)
    assert rows and all("axes" not in row for row in rows)  # the one-axis rows, as before


def test_the_report_of_a_two_axis_study_draws_its_curves_per_value_of_the_other_axis(tmp_path):
    """Curves pooled over the horizons showed neither (and starred one horizon's optimum on the other's
    curve): along width, one loss-vs-lr figure per tokens value, titled with it; the joint figures once."""
    from sweeper.report import build_report
    from sweeper.store import ResultsStore

    store = ResultsStore(tmp_path / "results", "law")
    store.dir.mkdir(parents=True)
    table = trials(seeds=(0, 1))
    table = table[table["tokens"].isin(TOKENS[:2])]
    table.to_parquet(store.trials_path, index=False)
    store.write_study_record(
        {"name": "law", "scale_keys": ["width", "tokens"], "swept_keys": ["lr"], "objective": {"mode": "min"}}
    )
    report = build_report(store, tmp_path / "report", axis="width")
    made = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert "loss_vs_lr_tokens1000000.0.png" in made and "loss_vs_lr_tokens2000000.0.png" in made
    assert "loss_vs_lr.png" not in made and "joint_optimum_mup_lr.png" in made
    text = report.read_text()
    assert "### loss vs lr (tokens=1000000.0)" in text and "### loss vs lr (tokens=2000000.0)" in text
