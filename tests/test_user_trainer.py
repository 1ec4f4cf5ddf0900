"""Studies over the user's own trainer: `trainer_entry: module:function` and `trainer_command`, their
contract (report points, the returned status), their validation, and a real run on Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from sweeper.command_trainer import CommandTrainer, command_line
from sweeper.errors import StudyError
from sweeper.identity import definition_fingerprint, trial_id
from sweeper.study import Study, load_study
from sweeper.user_config import UserConfig
from sweeper.user_trainer import EntryError, load_entry, run_user_trainer

SWEEPER = [sys.executable, "-m", "sweeper.cli"]

# A trainer whose optimum lr moves with width (-0.5 octaves per doubling) and which misbehaves on cue.
TOY_TRAINER = """
import math

def train(config, report):
    lr, width = config["lr"], config["width"]
    if config.get("explode"):
        raise RuntimeError(f"exploded at lr {lr}")
    best = math.log2(0.01) - 0.5 * math.log2(width / 32)
    gap = (math.log2(lr) - best) ** 2
    for step in range(0, config["steps"] + 1, 5):
        loss = 3.0 + 0.2 * gap + (0.5 + gap) * (1 - step / (config["steps"] + 1)) + 0.001 * config["seed"]
        report({"step": step, "val_loss": loss, "tokens": step * 64})
    return {"status": "completed", "width_seen": width}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def study_from(tmp_path: Path, text: str) -> Study:
    return load_study(write(tmp_path, "study.yaml", text))


def sweeper(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SWEEPER, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


# --- the contract: points, status, summary -----------------------------------------------------------
def collect(train, config=None, **kw):
    points: list[dict] = []
    result = run_user_trainer(train, config or {"seed": 0}, points.append, **kw)
    return result, points


def test_points_give_final_and_best_of_every_metric_and_user_summary_is_kept():
    def train(config, report):
        for step, loss in [(0, 4.0), (10, 3.0), (20, 3.5)]:
            report({"step": step, "val_loss": loss, "acc": step / 100})
        return {"status": "completed", "params": 1234}

    result, points = collect(train)
    summary = result.summary()
    assert result.status == "completed" and len(points) == 3
    assert summary["final_val_loss"] == 3.5 and summary["best_val_loss"] == 3.0
    assert summary["final_acc"] == 0.2 and summary["steps"] == 20 and summary["params"] == 1234


def test_best_follows_the_objective_mode_for_its_metric():
    def train(config, report):
        for step, acc in [(0, 0.5), (1, 0.9), (2, 0.7)]:
            report({"step": step, "acc": acc})
        return {"status": "completed"}

    result, _ = collect(train, metric="acc", mode="max")
    assert result.summary()["best_acc"] == 0.9


def test_an_exception_is_a_failed_trial_with_its_message_and_traceback():
    def train(config, report):
        report({"step": 0, "val_loss": 3.0})
        raise ValueError("shape mismatch in block 3")

    result, _ = collect(train)
    assert result.status == "failed"
    assert result.error == "ValueError: shape mismatch in block 3"
    assert "Traceback" in result.details and "shape mismatch" in result.details


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"val_loss": 3.0}, "report() needs 'step'"),
        ({"step": -1, "val_loss": 3.0}, "report() needs 'step'"),
        ({"step": 1.5}, "report() needs 'step'"),
        ({"step": 0, "val_loss": "high"}, "metric 'val_loss' must be a number or None"),
        ({"step": 0, "val loss": 3.0}, "metric names are identifiers"),
        ([0, 3.0], "report() takes a dict"),
    ],
)
def test_a_bad_point_is_a_failed_trial_that_says_what_is_wrong(point, message):
    def train(config, report):
        report(point)
        return {"status": "completed"}

    result, _ = collect(train)
    assert result.status == "failed" and message in result.error


def test_steps_must_not_go_back():
    def train(config, report):
        report({"step": 10, "val_loss": 3.0})
        report({"step": 5, "val_loss": 3.0})

    result, _ = collect(train)
    assert result.status == "failed" and "step 5 after step 10" in result.error


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, "returned NoneType"),
        ({"loss": 3.0}, "returned status None"),
        ({"status": "ok"}, "returned status 'ok'"),
    ],
)
def test_a_bad_return_value_is_a_failed_trial(returned, message):
    def train(config, report):
        report({"step": 0, "val_loss": 3.0})
        return returned

    result, _ = collect(train)
    assert result.status == "failed" and message in result.error


