"""The results store: atomic writes, upserts, plain pandas reads."""

from __future__ import annotations

import json
import os
import stat

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


def test_a_damaged_trial_table_is_one_line_naming_the_file_and_the_fix(tmp_path):
    from sweeper.errors import StoreError

    store = ResultsStore(tmp_path, "s")
    store.record(row("a"), [{"step": 0, "val_loss": 5.5}])
    store.write_study_record({"source": "studies/s.yaml"})
    data = store.trials_path.read_bytes()
    for damaged in (data[: len(data) // 2], b"garbage", b""):
        store.trials_path.write_bytes(damaged)
        with pytest.raises(StoreError) as caught:
            ResultsStore(tmp_path, "s").trials()
        message = str(caught.value)
        assert "\n" not in message and str(store.trials_path) in message
        assert f"mv {store.trials_path} {store.trials_path}.corrupt" in message
        assert "sweeper run studies/s.yaml" in message and "runs the lost trials again" in message
    pd.DataFrame({"x": [1]}).to_parquet(store.trials_path)  # a Parquet file, but not a trial table
    with pytest.raises(StoreError, match="no trial_id or status column"):
        ResultsStore(tmp_path, "s").statuses()


def test_a_damaged_study_record_is_one_line_naming_its_source(tmp_path):
    from sweeper.errors import StoreError

    store = ResultsStore(tmp_path, "s")
    store.record(row("a"), [])
    path = store.record_path
    for text, why in (
        ('{"source": "studies/s.yaml", "scale_keys": ', "not valid JSON"),
        ('{"source": "studies/s.yaml", "scale_keys": 3}', "scale_keys"),
        ("[1, 2]", "a JSON list"),
        (b"\xff\xfe{", "not UTF-8"),
    ):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(StoreError) as caught:
            ResultsStore(tmp_path, "s").study_record()
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and why in message
        assert f"mv {path} {path}.corrupt" in message
        if isinstance(text, str) and "studies/s.yaml" in text:  # named even in a damaged file
            assert "sweeper run studies/s.yaml" in message


def test_a_missing_study_record_is_refused_only_by_the_readers_that_need_it(tmp_path):
    from sweeper.errors import StoreError
    from sweeper.store import study_summaries

    store = ResultsStore(tmp_path, "s")
    store.record(row("a"), [])
    assert store.status_counts()["total"] == 1 and store.status_counts()["planned"] is None
    with pytest.raises(StoreError, match=r"study\.json: missing"):
        store.required_record()
    assert [r["study"] for r in study_summaries(tmp_path)] == ["s"]  # listed by its trial table


def test_study_summaries_list_an_unreadable_study_with_its_reason(tmp_path):
    from sweeper.store import study_summaries

    good, bad = ResultsStore(tmp_path, "good"), ResultsStore(tmp_path, "bad")
    good.record(row("a"), [])
    good.write_study_record({"planned": 4})
    bad.record(row("b"), [])
    bad.write_study_record({"planned": 2})
    bad.trials_path.write_bytes(b"PAR1 half a file")
    rows = {r["study"]: r for r in study_summaries(tmp_path)}
    assert rows["good"]["trials"] == 1 and rows["good"]["planned"] == 4 and "error" not in rows["good"]
    assert rows["bad"]["trials"] is None and rows["bad"]["planned"] == 2
    assert "trials.parquet" in rows["bad"]["error"]


def test_an_unreadable_store_is_a_store_error(tmp_path, monkeypatch):
    from sweeper.errors import StoreError

    store = ResultsStore(tmp_path, "s")
    store.record(row("a"), [{"step": 0, "val_loss": 5.5}])
    store.write_study_record({})

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pd, "read_parquet", denied)
    with pytest.raises(StoreError, match="cannot read it \\(Permission denied\\)"):
        ResultsStore(tmp_path, "s").trials()
    fresh = ResultsStore(tmp_path, "s")
    assert fresh.curves().empty and fresh.unreadable_curves  # a curve only draws a figure: left out


def test_store_files_get_the_permissions_of_a_plain_open(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the files must end up as `open` would make them."""
    previous = os.umask(0o022)
    try:
        store = ResultsStore(tmp_path, "s")
        store.record(row("a", objective=1.0), [{"step": 1, "val_loss": 2.0}])
        store.write_study_record({"name": "s"})
    finally:
        os.umask(previous)
    for path in (store.trials_path, store.curves_dir / "a.parquet", store.dir / "study.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
