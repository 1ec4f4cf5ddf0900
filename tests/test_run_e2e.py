"""`sweeper run` end to end: real Ray, real Parquet, real W&B offline, tiny trials."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from wandb_reader import read_run

from sweeper.local_ray import kill_leftover_ray, ray_temp_dir

SWEEPER = [sys.executable, "-m", "sweeper.cli"]
TRAINER = (
    "{depth: 1, head_dim: 16, seq_len: 32, batch_size: 8, steps: %d, eval_interval: %d, eval_batches: 1}"
)


def write_study(tmp_path: Path, name: str, body: str, steps: int = 12) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntrainer: {TRAINER % (steps, max(steps // 2, 1))}\n{body}")
    return path


def sweeper(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*SWEEPER, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def trials(tmp_path: Path, study: str) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "results" / study / "trials.parquet")


def ray_processes(tmp_path: Path, study: str) -> list[int]:
    marker = str(ray_temp_dir(tmp_path / "results" / study))
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


GRID = """variants:
  sp: {parameterization: sp}
  mup: {parameterization: mup, base_width: 32}
scale: {width: [32, 64]}
sweep: {lr: {log2_grid: [-9, -8]}}
wandb: {mode: offline, project: sweeper-test}
"""


def test_grid_study_runs_reruns_nothing_and_extends_only_new_cells(tmp_path):
    path = write_study(tmp_path, "grid", GRID)
    first = sweeper("run", str(path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    table = trials(tmp_path, "grid")
    assert len(table) == 2 * 2 * 2 and table["trial_id"].is_unique
    assert set(table["status"]) == {"completed"}
    assert {"variant", "width", "lr", "seed", "final_val_loss", "config", "code_version", "host"} <= set(
        table.columns
    )
    at_base = table[table["width"] == 32].groupby("lr")["objective"].nunique()
    assert (at_base == 1).all()  # SP and muP are the same model at the base width
    curves = pd.read_parquet(tmp_path / "results" / "grid" / "curves")
    assert set(curves["trial_id"]) == set(table["trial_id"]) and {"step", "val_loss"} <= set(curves.columns)
    assert (tmp_path / "results" / "grid" / "params" / "mup" / "width=64.parquet").exists()
    assert ray_processes(tmp_path, "grid") == []

    # W&B offline: one run per trial, grouped by study, job_type = variant, config = the trial config
    runs = sorted((tmp_path / "results" / "grid" / "wandb").glob("offline-run-*"))
    assert len(runs) == 8
    recorded = read_run(runs[0])
    assert recorded["run"].run_group == "grid" and recorded["run"].job_type in ("sp", "mup")
    assert recorded["config"]["trial_id"] in set(table["trial_id"]) and "lr" in recorded["config"]
    assert not (tmp_path / "wandb").exists()

    again = sweeper("run", str(path), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to run" in again.stderr
    assert len(trials(tmp_path, "grid")) == 8

    path.write_text(path.read_text().replace("width: [32, 64]", "width: [32, 64, 128]"))
    extended = sweeper("run", str(path), "--no-wandb", cwd=tmp_path)
    assert extended.returncode == 0, extended.stderr[-2000:]
    grown = trials(tmp_path, "grid")
    assert len(grown) == 12 and grown["trial_id"].is_unique
    assert set(grown.loc[~grown["trial_id"].isin(table["trial_id"]), "width"]) == {128}
    assert "ran 4 trials" in extended.stderr

    status = json.loads(sweeper("status", "--study", "grid", "--json", cwd=tmp_path).stdout)
    assert status["completed"] == 12 and status["planned"] == 12
    assert list((tmp_path / "results" / "grid" / ".cache").glob("best-*.json"))  # the run left it cached
    answered = sweeper("best", "--study", "grid", "--json", cwd=tmp_path).stdout
    computed = subprocess.run(
        [*SWEEPER, "best", "--study", "grid", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "SWEEPER_NO_CACHE": "1"},
    ).stdout
    assert answered == computed
    best = json.loads(answered)
    assert len(best) == 6
    assert set(best[0]) >= {"variant", "width", "best", "objective", "n_trials", "bracketed", "refined"}


def test_optuna_search_runs_num_samples_per_point_and_resumes_without_repeats(tmp_path):
    body = """scale: {width: [32, 64]}
