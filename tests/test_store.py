"""The results store: atomic writes, upserts, plain pandas reads."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sweeper.store import ResultsStore, trial_row
from trainers.config import TrainConfig


def row(trial_id: str, status: str = "completed", objective: float | None = 2.0, lr: float = 0.01) -> dict:
    cfg = TrainConfig(lr=lr, width=64)
    return trial_row(
        trial_id=trial_id,
        study="s",
        variant="sp",
        seed=0,
        scale={"width": 64},
        params={"lr": lr},
        config=cfg.model_dump(mode="json"),
        status=status,
        objective=objective,
        summary={"final_val_loss": objective, "steps": 10, "tokens": 100, "status": status},
    )


def test_rows_and_curves_read_back_with_plain_pandas(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record(row("a"), [{"step": 0, "val_loss": 5.5}, {"step": 10, "val_loss": 2.0}])
    store.record(row("b", lr=0.02), [{"step": 0, "val_loss": 5.5}])
    trials = pd.read_parquet(tmp_path / "s" / "trials.parquet")
    assert list(trials["trial_id"]) == ["a", "b"]
    assert {
        "width",
        "lr",
        "seed",
        "status",
        "objective",
        "config",
        "code_version",
        "host",
        "steps_done",
    } <= set(trials.columns)
    assert trials.loc[1, "lr"] == 0.02 and json.loads(trials.loc[1, "swept"]) == {"lr": 0.02}
    curves = pd.read_parquet(tmp_path / "s" / "curves")
    assert len(curves) == 3 and set(curves["trial_id"]) == {"a", "b"}
    assert ResultsStore(tmp_path, "s").statuses() == {"a": "completed", "b": "completed"}


def test_recording_the_same_trial_replaces_its_row(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record(row("a", status="failed", objective=None), [])
    assert store.done_ids() == {"a"} and store.done_ids(rerun_failed=True) == set()
    store.record(row("a"), [])
    fresh = ResultsStore(tmp_path, "s")
    assert len(fresh.trials()) == 1 and fresh.statuses() == {"a": "completed"}


def test_a_crash_during_a_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path, "s")
    store.record(row("a"), [])
    before = (tmp_path / "s" / "trials.parquet").read_bytes()

    def crash(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        store.record(row("b"), [])
    monkeypatch.undo()
    assert (tmp_path / "s" / "trials.parquet").read_bytes() == before
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.endswith(".tmp")]
    assert store.statuses() == {"a": "completed"}  # the in-memory table rolled back too
    assert list(pd.read_parquet(tmp_path / "s" / "trials.parquet")["trial_id"]) == ["a"]


def test_params_table_is_stored_once_per_variant_and_point(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_params("mup", {"width": 128}, [{"name": "x", "lr": 1.0}])
    store.record_params("mup", {"width": 128}, [{"name": "y", "lr": 2.0}])
    frame = pd.read_parquet(tmp_path / "s" / "params" / "mup" / "width=128.parquet")
    assert list(frame["name"]) == ["x"]


def test_analyses_use_the_current_definition_of_each_variant(tmp_path):
    store = ResultsStore(tmp_path, "s")
    old, new = row("old", objective=1.0), row("new", objective=3.0, lr=0.02)
    old["fingerprint"], new["fingerprint"] = "before", "after"
    store.record(old, [])
    store.record(new, [])
    store.write_study_record({"fingerprints": {"sp": "after"}})
    assert list(store.current_trials()["trial_id"]) == ["new"]
    assert len(store.trials()) == 2  # nothing is deleted
