"""`sweeper verify`, `best --width` and `report` on a synthetic store whose answer is known."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.store import ResultsStore

SWEEPER = [sys.executable, "-m", "sweeper.cli"]
WIDTHS = (64, 128, 256, 512)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """SP's optimum falls an octave per doubling of width; muP's stays at 2^-7 and ends lower."""
    root = tmp_path_factory.mktemp("verify") / "results"
    store = ResultsStore(root, "synthetic")
    store.dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, curves = [], []
    for variant, alpha, floor in (("sp", -1.0, 2.0), ("mup", 0.0, 1.95)):
        for w in WIDTHS:
            centre = -6.0 + alpha * math.log2(w / 64)
            for k in np.arange(-13.0, -3.5, 1.0):
                for seed in (0, 1, 2):
                    lr = 2.0**k
                    tid = f"{variant}-{w}-{k}-{seed}"
                    diverged = k >= -4 and variant == "sp" and w >= 256
                    loss = floor - 0.05 * math.log2(w / 64) + 0.04 * (k - centre) ** 2 + rng.normal(0, 0.003)
                    rows.append(
                        {
                            "trial_id": tid,
                            "study": "synthetic",
                            "variant": variant,
                            "width": w,
                            "lr": lr,
                            "seed": seed,
                            "status": "diverged" if diverged else "completed",
                            "objective": None if diverged else loss,
                            "scale_point": f"width={w}",
                            "swept": json.dumps({"lr": lr}),
                        }
                    )
                    steps = np.arange(0, 301, 50)
                    curves.append(
                        pd.DataFrame(
                            {
                                "trial_id": tid,
                                "step": steps,
                                "tokens": steps * 1024,
                                "val_loss": 5.5 - (5.5 - loss) * (1 - np.exp(-steps / 80)),
                            }
                        )
                    )
    pd.DataFrame(rows).to_parquet(store.trials_path, index=False)
    store.curves_dir.mkdir()
    for frame in curves:
        frame.to_parquet(store.curves_dir / f"{frame['trial_id'].iloc[0]}.parquet", index=False)
    store.write_study_record(
        {
            "name": "synthetic",
            "description": "known answer",
            "scale_keys": ["width"],
            "swept_keys": ["lr"],
            "objective": {"metric": "val_loss", "mode": "min", "use": "final"},
            "search": {"method": "grid"},
            "planned": len(rows),
            "variants": ["sp", "mup"],
            "spec": {"wandb": {"mode": "disabled"}},
        }
    )
    return root


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SWEEPER, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_verify_json_gives_the_verdicts(results):
    proc = run("verify", "--study", "synthetic", "--json", cwd=results.parent)
    assert proc.returncode == 0, proc.stderr
    rows = {r["variant"]: r for r in json.loads(proc.stdout)}
    assert rows["sp"]["verdict"] == "shifts" and rows["mup"]["verdict"] == "transfers"
    assert rows["sp"]["alpha_ci"][0] <= -1.0 <= rows["sp"]["alpha_ci"][1]
    assert rows["mup"]["alpha_ci"][0] <= 0.0 <= rows["mup"]["alpha_ci"][1]
    assert rows["sp"]["drift_octaves"] == pytest.approx(-3.0, abs=0.3)
    assert rows["sp"]["regret_rel"] > 0.05 and rows["mup"]["regret_rel"] < 0.01
    for key in ("axis", "hparam", "regret_abs", "bracketed_all", "reasons"):
        assert key in rows["sp"]
    human = run("verify", "--study", "synthetic", cwd=results.parent)
    assert "shifts" in human.stdout and "transfers" in human.stdout


def test_best_gives_the_interval_of_each_optimum_and_the_seed_noise(results):
    proc = run("best", "--study", "synthetic", "--json", cwd=results.parent)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 2 * len(WIDTHS)
    for row in rows:
        centre = -6.0 - math.log2(row["width"] / 64) if row["variant"] == "sp" else -6.0
        lo, hi = row["optimum_interval"]["lr"]
        assert lo <= row["refined"]["lr"] <= hi and math.log2(hi / lo) < 0.5  # a sharp basin, little noise
        assert math.log2(lo * hi) / 2 == pytest.approx(centre, abs=0.1)
        assert row["noise_sd"] == pytest.approx(0.003, rel=0.3) and row["seeds_at_best"] == 3
        assert row["within_noise"] == [row["best"]]
    human = run("best", "--study", "synthetic", cwd=results.parent)
    # One way to write a value: the interval as values with their log2 beside them.
    assert "90% interval" in human.stdout and re.search(r"lr 0\.0\d+ \(2\^-6\.\d+\) \.\. ", human.stdout)
    assert "best only" in human.stdout
    verified = {
        r["variant"]: r
        for r in json.loads(run("verify", "--study", "synthetic", "--json", cwd=results.parent).stdout)
    }
    assert verified["sp"]["noise_limited"] is False and verified["sp"]["noise_sd"] == pytest.approx(
        0.003, rel=0.3
    )


def test_best_extrapolates_to_a_target_width(results):
    proc = run("best", "--study", "synthetic", "--width", "4096", "--json", cwd=results.parent)
    assert proc.returncode == 0, proc.stderr
    rows = {r["variant"]: r for r in json.loads(proc.stdout)}
    assert math.log2(rows["sp"]["value"]) == pytest.approx(-12.0, abs=0.5)
    lo, hi = rows["sp"]["interval"]
    assert lo < rows["sp"]["value"] < hi
    assert math.log2(rows["mup"]["value"]) == pytest.approx(-6.0, abs=0.5)
    bad = run("best", "--study", "synthetic", "--depth", "8", cwd=results.parent)
    assert bad.returncode == 2 and "not a scale axis" in bad.stderr


def test_verify_rejects_an_unknown_axis(results):
    proc = run("verify", "--study", "synthetic", "--axis", "depth", cwd=results.parent)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_report_writes_figures_and_markdown(results, tmp_path):
    out = tmp_path / "report"
    proc = run("report", "--study", "synthetic", "--out", str(out), cwd=results.parent)
    assert proc.returncode == 0, proc.stderr
    text = (out / "report.md").read_text()
    assert "**shifts**" in text and "**transfers**" in text and "## Variants against sp" in text
    for figure in ("loss_vs_lr.png", "optimum_vs_scale.png", "best_curves.png", "best_loss_vs_scale.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG", figure
        assert f"({figure})" in text
    assert json.loads((out / "verify.json").read_text())[0]["variant"] == "sp"


def test_report_logs_its_tables_and_figures_to_wandb_when_the_study_uses_it(results, tmp_path):
    import shutil

    from wandb_reader import read_run

    copy = tmp_path / "results"
    shutil.copytree(results / "synthetic", copy / "synthetic")
    spec_path = copy / "synthetic" / "study.json"
    spec = json.loads(spec_path.read_text())
    spec["spec"]["wandb"] = {"mode": "offline", "project": "sweeper-test"}
    spec_path.write_text(json.dumps(spec))
    proc = run("report", "--study", "synthetic", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (copy / "synthetic" / "wandb").glob("offline-run-*")
    recorded = read_run(run_dir)
    assert recorded["run"].run_group == "synthetic" and recorded["run"].job_type == "study"
    assert list((run_dir / "files" / "media").rglob("*.png"))


BARE_POWER = re.compile(r"(?<!\()2\^-?\d")  # a power of two written without its value before it
VALUE_WITH_LOG2 = re.compile(r"\d \(2\^-?\d+\.\d+\)")


def test_a_value_is_written_one_way_in_best_verify_report_and_extrapolation(results, tmp_path):
    """muP's best lr at width 64 is the grid's 2^-6: `0.016 (2^-6.0)` in best and report.md; verify's
    per-width optima and best's extrapolation read the same way; no output writes a bare 2^k or 0.015625."""
    best = run("best", "--study", "synthetic", cwd=results.parent).stdout
    verify = run("verify", "--study", "synthetic", cwd=results.parent).stdout
    target = run("best", "--study", "synthetic", "--width", "1024", cwd=results.parent).stdout
    run("report", "--study", "synthetic", "--out", str(tmp_path / "r"), "--no-wandb", cwd=results.parent)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "lr=0.016 (2^-6.0)" in best and "lr=0.016 (2^-6.0)" in report
    for text in (best, verify, target, report):
        assert VALUE_WITH_LOG2.search(text), text[:2000]
        assert not BARE_POWER.search(text), BARE_POWER.search(text)
        assert "0.015625" not in text and "0.01562" not in text


def test_no_report_figure_has_overlapping_tick_labels(results, tmp_path, monkeypatch):
    """Every figure is checked as saved (`plots.untangle_ticks`): crowded labels are turned or thinned."""
    from sweeper import plots
    from sweeper.report import build_report

    left, save = [], plots._save

    def checked(fig, path):
        saved = save(fig, path)
        left.extend(f"{Path(path).name}: {o}" for o in plots.tick_overlaps(fig))
        return saved

    monkeypatch.setattr(plots, "_save", checked)
    build_report(ResultsStore(results, "synthetic"), tmp_path / "r", axis="width")
    assert len(list((tmp_path / "r").glob("*.png"))) >= 4 and left == []


def test_crowded_tick_labels_are_untangled():
    from sweeper import plots

    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(range(20), range(20))
    ax.set_xticks(range(20), [f"{100000 * i:,}" for i in range(20)])
    assert plots.tick_overlaps(fig)
    plots.untangle_ticks(fig)
    assert plots.tick_overlaps(fig) == []
    assert any(t.get_visible() for t in ax.get_xticklabels())
    plt.close(fig)