sweep: {lr: {loguniform: [0.0005, 0.01]}, warmup: {values: [0, 4]}}
search: {method: optuna, num_samples: 3, seed: 1}
wandb: {mode: disabled}
"""
    path = write_study(tmp_path, "opt", body)
    proc = sweeper("run", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "6 trials" in proc.stderr and "0 already in the store" in proc.stderr
    table = trials(tmp_path, "opt")
    assert len(table) == 6 and table["trial_id"].is_unique
    assert table.groupby("width").size().to_dict() == {32: 3, 64: 3}
    assert table["lr"].between(0.0005, 0.01).all() and set(table["warmup"]) <= {0, 4}
    path.write_text(path.read_text().replace("num_samples: 3", "num_samples: 4"))
    more = sweeper("run", str(path), cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    assert "ran 2 trials" in more.stderr and "6 already in the store" in more.stderr
    assert "8/8 trials (6 stored)" in more.stderr  # the live display's last frame
    assert "store: 8 trials of the current definition (8 completed)" in more.stderr
    grown = trials(tmp_path, "opt")
    assert len(grown) == 8 and grown["trial_id"].is_unique


def test_changing_the_trainer_starts_a_new_definition_that_analyses_keep_apart(tmp_path):
    body = """variants:
  sp: {parameterization: sp}
  mup: {parameterization: mup, base_width: 32}
scale: {width: [32, 64]}
sweep: {lr: {log2_grid: [-10, -6], step: 2}}
wandb: {mode: disabled}
"""
    path = write_study(tmp_path, "defs", body, steps=10)
    assert sweeper("run", str(path), cwd=tmp_path).returncode == 0
    old = trials(tmp_path, "defs")
    assert len(old) == 12 and old["fingerprint"].notna().all()
    assert old.groupby("variant")["fingerprint"].nunique().to_dict() == {"mup": 1, "sp": 1}

    path.write_text(path.read_text().replace("steps: 10", "steps: 14"))
    proc = sweeper("run", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ran 12 trials" in proc.stderr
    table = trials(tmp_path, "defs")
    new = table[~table["trial_id"].isin(old["trial_id"])]
    assert len(table) == 24 and len(new) == 12 and (new["steps_done"] == 14).all()
    assert set(new["fingerprint"]).isdisjoint(set(old["fingerprint"]))

    best = json.loads(sweeper("best", "--study", "defs", "--json", cwd=tmp_path).stdout)
    assert len(best) == 4 and {row["n_trials"] for row in best} == {3}  # 3 LRs x 1 seed, new trials only
    for row in best:
        cell = new[(new["variant"] == row["variant"]) & (new["width"] == row["width"])]
        assert row["objective"] == pytest.approx(cell["objective"].min())
    verify = sweeper("verify", "--study", "defs", "--json", cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr[-2000:]
    rows = json.loads(verify.stdout)
    assert {row["variant"] for row in rows} == {"sp", "mup"}
    for row in rows:
        new_losses = set(new.loc[new["variant"] == row["variant"], "objective"])
        assert row["best_loss"] and all(loss in new_losses for loss in row["best_loss"])
    status = json.loads(sweeper("status", "--study", "defs", "--json", cwd=tmp_path).stdout)
    assert status["total"] == 24 and status["current_definition"] == 12 and status["older_definitions"] == 12

    # Rows written before fingerprints existed get theirs from their config on reading.
    legacy = table.copy()
    legacy["fingerprint"] = None
    legacy.to_parquet(tmp_path / "results" / "defs" / "trials.parquet", index=False)
    status = json.loads(sweeper("status", "--study", "defs", "--json", cwd=tmp_path).stdout)
    assert status["current_definition"] == 12 and status["older_definitions"] == 12


def test_asha_stops_poor_trials_within_a_scale_point(tmp_path):
    # Good learning rates first, hopeless ones after, one at a time: each hopeless trial reaches its first
    # rung behind the good ones and is stopped there. (ASHA is asynchronous: it can only stop a trial that
    # trails results already in.)
    body = """scale: {width: [32]}
