"""Fault injection, for real: two drivers on one study, signals at any moment, a trial that fails in its
worker, a killed driver's Ray, a full disk, a corrupt store. Nothing may be lost, nothing may print a
traceback, and every stop ends with the command that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sweeper.local_ray import ray_temp_dir

SWEEPER = [sys.executable, "-m", "sweeper.cli"]
TRAINER = "{depth: 1, width: 32, head_dim: 16, seq_len: 32, batch_size: 8, steps: %d, eval_interval: %d, eval_batches: 1}"


def write_study(folder: Path, name: str, body: str, steps: int = 12) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntrainer: {TRAINER % (steps, max(steps // 2, 1))}\nwandb: {{mode: disabled}}\n{body}"
    )
    return path


def start(path: Path, results: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*SWEEPER, "run", str(path), "--results", str(results), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=path.parent,
    )


def run(path: Path, results: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SWEEPER, "run", str(path), "--results", str(results), *extra],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=timeout,
    )


def wait_for(condition, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def holder(results: Path, study: str) -> dict:
    try:
        return json.loads((results / study / ".driver.lock").read_text() or "{}")
    except (OSError, ValueError):
        return {}


def stored(results: Path, study: str) -> pd.DataFrame:
    path = results / study / "trials.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame({"trial_id": [], "status": []})


def ray_leftovers(results: Path, study: str) -> tuple[list[int], list[Path]]:
    """Processes whose command line names one of this study's Ray folders, and those folders."""
    prefix = str(ray_temp_dir(results / study))
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if prefix in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    folders = [p for p in Path("/tmp").glob(Path(prefix).name + "-*")]
    return pids, folders


def no_traceback(text: str) -> bool:
    return "Traceback" not in text


GRID = "sweep: {lr: {log2_grid: [-10, -7]}}\nseeds: [0, 1]\n"  # 8 trials


def test_a_second_driver_of_a_study_is_refused_or_waits_and_nothing_is_lost(tmp_path):
    path, results = write_study(tmp_path, "two", GRID, steps=30), tmp_path / "results"
    first = start(path, results)
    try:
        wait_for(lambda: holder(results, "two").get("pid") == first.pid, what="the first driver's lock")
        refused = run(path, results, timeout=60)
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("error:") and f"pid {first.pid}" in line and "--wait" in line
        waited = start(path, results, "--wait")
        _, first_err = first.communicate(timeout=300)
        _, waited_err = waited.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, first_err[-2000:]
    assert waited.returncode == 0 and "nothing to run" in waited_err, waited_err[-2000:]
    assert "waiting for pid" in waited_err
    table = stored(results, "two")
    assert len(table) == 8 and table["trial_id"].is_unique and set(table["status"]) == {"completed"}


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_the_first_trial_finishes_stops_cleanly(tmp_path, sig, code):
    path, results = write_study(tmp_path, "early", GRID, steps=200), tmp_path / "results"
    proc = start(path, results)
    wait_for(lambda: holder(results, "early").get("ray_dir"), what="Ray to start")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert no_traceback(err), err[-3000:]
    assert "resume with the same command" in err
    assert len(stored(results, "early")) < 8
    wait_for(lambda: ray_leftovers(results, "early") == ([], []), timeout=20, what="Ray to be gone")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_as_soon_as_the_driver_starts_stops_cleanly(tmp_path, sig, code):
    """As soon as the driver holds the lock: before or while Ray starts."""
    path, results = write_study(tmp_path, "pre", GRID, steps=12), tmp_path / "results"
    proc = start(path, results)
    wait_for(lambda: holder(results, "pre").get("pid") == proc.pid, what="the lock")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert no_traceback(err), err[-3000:]
    assert "resume with the same command" in err or "interrupted before any trial ran" in err


@pytest.mark.slow
def test_a_killed_driver_leaves_no_ray_behind_and_the_next_driver_resumes(tmp_path):
    path, results = write_study(tmp_path, "k9", GRID, steps=200), tmp_path / "results"
    proc = start(path, results)
    wait_for(lambda: holder(results, "k9").get("ray_dir"), what="Ray to start")
    ray_dir = Path(holder(results, "k9")["ray_dir"])
    wait_for(lambda: ray_leftovers(results, "k9")[0], what="Ray's processes")
    proc.kill()
    proc.communicate(timeout=60)
    # The watchdog notices within a second or two and removes what the driver's Ray left.
    wait_for(lambda: ray_leftovers(results, "k9") == ([], []), timeout=30, what="the watchdog")
    assert not ray_dir.exists()
    again = run(path, results)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(stored(results, "k9")) == 8


@pytest.mark.slow
def test_a_trial_that_fails_in_its_worker_is_recorded_and_the_study_goes_on(tmp_path):
    """torch.compile needs a C++ compiler for CPU kernels; with none there, the compiled trial fails in
    its worker (a real failure no validation can see: the compiler is the worker machine's)."""
    path = write_study(tmp_path, "fail", "sweep: {compile: {values: [false, true]}}\n", steps=4)
    results = tmp_path / "results"
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    proc = subprocess.run(
        [*SWEEPER, "run", str(path), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert no_traceback(proc.stderr), proc.stderr[-3000:]
    table = stored(results, "fail").set_index("compile")
    assert table.loc[False, "status"] == "completed"
    assert table.loc[True, "status"] == "failed"
    error = table.loc[True, "error"]
    assert "no-such-compiler" in error or "Compiler" in error or "compiler" in error, error
    details = Path(error.split("(traceback: ")[1].rstrip(")"))
    text = details.read_text()
    assert 'File "' in text and "train.py" in text  # the worker's stack, down to the trainer
    assert "first failed trial:" in proc.stderr and "1 failed" in proc.stderr


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()[:200]}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_the_study_keeps_every_trial_and_the_rerun_resumes(tmp_path, small_disk):
    path, results = write_study(tmp_path, "full", GRID, steps=30), small_disk / "results"
    proc = start(path, results, "--max-concurrent", "1")
    wait_for(lambda: len(stored(results, "full")) >= 1, timeout=180, what="the first trial")
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte, unbuffered
        for size in (1 << 16, 1 << 10, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    _, err = proc.communicate(timeout=300)
    kept = stored(results, "full")
    assert proc.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "resume" in errors[0], err[-3000:]
    assert no_traceback(err), err[-3000:]
    assert 1 <= len(kept) < 8 and set(kept["status"]) == {"completed"}
    filler.unlink()
    again = run(path, results)
    assert again.returncode == 0, again.stderr[-3000:]
    final = stored(results, "full")
    assert len(final) == 8 and set(kept["trial_id"]) <= set(final["trial_id"])


def test_a_corrupt_trial_table_stops_a_run_with_one_line_naming_it(tmp_path):
    path, results = (
        write_study(tmp_path, "bad", "sweep: {lr: {values: [0.001]}}\n", steps=4),
        tmp_path / "results",
    )
    assert run(path, results).returncode == 0
    table = results / "bad" / "trials.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    proc = run(path, results, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error:") and "trials.parquet" in line


def test_a_crash_inside_sweeper_train_is_one_line_and_exit_1(tmp_path):
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    args = ["compile=true", "steps=2", "width=32", "depth=1", "n_heads=2", "seq_len=16", "batch_size=2"]
    proc = subprocess.run(
        [*SWEEPER, "train", *(x for a in args for x in ("--set", a))],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("error: training failed: InductorError") and "SWEEPER_DEBUG=1" in line
