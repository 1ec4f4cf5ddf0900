"""The shipped study library: every file validates and dry-runs; a shrunken copy of each CPU study runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeper.study import load_study

STUDIES = Path(__file__).parent.parent / "studies"
CPU = sorted(STUDIES.glob("*.yaml"))
ALL = CPU + sorted((STUDIES / "gpu").glob("*.yaml"))
SWEEPER = [sys.executable, "-m", "sweeper.cli"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(STUDIES)))
def test_every_study_validates_and_says_what_it_asks(path):
    study = load_study(path)
    header = path.read_text().split("\nname:")[0]
    assert "Question" in header and "Expected" in header and "Time" in header, "header comment incomplete"
    assert study.description


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(STUDIES)))
def test_every_study_dry_runs(path, tmp_path):
    proc = subprocess.run(
        [*SWEEPER, "run", str(path), "--dry-run", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "plan" in proc.stdout
    assert not any(tmp_path.iterdir())


def shrink(path: Path, out: Path) -> Path:
    """The same study, tiny: few steps, two points per axis, two values per swept key, one seed."""
    spec = yaml.safe_load(path.read_text())
    trainer = spec.setdefault("trainer", {})
    trainer.update(steps=4, eval_interval=2, eval_batches=1, dtype="fp32")
    trainer.pop("warmup", None)
    if "warmup_tokens" in trainer:
        trainer["warmup_tokens"] = 1024
    for axis, values in spec.get("scale", {}).items():
        spec["scale"][axis] = [4096, 8192] if axis == "tokens" else sorted(values)[:2]
    if any(axis == "tokens" for axis in spec.get("scale", {})):
        trainer.pop("steps")
    for _key, sweep in spec.get("sweep", {}).items():
        if "log2_grid" in sweep:
            lo, _hi = sweep["log2_grid"]
            sweep["log2_grid"] = (
                [lo, lo + 1] if spec.get("search", {}).get("method") != "adaptive" else [-9, -7]
            )
        elif "values" in sweep:
            sweep["values"] = sweep["values"][:2]
    if spec.get("search", {}).get("method") == "optuna":
        spec["search"]["num_samples"] = 2
    spec["seeds"] = [0]
    spec["wandb"] = {"mode": "disabled"}
    target = out / path.name
    target.write_text(yaml.safe_dump(spec))
    return target


@pytest.mark.slow
def test_a_shrunken_copy_of_every_cpu_study_runs_end_to_end(tmp_path):
    order = sorted(CPU, key=lambda p: p.name != "tune_base.yaml")  # transfer_target inherits from tune_base
    for path in order:
        small = shrink(path, tmp_path)
        proc = subprocess.run(
            [*SWEEPER, "run", str(small), "--results", str(tmp_path / "results")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{path.name}: {proc.stderr[-2000:]}"
        name = yaml.safe_load(small.read_text())["name"]
        table = pd.read_parquet(tmp_path / "results" / name / "trials.parquet")
        assert len(table) >= 2 and set(table["status"]) <= {"completed", "diverged"}, path.name
        verify = subprocess.run(
            [
                *SWEEPER,
                "verify",
                "--study",
                name,
                "--results",
                str(tmp_path / "results"),
                "--axis",
                next(iter(yaml.safe_load(small.read_text()).get("scale", {"width": 0}))),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verify.returncode in (0, 2), verify.stderr