def test_a_nan_objective_is_diverged_and_a_missing_one_is_failed():
    def nan(config, report):
        report({"step": 0, "val_loss": float("nan")})
        return {"status": "completed"}

    def silent(config, report):
        report({"step": 0, "train_loss": 3.0})
        return {"status": "completed"}

    assert collect(nan)[0].status == "diverged"
    result = collect(silent)[0]
    assert result.status == "failed" and "never reported the objective metric 'val_loss'" in result.error


def test_status_the_trainer_returns_is_kept():
    def diverged(config, report):
        report({"step": 0, "val_loss": 9.0})
        return {"status": "diverged", "divergence_reason": "loss spike"}

    def failed(config, report):
        return {"status": "failed", "error": "out of memory"}

    result = collect(diverged)[0]
    assert result.status == "diverged" and result.summary()["divergence_reason"] == "loss spike"
    assert collect(failed)[0].error == "out of memory"


def test_the_trainer_gets_a_copy_of_the_config():
    def train(config, report):
        config["lr"] = 99
        report({"step": 0, "val_loss": 1.0})
        return {"status": "completed"}

    config = {"lr": 0.1, "seed": 0}
    collect(train, config)
    assert config["lr"] == 0.1


# --- the command-line form ---------------------------------------------------------------------------
SCRIPT = """
import json, sys
lr = float(sys.argv[1])
print("loading data...")                       # logging: not a JSON line, left alone
if lr > 1:
    print("CUDA out of memory", file=sys.stderr)
    sys.exit(3)
if lr > 0.5:
    print("{broken")
    sys.exit(0)
for step in (0, 10):
    print(json.dumps({"step": step, "val_loss": 3.0 + lr + 1 / (step + 1)}), flush=True)
if lr < 0.1:
    print(json.dumps({"status": "completed", "peak_mem_gb": 1.5}))
"""


def command(tmp_path: Path, lr: float):
    write(tmp_path, "script.py", SCRIPT)
    trainer = CommandTrainer(f"{sys.executable} script.py {{lr}}", str(tmp_path))
    return collect(trainer, {"lr": lr, "seed": 0})


def test_command_json_lines_are_points_and_the_status_line_ends_the_trial(tmp_path):
    result, points = command(tmp_path, 0.01)
    assert [p["step"] for p in points] == [0, 10]
    assert result.status == "completed" and result.summary()["peak_mem_gb"] == 1.5


def test_command_exiting_zero_without_a_status_line_is_completed(tmp_path):
    result, _ = command(tmp_path, 0.2)
    assert result.status == "completed" and result.summary()["final_val_loss"] == pytest.approx(3.2 + 1 / 11)


def test_command_nonzero_exit_is_failed_with_its_last_stderr_line(tmp_path):
    result, _ = command(tmp_path, 2.0)
    assert result.status == "failed"
    assert result.error == "the command exited with status 3: CUDA out of memory"


def test_command_bad_json_line_is_failed_naming_the_line(tmp_path):
    result, _ = command(tmp_path, 0.7)
    assert result.status == "failed" and result.error.startswith("stdout line 2 is not valid JSON")


def test_command_that_cannot_start_is_failed(tmp_path):
    result, _ = collect(CommandTrainer("no-such-program-here {lr}", str(tmp_path)), {"lr": 1, "seed": 0})
    assert result.status == "failed" and "cannot start 'no-such-program-here'" in result.error


def test_command_line_fills_each_argument_without_a_shell():
    argv = command_line(
        "train.py --lr {lr} --name '{name}' --cfg {config_json}", {"lr": 0.1, "name": "a b; rm"}
    )
    assert argv[:5] == ["train.py", "--lr", "0.1", "--name", "a b; rm"]
    assert json.loads(argv[-1]) == {"lr": 0.1, "name": "a b; rm"}


