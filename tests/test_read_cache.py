"""`best`, `verify` and `status` answer a repeated question from the store's `.cache/`, and never with an
answer the store has moved past."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sweeper import read_cache
from sweeper.store import ResultsStore

SWEEPER = [sys.executable, "-m", "sweeper.cli"]


def write_store(root: Path, best_lr_log2: float = -6.0) -> ResultsStore:
    store = ResultsStore(root, "cached")
    store.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for width in (64, 128, 256):
        for k in range(-10, -2):
            for seed in (0, 1):
                loss = 3.0 + 0.05 * (k - best_lr_log2) ** 2 + 0.001 * seed
                rows.append(
                    {
                        "trial_id": f"{width}-{k}-{seed}",
                        "variant": "mup",
                        "width": width,
                        "lr": 2.0**k,
                        "seed": seed,
                        "status": "completed",
                        "objective": loss,
                        "scale_point": f"width={width}",
                        "swept": json.dumps({"lr": 2.0**k}),
                    }
                )
    pd.DataFrame(rows).to_parquet(store.trials_path, index=False)
    store.write_study_record(
        {"name": "cached", "scale_keys": ["width"], "swept_keys": ["lr"], "objective": {"mode": "min"}}
    )
    return store


def run(*args: str, cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(
        [*SWEEPER, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_repeated_read_is_the_cached_answer_and_a_changed_store_is_read_again(tmp_path):
    store = write_store(tmp_path / "results")
    first = run("best", "--study", "cached", "--json", cwd=tmp_path)
    cached = list((store.dir / read_cache.CACHE_DIR).glob("best-*.json"))
    assert len(cached) == 1
    assert run("best", "--study", "cached", "--json", cwd=tmp_path) == first
    assert run("best", "--study", "cached", "--json", cwd=tmp_path, env={"SWEEPER_NO_CACHE": "1"}) == first
    assert {r["best"]["lr"] for r in json.loads(first)} == {2.0**-6}

    time.sleep(0.01)  # a new mtime even on coarse clocks; size changes too
    write_store(tmp_path / "results", best_lr_log2=-8.0)
    moved = json.loads(run("best", "--study", "cached", "--json", cwd=tmp_path))
    assert {r["best"]["lr"] for r in moved} == {2.0**-8}  # not the cached 2^-6

    verify = run("verify", "--study", "cached", "--json", cwd=tmp_path)
    assert run("verify", "--study", "cached", "--json", cwd=tmp_path) == verify
    assert abs(json.loads(verify)[0]["optimum_log2"][0] + 8.0) < 1e-6
    status = run("status", "--study", "cached", "--json", cwd=tmp_path)
    assert json.loads(status)["completed"] == 48


def test_a_damaged_cache_entry_is_computed_again(tmp_path):
    store = write_store(tmp_path / "results")
    first = run("best", "--study", "cached", "--json", cwd=tmp_path)
    for entry in (store.dir / read_cache.CACHE_DIR).glob("best-*.json"):
        entry.write_text("{not json")
    assert run("best", "--study", "cached", "--json", cwd=tmp_path) == first


def test_the_key_covers_the_question_the_store_and_the_code(tmp_path):
    store = write_store(tmp_path / "results")
    key = read_cache.cache_key(store.dir, "best", None)
    assert read_cache.cache_key(store.dir, "best", None) == key
    assert read_cache.cache_key(store.dir, "best", {"width": 1024.0}) != key
    os.utime(store.trials_path, ns=(1, 1))
    assert read_cache.cache_key(store.dir, "best", None) != key
