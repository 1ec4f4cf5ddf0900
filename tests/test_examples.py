"""The example in examples/gpt2_mup: a Hugging Face GPT-2 under SP and muP, swept by sweeper through
`trainer_entry` with the rules from `trainers.parameterize`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweeper.study import load_study

pytest.importorskip("transformers")

EXAMPLE = Path(__file__).parent.parent / "examples" / "gpt2_mup"
SWEEPER = [sys.executable, "-m", "sweeper.cli"]


def copy_example(tmp_path: Path) -> Path:
    for name in ("study.yaml", "train_gpt2.py"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    return tmp_path


def test_the_example_trainer_is_short_and_its_study_validates():
    assert len((EXAMPLE / "train_gpt2.py").read_text().splitlines()) < 100
    study = load_study(EXAMPLE / "study.yaml")
    assert study.trainer_entry == "train_gpt2:train" and set(study.variants) == {"sp", "mup"}


def test_the_example_trainer_runs_one_short_trial_by_hand(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from train_gpt2 import train

    study = load_study(EXAMPLE / "study.yaml")
    config = study.trial_config("mup", {"width": 64}, {"lr": 2.0**-7}, 0).model_dump()
    config.update(steps=4, eval_interval=2, eval_batches=1, warmup=2)
    points: list[dict] = []
    result = train(config, points.append)
    assert result["status"] == "completed" and [p["step"] for p in points] == [0, 2, 4]
    assert points[-1]["val_loss"] < points[0]["val_loss"]


@pytest.mark.slow
def test_the_example_study_runs_and_sp_and_mup_are_one_model_at_the_base_width(tmp_path):
    where = copy_example(tmp_path)
    run = subprocess.run(
        [*SWEEPER, "run", "study.yaml"], capture_output=True, text=True, cwd=where, timeout=1500
    )
    assert run.returncode == 0, run.stderr[-3000:]
    trials = pd.read_parquet(where / "results" / "gpt2_mup" / "trials.parquet")
    assert set(trials["status"]) <= {"completed", "diverged"}, trials["error"].dropna().tolist()[:3]
    base = trials[trials["width"] == 64].pivot_table(index="lr", columns="variant", values="objective")
    both = base.dropna()
    assert len(both) >= 2 and (both["sp"] == both["mup"]).all()  # bit-identical at the base width
    verify = json.loads(
        subprocess.run(
            [*SWEEPER, "verify", "--study", "gpt2_mup", "--json"], capture_output=True, text=True, cwd=where
        ).stdout
    )
    assert {row["variant"] for row in verify} == {"sp", "mup"}
    assert all(row["bracketed_all"] for row in verify)