# --- loading the entry ---------------------------------------------------------------------------------
def test_load_entry_imports_from_the_directory_and_names_what_is_missing(tmp_path):
    write(tmp_path, "userpkg_a.py", "def train(config, report):\n    return {'status': 'completed'}\nx = 3\n")
    assert callable(load_entry("userpkg_a:train", tmp_path))
    with pytest.raises(EntryError, match="cannot import module 'no_such_mod_xyz'"):
        load_entry("no_such_mod_xyz:train", tmp_path)
    with pytest.raises(EntryError, match="module 'userpkg_a' has no 'nope'"):
        load_entry("userpkg_a:nope", tmp_path)
    with pytest.raises(EntryError, match="is a int, not a function"):
        load_entry("userpkg_a:x", tmp_path)


def test_load_entry_rejects_a_function_of_the_wrong_arity(tmp_path):
    write(tmp_path, "userpkg_b.py", "def train(config):\n    return {}\n")
    with pytest.raises(EntryError, match=r"cannot be called as train\(config, report\)"):
        load_entry("userpkg_b:train", tmp_path)


def test_load_entry_reports_an_error_inside_the_module(tmp_path):
    write(tmp_path, "userpkg_c.py", "import no_such_dependency_q\n")
    with pytest.raises(EntryError, match="importing 'userpkg_c' failed: ModuleNotFoundError"):
        load_entry("userpkg_c:train", tmp_path)


def test_load_entry_check_leaves_sys_path_as_it_was(tmp_path):
    write(tmp_path, "userpkg_d.py", "def train(config, report):\n    return {}\n")
    before = list(sys.path)
    load_entry("userpkg_d:train", tmp_path, keep_path=False)
    assert sys.path == before


# --- the study -----------------------------------------------------------------------------------------
STUDY = """\
name: own
trainer_entry: toy_trainer:train
trainer_keys: [width, lr, steps, seed]
trainer: {steps: 20}
scale: {width: [32, 64]}
sweep: {lr: {log2_grid: [-8, -6]}}
"""


def test_a_user_trainer_study_plans_plain_configs(tmp_path):
    study = study_from(tmp_path, STUDY)
    trials = study.grid_trials()
    assert len(trials) == 2 * 3
    first = trials[0].config
    assert isinstance(first, UserConfig)
    assert first.model_dump() == {"steps": 20, "width": 32, "lr": 2.0**-8, "seed": 0}
    assert len({t.trial_id for t in trials}) == 6


def test_trial_id_and_fingerprint_name_the_trainer_too():
    a = UserConfig({"lr": 0.1, "seed": 0}, "pkg:train")
    b = UserConfig({"lr": 0.1, "seed": 0}, "pkg:train_v2")
    assert trial_id(a) == trial_id(UserConfig({"seed": 0, "lr": 0.1}, "pkg:train"))
    assert trial_id(a) != trial_id(b)
    assert definition_fingerprint(a, ["lr"]) != definition_fingerprint(b, ["lr"])
    assert definition_fingerprint(a, ["lr"]) == definition_fingerprint(
        UserConfig({"lr": 0.5, "seed": 3}, "pkg:train"), ["lr"]
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("lr: {log2_grid", "lrr: {log2_grid"),
            ":6: sweep.lrr: unknown trainer key 'lrr' (did you mean 'lr'?); "
            "trainer_keys allows width, lr, steps, seed",
        ),
        (("trainer: {steps: 20}", "trainer: {step: 20}"), ":4: trainer.step: unknown trainer key 'step'"),
        (
            ("trainer: {steps: 20}", "trainer: {steps: 20, status: 1}"),
            "trainer.status: trainer key 'status' is also a column the store keeps",
        ),
        (
            ("toy_trainer:train", "toy_trainer.train"),
            ":2: trainer_entry: 'toy_trainer.train' is not of the form module:function",
        ),
        (
            ("trainer_keys: [width, lr, steps, seed]", "trainer_keys: [width, lr, lr]"),
            "trainer_keys[2]: duplicate key 'lr'",
        ),
    ],
)
def test_study_errors_for_a_user_trainer_name_line_and_key(tmp_path, change, expected):
    with pytest.raises(StudyError) as info:
        study_from(tmp_path, STUDY.replace(*change))
    message = str(info.value)
    assert "\n" not in message and expected in message, message


