"""Orchestration overhead: a study of 64 near-empty trials (a study's size: lr_width runs 100), against the
ideal on this machine's cores.

    python bench/orchestration_overhead.py [--trials 16]

Each trial trains a tiny model for 2 steps. The ideal wall time is the trials' own time (as each measured
itself) spread over the cores; the overhead per trial is what `sweeper run` adds beyond that, with and
without Ray's start-up. Run twice; the table gives both runs and the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

STUDY = """name: overhead
trainer: {{width: 16, depth: 1, head_dim: 16, seq_len: 16, batch_size: 2, steps: 2, eval_interval: 2, eval_batches: 1}}
sweep: {{lr: {{values: {values}}}}}
wandb: {{mode: disabled}}
"""


def one_run(trials: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(STUDY.format(values=[round(1e-3 * (1 + i / 100), 6) for i in range(trials)]))
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", "run", str(path)], cwd=tmp, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        table = pd.read_parquet(Path(tmp) / "results" / "overhead" / "trials.parquet")
        cores = os.cpu_count() or 1
        ideal = table["wall_s"].sum() / cores
        span = (
            table["finished_at"].max() - table["started_at"].min()
        )  # from the first trial start to the last end
    return {
        "wall": wall,
        "ideal": ideal,
        "span": span,
        "per_trial": (wall - ideal) / trials,
        "per_trial_no_startup": (span - ideal) / trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs = [one_run(args.trials) for _ in range(args.repeats)]
    print(f"{args.trials} near-empty trials on {os.cpu_count()} cores, {args.repeats} runs")
    print(
        f"{'run':>4} {'wall s':>8} {'ideal s':>8} {'first start..last end s':>24} {'overhead/trial s':>17} "
        f"{'(excl. Ray start-up)':>21}"
    )
    for i, r in enumerate(runs, 1):
        print(
            f"{i:>4} {r['wall']:>8.1f} {r['ideal']:>8.2f} {r['span']:>24.1f} {r['per_trial']:>17.2f} "
            f"{r['per_trial_no_startup']:>21.2f}"
        )
    median = statistics.median(r["per_trial"] for r in runs)
    median_no = statistics.median(r["per_trial_no_startup"] for r in runs)
    print(
        f"median overhead per trial: {median:.2f} s, {median_no:.2f} s excluding start-up (aim: under 0.5 s)"
    )


if __name__ == "__main__":
    main()
