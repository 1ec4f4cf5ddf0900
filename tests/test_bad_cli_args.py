"""Bad command-line arguments, across every command: exit status 2, exactly one line on stderr starting
with `error:`, no traceback, and nothing written under the results folder given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.store import ResultsStore, trial_row
from trainers.config import TrainConfig

TINY_STUDY = """\
name: tiny
description: never run by these tests
trainer: {depth: 1, head_dim: 16, seq_len: 16, batch_size: 4, steps: 2, threads: 1}
variants:
  sp: {parameterization: sp}
scale: {width: [16, 32]}
sweep: {lr: {values: [0.01, 0.02]}}
wandb: {mode: disabled}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A results folder with one finished study, and the files the bad arguments point at."""
    base = tmp_path_factory.mktemp("bad_args")
    root = base / "results"
    store = ResultsStore(root, "s")
    for width in (64, 128):
        for lr in (0.005, 0.01, 0.02):
            cfg = TrainConfig(lr=lr, width=width)
            loss = 2.0 + abs(lr - 0.01) * 10
            row = trial_row(
                trial_id=f"{width}-{lr}",
                study="s",
                variant="sp",
                seed=0,
                scale={"width": width},
                params={"lr": lr},
                config=cfg.model_dump(mode="json"),
                status="completed",
                objective=loss,
                summary={"final_val_loss": loss, "steps": 10, "tokens": 640, "status": "completed"},
            )
            store.record(row, [{"step": 10, "tokens": 640, "val_loss": loss}])
    store.write_study_record(
        {"name": "s", "scale_keys": ["width"], "swept_keys": ["lr"], "planned": 6, "source": "s.yaml"}
    )
    (base / "tiny.yaml").write_text(TINY_STUDY)
    (base / "bad_study.yaml").write_text(TINY_STUDY.replace("steps: 2", "stepz: 2"))
    (base / "latin1.yaml").write_bytes("lr: 0.01  # caf\xe9\n".encode("latin-1"))
    (base / "a_file").write_text("not a folder\n")
    (base / "a_folder").mkdir()
    return {
        "R": str(root),
        "NEW": str(base / "new_results"),  # a results folder that must stay unwritten
        "STUDY": str(base / "tiny.yaml"),
        "BAD_STUDY": str(base / "bad_study.yaml"),
        "LATIN1": str(base / "latin1.yaml"),
        "FILE": str(base / "a_file"),
        "DIR": str(base / "a_folder"),
    }


def snapshot(*roots: str) -> dict[str, tuple[int, int]]:
    found = {}
    for root in map(Path, roots):
        if root.exists():
            for path in [root, *root.rglob("*")]:
                info = path.stat()
                found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


# (arguments with {placeholders} from `files`, text the error line must hold)
BAD = [
    (["train", "--steps", "3"], "No such option: --steps"),
    (["train", "--set", "widht=64"], "unknown key 'widht'"),
    (["train", "--set", "betas=[2,3]"], "betas"),
    (["train", "--config", "{LATIN1}"], "UTF-8"),
    (["params", "--config", "{LATIN1}"], "UTF-8"),
    (["params", "--config", "{DIR}"], "{DIR}"),
    (["params", "--set", "mlp_ratio=.inf"], "mlp_ratio"),
    (["params", "--set", "lr=.inf"], "lr"),
    (["params", "--set", "seed=1e20"], "seed"),
    (["params", "--set", "lr"], "expected key=value"),
    (["coord-check", "--steps", "0"], "--steps"),
    (["coord-check", "--lr", "nan"], "--lr nan"),
    (["coord-check", "--widths", "64"], "at least two positive widths"),
    (["coord-check", "--widths", "64,128", "--plot", "{DIR}"], "--plot"),
    (["run"], "Missing argument"),
    (["run", "{DIR}/nowhere.yaml", "--results", "{NEW}"], "no such study file"),
    (["run", "{STUDY}", "--results", "{FILE}"], "--results"),
    (["run", "{STUDY}", "--results", "{NEW}", "--max-concurrent", "0"], "--max-concurrent"),
    (["run", "{STUDY}", "--results", "{NEW}", "--bogus"], "No such option: --bogus"),
    (["run", "{BAD_STUDY}", "--results", "{NEW}"], "stepz"),
    (["status"], "Missing option '--study'"),
    (["status", "--study", "..", "--results", "{R}"], "plain study name"),
    (["status", "--study", "", "--results", "{R}"], "plain study name"),
    (["status", "--study", "s", "--results", "{FILE}"], "a file, not a folder"),
    (["status", "--study", "nope", "--results", "{R}"], "studies there: s"),
    (["best", "--study", "s", "--results", "{R}", "--width", "nan"], "finite positive"),
    (["best", "--study", "s", "--results", "{R}", "--width", "inf", "--json"], "finite positive"),
    (["best", "--study", "s", "--results", "{R}", "--width", "-1"], "finite positive"),
    (["best", "--study", "s", "--results", "{R}", "--width", "0"], "finite positive"),
    (["best", "--study", "s", "--results", "{R}", "--width"], "a target is scale keys with values"),
    (["best", "--study", "s", "--results", "{R}", "--depth", "8"], "not a scale axis"),
    (["verify", "--study", "s", "--results", "{R}", "--tol", "-1"], "--tol"),
    (["verify", "--study", "s", "--results", "{R}", "--axis", "depth"], "not a scale axis"),
    (["report", "--study", "s", "--results", "{R}", "--out", "{FILE}"], "--out"),
    (["report", "--study", "s", "--results", "{R}", "--axis", "depth"], "not a scale axis"),
    (["list", "--results", "{FILE}"], "a file, not a folder"),
    (["list", "--bogus"], "No such option: --bogus"),
    (["nosuch"], "No such command 'nosuch'"),
]


def filled(args: list[str], files: dict[str, str]) -> list[str]:
    return [a.format(**files) for a in args]


def assert_one_line(code: int, stdout: str, stderr: str, expected: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, stdout + stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert expected in lines[0] and "Traceback" not in stderr + stdout, stderr
    assert stdout == ""


@pytest.mark.parametrize(("args", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_argument_is_one_line_and_exit_2(files, args, expected):
    before = snapshot(files["R"])
    result = CliRunner().invoke(app, filled(args, files))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert_one_line(result.exit_code, result.stdout, result.stderr, expected.format(**files))
    assert snapshot(files["R"]) == before and not Path(files["NEW"]).exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["best", "--study", "s", "--results", "{R}", "--width", "inf", "--json"], "finite positive"),
        (["run", "{STUDY}", "--results", "{NEW}", "--max-concurrent", "0"], "--max-concurrent"),
        (["status", "--results", "{R}"], "Missing option '--study'"),
        (["params", "--config", "{LATIN1}"], "UTF-8"),
    ],
    ids=["best-inf", "run-max-concurrent", "status-no-study", "params-latin1"],
)
def test_a_bad_argument_is_one_line_from_the_real_command(files, args, expected):
    before = snapshot(files["R"])
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", *filled(args, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line(proc.returncode, proc.stdout, proc.stderr, expected)
    assert snapshot(files["R"]) == before and not Path(files["NEW"]).exists()


def test_an_unreadable_results_folder_is_one_line(files, monkeypatch):
    """Read permission cannot be taken from root, who runs these tests in CI, so the refusal is simulated
    where the store reads."""

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", files["R"])

    monkeypatch.setattr(pd, "read_parquet", denied)
    for args in (["status", "--study", "s"], ["best", "--study", "s", "--json"], ["list"]):
        result = CliRunner().invoke(app, [*args, "--results", files["R"]])
        if args[0] == "list":  # the listing still answers, naming the study it cannot read
            assert result.exit_code == 0 and "Permission denied" in result.stdout
            continue
        assert_one_line(result.exit_code, result.stdout, result.stderr, "Permission denied")
    monkeypatch.setattr(Path, "iterdir", denied)
    result = CliRunner().invoke(app, ["list", "--results", files["R"]])
    assert_one_line(result.exit_code, result.stdout, result.stderr, "cannot list it")
    monkeypatch.undo()
    monkeypatch.setattr(Path, "mkdir", denied)  # a read-only results folder: the report cannot be written
    result = CliRunner().invoke(app, ["report", "--study", "s", "--results", files["R"], "--no-wandb"])
    assert_one_line(result.exit_code, result.stdout, result.stderr, "Permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_folder_without_read_permission_is_one_line(files, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        result = CliRunner().invoke(app, ["list", "--results", str(locked)])
        assert_one_line(result.exit_code, result.stdout, result.stderr, str(locked))
    finally:
        locked.chmod(0o700)