def test_without_trainer_keys_any_identifier_is_a_key(tmp_path):
    study = study_from(
        tmp_path,
        STUDY.replace("trainer_keys: [width, lr, steps, seed]\n", "").replace(
            "{steps: 20}", "{steps: 20, my_dropout: 0.1, layers: [2, 2]}"
        ),
    )
    assert study.grid_trials()[0].config.values["layers"] == [2, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: s\ntrainer_keys: [lr]\n", "trainer_keys: trainer_keys lists the keys of your own trainer"),
        (
            "name: s\ntrainer_entry: a:b\ntrainer_command: python x.py\n",
            "trainer_command: give trainer_entry or trainer_command, not both",
        ),
        ('name: s\ntrainer_command: "python \'x.py"\n', "trainer_command: cannot split the command"),
        (
            "name: s\ntrainer_command: python x.py --lr {lrr}\nsweep: {lr: {values: [1]}}\n",
            "trainer_command: variant default: {lrr} names no key of the trial config (did you mean 'lr'?)",
        ),
        (
            "name: s\ntrainer_entry: a:b\nsweep: {lr: {values: [1, 2]}}\nearly_stop: {grace_steps: 5}\n",
            "early_stop: variant default: early stopping needs the run's length",
        ),
        (
            "name: s\ntrainer_entry: a:b\npreflight: coord_check\n",
            "preflight: preflight coord_check checks the built-in GPT",
        ),
        (
            "name: s\ntrainer_entry: a:b\nobjective: {metric: val loss}\n",
            "objective.metric: metric 'val loss' is not",
        ),
        (
            "name: s\ntrainer_entry: a:b\ntrainer: {start: 2024-01-01}\n",
            "trainer.start: variant default: start is",
        ),
    ],
)
def test_user_trainer_study_rules(tmp_path, text, expected):
    with pytest.raises(StudyError) as info:
        study_from(tmp_path, text)
    assert expected in str(info.value), str(info.value)


def test_a_user_trainer_may_name_any_metric_as_the_objective(tmp_path):
    study = study_from(
        tmp_path, "name: s\ntrainer_entry: a:b\nobjective: {metric: accuracy, mode: max, use: best}\n"
    )
    assert study.objective.of_summary({"best_accuracy": 0.9, "final_accuracy": 0.8}) == 0.9


def test_run_refuses_a_typo_before_anything_runs(tmp_path):
    write(tmp_path, "toy_trainer.py", TOY_TRAINER)
    path = write(tmp_path, "own.yaml", STUDY.replace("lr: {log2_grid", "lrr: {log2_grid"))
    done = sweeper("run", str(path), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "sweep.lrr: unknown trainer key 'lrr'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_run_refuses_an_entry_that_does_not_import(tmp_path):
    path = write(tmp_path, "own.yaml", STUDY)
    done = sweeper("run", str(path), cwd=tmp_path)
    assert done.returncode == 2 and "trainer_entry: cannot import module 'toy_trainer'" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "results").exists()


# --- a real run on Ray -----------------------------------------------------------------------------
E2E = """\
name: own
trainer_entry: toy_trainer:train
trainer_keys: [width, lr, steps, seed, explode]
trainer: {steps: 20}
variants:
  plain: {}
  broken: {explode: true}
scale: {width: [32, 64, 128]}
sweep: {lr: {log2_grid: [-9, -5]}}
seeds: [0, 1]
wandb: {mode: disabled}
"""