sweep: {lr: {values: [0.0078125, 0.00390625, 0.015625, 0.00001, 0.00002, 0.00004]}}
early_stop: {method: asha, grace_steps: 10, reduction_factor: 2}
max_concurrent: 1
wandb: {mode: disabled}
"""
    path = write_study(tmp_path, "asha", body, steps=40)
    path.write_text(path.read_text().replace("eval_interval: 20", "eval_interval: 10"))
    proc = sweeper("run", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = trials(tmp_path, "asha")
    assert len(table) == 6 and table["trial_id"].is_unique
    hopeless = table[table["lr"] < 0.001]
    assert (
        set(hopeless["status"]) == {"stopped"} and (hopeless["steps_done"] == 10).all()
    )  # at the first rung
    assert table.loc[table["lr"] == 0.0078125, "status"].item() == "completed"  # the first, best, runs out
    stopped = table[table["status"] == "stopped"]
    assert (stopped["steps_done"] < 40).all() and stopped["objective"].isna().all()
    assert sweeper("best", "--study", "asha", "--json", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_an_interrupted_study_keeps_finished_trials_and_a_rerun_completes_it(tmp_path, sig):
    body = "scale: {width: [32, 64]}\nsweep: {lr: {log2_grid: [-11, -6]}}\nwandb: {mode: disabled}\n"
    path = write_study(tmp_path, "intr", body, steps=400)
    proc = subprocess.Popen(
        [*SWEEPER, "run", str(path)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    trials_file = tmp_path / "results" / "intr" / "trials.parquet"
    deadline = time.time() + 120
    while time.time() < deadline and not (trials_file.exists() and len(pd.read_parquet(trials_file)) >= 2):
        time.sleep(0.5)
    assert trials_file.exists(), "no trial finished in time"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err[-2000:]
        assert "resume with the same command" in err
        assert ray_processes(tmp_path, "intr") == []
    else:
        assert proc.returncode == -signal.SIGKILL
    kept = pd.read_parquet(trials_file)
    assert 2 <= len(kept) < 12 and kept["trial_id"].is_unique and set(kept["status"]) == {"completed"}

    rerun = sweeper("run", str(path), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    final = pd.read_parquet(trials_file)
    assert len(final) == 12 and final["trial_id"].is_unique and set(final["status"]) == {"completed"}
    assert set(kept["trial_id"]) <= set(final["trial_id"])
    assert ray_processes(tmp_path, "intr") == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_study_runs_on_an_existing_ray_cluster(tmp_path):
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    temp_dir = Path("/tmp") / f"sweeper-test-cluster-{os.getpid()}"
    started = subprocess.run(
        [
            ray,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        body = "sweep: {lr: {values: [0.001, 0.003]}}\nwandb: {mode: disabled}\n"
        path = write_study(tmp_path, "cluster", body, steps=6)
        proc = sweeper("run", str(path), "--address", f"127.0.0.1:{port}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert set(trials(tmp_path, "cluster")["status"]) == {"completed"}
        assert len(trials(tmp_path, "cluster")) == 2
    finally:
        kill_leftover_ray(temp_dir)


@pytest.mark.slow  # default-suite budget: the slow pass of .ci/run runs it
def test_a_resumed_adaptive_run_displays_the_stored_trials_and_their_best(tmp_path):
    """Once seen after a resume: `already in store 0` with 10 trials stored, and a best so far that
    ignored them. The display's last frame (stderr is no terminal here) must count and show them."""
    body = (
        "variants: {mup: {parameterization: mup, base_width: 32}}\nscale: {width: [32]}\n"
        "sweep: {lr: {log2_grid: [-9, -6]}}\nsearch: {method: adaptive, extra_seeds: 0}\nwandb: {mode: disabled}\n"
    )
    path = write_study(tmp_path, "resume", body)
    first = sweeper("run", str(path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    stored = trials(tmp_path, "resume")
    best = stored.sort_values("objective").iloc[0]
    path.write_text(path.read_text().replace("width: [32]", "width: [32, 64]"))
    again = sweeper("run", str(path), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    grown = trials(tmp_path, "resume")
    assert f"{len(grown)}/~{len(grown)} trials ({len(stored)} stored)" in again.stderr
    frame = again.stderr[again.stderr.index("best so far") :]
    row = next(line for line in frame.splitlines() if "width=32" in line)
    assert f"{best['objective']:.4f}" in row and f" {len(stored)} " in row  # the stored best and count
    assert f"store: {len(grown)} trials of the current definition ({len(grown)} completed)" in again.stderr
    assert f"{len(stored)} already in the store" in again.stderr


@pytest.mark.slow
def test_adaptive_search_finds_the_grid_optimum_with_fewer_trials(tmp_path):
    body = "scale: {width: [32, 64]}\nsweep: {lr: {log2_grid: [-12, -4]}}\nwandb: {mode: disabled}\n"
    grid_path = write_study(tmp_path, "full", body, steps=40)
    adaptive_path = write_study(
        tmp_path, "adapt", body + "search: {method: adaptive, extra_seeds: 0}\n", steps=40
    )
    for path in (grid_path, adaptive_path):  # a less noisy objective: a line search assumes one basin
        path.write_text(path.read_text().replace("eval_batches: 1", "eval_batches: 8"))
    assert sweeper("run", str(grid_path), cwd=tmp_path).returncode == 0
    proc = sweeper("run", str(adaptive_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 at extra seeds" in proc.stderr and "the full grid on the study's seeds has 18" in proc.stderr
    full, adaptive = trials(tmp_path, "full"), trials(tmp_path, "adapt")
    assert len(adaptive) < len(full) == 18
    for width in (32, 64):
        grid_best = full[full["width"] == width].sort_values("objective").iloc[0]
        found = adaptive[adaptive["width"] == width].sort_values("objective").iloc[0]
        assert abs(found["lr"] / grid_best["lr"] - 1) < 1.0  # within one grid step (a factor of 2)
        assert found["objective"] <= grid_best["objective"] + 0.02


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("scale: {width: []}\n", "scale.width"),
        ("sweep: {lr: {log2_grid: [-4, -14]}}\n", "sweep.lr"),
        ("variants: {x: {parameterization: mupp}}\n", "parameterization='mupp'"),
        ("objective: {metric: accuracy}\n", "objective.metric"),
        ("colour: blue\n", "colour"),
    ],
)
def test_bad_studies_fail_with_one_line_before_anything_is_written(tmp_path, body, expected):
    path = write_study(tmp_path, "bad", body)
    proc = sweeper("run", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "bad.yaml" in lines[0], proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_study_and_bad_names(tmp_path):
    missing = sweeper("run", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    slash = tmp_path / "slash.yaml"
    slash.write_text("name: ../evil\n")
    proc = sweeper("run", str(slash), cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    status = sweeper("status", "--study", "nothing", cwd=tmp_path)
    assert status.returncode == 2 and "no results" in status.stderr


def test_dry_run_lists_the_plan_and_writes_nothing(tmp_path):
    path = write_study(tmp_path, "dry", GRID)
    proc = sweeper("run", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "plan" in proc.stdout
    cells = [[c.strip() for c in line.split("\u2502")[1:-1]] for line in proc.stdout.splitlines()]
    rows = {tuple(row[:2]): row[2:5] for row in cells if len(row) >= 5}
    # Per (variant, scale point): two lr values planned, none in the store, two to run; eight in all.
    for variant in ("sp", "mup"):
        for width in (32, 64):
            assert rows[(variant, f"width={width}")] == ["2", "0", "2"], proc.stdout
    assert rows[("all", "")] == ["8", "0", "8"], proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # default-suite budget: the slow pass of .ci/run runs it
def test_inherit_takes_the_best_values_at_the_base_scale_of_another_study(tmp_path):
    tune = write_study(
        tmp_path,
        "tuneb",
        "scale: {width: [64, 32]}\nsweep: {lr: {values: [0.0001, 0.01]}}\nwandb: {mode: disabled}\n",
        steps=20,
    )
    assert sweeper("run", str(tune), cwd=tmp_path).returncode == 0
    table = trials(tmp_path, "tuneb")
    base = table[table["width"] == 32].sort_values("objective").iloc[0]  # the smallest width is the base
    target = write_study(
        tmp_path,
        "target",
        "inherit: {study: tuneb, keys: [lr]}\nscale: {width: [64]}\n"
        "sweep: {warmup: {values: [0, 2]}}\nwandb: {mode: disabled}\n",
        steps=4,
    )
    proc = sweeper("run", str(target), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(trials(tmp_path, "target")["lr"]) == {base["lr"]}
    missing = write_study(
        tmp_path, "orphan", "inherit: {study: nowhere, keys: [lr]}\nwandb: {mode: disabled}\n"
    )
    proc = sweeper("run", str(missing), cwd=tmp_path)
    assert proc.returncode == 2 and "no results for study 'nowhere'" in proc.stderr


@pytest.mark.slow  # default-suite budget: the slow pass of .ci/run runs it
def test_preflight_coord_check_stops_a_study_whose_variant_fails_unless_forced(tmp_path):
    body = """variants:
  broken: {parameterization: mup, base_width: 32, readout_scaling: inv_sqrt_width_ablation, zero_init_query: true}
  good: {parameterization: mup, base_width: 32, zero_init_readout: true, zero_init_query: true, lr: 0.01}
  sp: {parameterization: sp}
scale: {width: [32, 64, 128]}
sweep: {lr: {values: [0.003]}}
preflight: coord_check
wandb: {mode: disabled}
"""
    path = write_study(tmp_path, "pre", body, steps=4)
    path.write_text(path.read_text().replace("steps: 4", "steps: 4, lr: 0.03"))
    proc = sweeper("run", str(path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert (
        "preflight coordinate check failed: broken:" in proc.stderr
        and "good" not in proc.stderr.split("failed:")[1]
    )
    assert (tmp_path / "results" / "pre" / "coord_check.png").exists()
    assert not (tmp_path / "results" / "pre" / "trials.parquet").exists()
    forced = sweeper("run", str(path), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert len(trials(tmp_path, "pre")) == 9
