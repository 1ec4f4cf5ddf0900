"""`sweeper train` as a user runs it: the console script, --json, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SWEEPER = [sys.executable, "-m", "sweeper.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SWEEPER, *args], capture_output=True, text=True, timeout=300)


def test_train_json_prints_exactly_one_object():
    proc = run(
        "train",
        "--json",
        "--set",
        "width=32",
        "--set",
        "head_dim=16",
        "--set",
        "steps=6",
        "--set",
        "eval_interval=3",
        "--set",
        "eval_batches=1",
        "--set",
        "threads=1",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert proc.stdout.strip().count("\n") == 0
    for key in (
        "status",
        "final_val_loss",
        "best_val_loss",
        "final_train_loss",
        "steps",
        "tokens",
        "wall_s",
        "tokens_per_s",
    ):
        assert key in summary
    assert summary["status"] == "completed" and summary["steps"] == 6


def test_train_with_a_config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("width: 32\nhead_dim: 16\nsteps: 3\neval_batches: 1\nthreads: 1\n")
    proc = run("train", "--config", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"] == 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "widht=64"], "unknown key 'widht'"),
        (["--set", "norm=batchnorm"], "norm='batchnorm'"),
        (["--set", "lr=-1"], "lr=-1"),
        (["--set", "lr"], "expected key=value"),
        (["--config", "/nonexistent/x.yaml"], "no such config file"),
        (["--set", "corpus=/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
        (["--set", "parameterization=mup"], "base_width"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected):
    proc = run("train", "--json", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0] and "Traceback" not in proc.stderr


def test_help_does_not_import_torch():
    code = "import sys; from sweeper.cli import app; assert 'torch' not in sys.modules and 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