def test_a_user_trainer_study_runs_on_ray_and_every_reader_works(tmp_path):
    write(tmp_path, "toy_trainer.py", TOY_TRAINER)
    path = write(tmp_path, "own.yaml", E2E)
    first = sweeper("run", str(path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "results" / "own" / "trials.parquet")
    assert len(table) == 2 * 3 * 2 * 5
    plain, broken = table[table["variant"] == "plain"], table[table["variant"] == "broken"]
    assert set(plain["status"]) == {"completed"} and set(broken["status"]) == {"failed"}
    assert broken["error"].str.startswith("RuntimeError: exploded at lr").all()
    assert json.loads(plain["summary"].iloc[0])["width_seen"] in (32, 64, 128)
    curves = pd.read_parquet(tmp_path / "results" / "own" / "curves")
    assert {"step", "val_loss", "tokens"} <= set(curves.columns)

    again = sweeper("run", str(path), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to run" in again.stderr

    best = json.loads(sweeper("best", "--study", "own", "--json", cwd=tmp_path).stdout)
    optima = {row["width"]: row["best"]["lr"] for row in best if row["variant"] == "plain"}
    assert optima == {32: 2.0**-7, 64: 2.0**-7, 128: 2.0**-8}  # a grid of whole octaves: -0.5/doubling rounds

    verify = json.loads(sweeper("verify", "--study", "own", "--json", cwd=tmp_path).stdout)
    row = next(r for r in verify if r["variant"] == "plain")
    assert row["verdict"] == "shifts" and row["alpha_ci"][0] < -0.3 < row["alpha_ci"][1] + 0.3

    report = sweeper("report", "--study", "own", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "results" / "own" / "report" / "best_curves.png").exists()

    # Another study of the same trainer takes the base width's optimum (`inherit:`).
    heir = "name: heir\ntrainer_entry: toy_trainer:train\ntrainer: {steps: 20}\nscale: {width: [256]}\n"
    path = write(tmp_path, "heir.yaml", heir + "inherit: {study: own, keys: [lr], variant: plain}\n")
    plan = sweeper("run", str(path), "--dry-run", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "inherited from own: {'default': {'lr': 0.0078125}}" in plan.stdout
    path = write(tmp_path, "heir.yaml", heir + "inherit: {study: own, keys: [explode], variant: plain}\n")
    plan = sweeper("run", str(path), cwd=tmp_path)
    assert (
        plan.returncode == 2
        and "the best trial of study 'own' (variant 'plain') has no key 'explode'" in plan.stderr
    )


@pytest.mark.slow
def test_a_command_trainer_study_runs_on_ray(tmp_path):
    write(tmp_path, "script.py", SCRIPT)
    path = write(
        tmp_path,
        "cmd.yaml",
        f"""\
        name: cmd
        trainer_command: {sys.executable} script.py {{lr}}
        sweep: {{lr: {{values: [0.01, 0.2, 0.7, 2.0]}}}}
        wandb: {{mode: disabled}}
        """,
    )
    done = sweeper("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "results" / "cmd" / "trials.parquet").sort_values("lr")
    assert list(table["status"]) == ["completed", "completed", "failed", "failed"]
    assert list(table["error"])[3] == "the command exited with status 3: CUDA out of memory"


ASHA = """\
name: own_asha
trainer_entry: toy_trainer:train
trainer: {steps: 40}
scale: {width: [32]}
sweep: {lr: {loguniform: [0.0001, 0.5]}}
search: {method: optuna, num_samples: 8, seed: 3}
early_stop: {method: asha, grace_steps: 10, reduction_factor: 2}
max_concurrent: 1
wandb: {mode: offline, project: sweeper-test}
"""


@pytest.mark.slow
def test_optuna_asha_and_wandb_work_over_a_user_trainer(tmp_path):
    write(tmp_path, "toy_trainer.py", TOY_TRAINER)
    path = write(tmp_path, "asha.yaml", ASHA)
    done = sweeper("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "results" / "own_asha" / "trials.parquet")
    assert len(table) == 8 and set(table["status"]) <= {"completed", "stopped"}
    assert "stopped" in set(table["status"])  # ASHA cut the bad learning rates at a reported step
    stopped = table[table["status"] == "stopped"]
    assert (stopped["steps_done"] < 40).all() and stopped["best_val_loss"].notna().all()
    runs = list((tmp_path / "results" / "own_asha" / "wandb").glob("offline-run-*"))
    assert len(runs) >= 8
    status = sweeper("status", "--study", "own_asha", cwd=tmp_path)
    assert (
        f"W&B: {len(runs)} offline runs in results/own_asha/wandb; upload them with `wandb sync"
        in status.stdout
    )
    counts = json.loads(sweeper("status", "--study", "own_asha", "--json", cwd=tmp_path).stdout)
    assert counts["wandb_offline_runs"] == len(runs) and counts["total"] == 8
