"""How close the dry-run's time estimate comes to what trials really took.

    python bench/estimate_accuracy.py STUDY.yaml [--results results]   # a study already run here
    python bench/estimate_accuracy.py --run [--trials 8]               # runs a small grid study first

For a study in the store, it estimates the whole study as if nothing were stored (measuring the shapes,
or reading them from the cache) and sets each (variant, scale point)'s estimated time per trial beside
the mean `wall_s` its stored trials took (the trial's own time, without Ray), and the estimated wall time
beside the span from the first trial's start to the last one's end (Ray's start-up left out). Run it on
an idle machine: a busy one slows the measurement and the trials alike, but not by the same factor.
With --run it first runs a small grid study (widths 64 and 128, 60 steps) in a temporary folder, with a
fresh measurement cache, and times the `sweeper run` command itself.
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

STUDY = """name: estimate_bench
trainer: {{depth: 2, head_dim: 32, seq_len: 64, batch_size: 16, steps: 60, eval_interval: 20, eval_batches: 4}}
scale: {{width: [64, 128]}}
sweep: {{lr: {{values: {values}}}}}
wandb: {{mode: disabled}}
"""


def compare(study_path: Path, results: Path, command_wall: float | None = None) -> None:
    from sweeper.estimate import RAY_STARTUP_S, RAY_TRIAL_OVERHEAD_S, estimate_study, format_duration
    from sweeper.store import ResultsStore, point_label
    from sweeper.study import load_study

    study = load_study(study_path)
    trials = ResultsStore(results, study.name).current_trials()
    if trials.empty:
        raise SystemExit(f"no trials of {study.name} under {results}: run the study first")
    with tempfile.TemporaryDirectory() as empty:
        est = estimate_study(study, {}, ResultsStore(Path(empty), study.name), progress=print)
    print(
        f"{study.name}: {len(trials)} stored trials, {est.concurrency} at a time, side-by-side x{est.side_by_side[0]:.2f}-{est.side_by_side[1]:.2f}"
    )
    print(f"{'variant':>10} {'scale point':>14} {'trials':>6} {'est. s':>8} {'real s':>8} {'real/est':>8}")
    ratios = []
    for row in est.rows:
        mine = trials[(trials["variant"] == row.variant) & (trials["scale_point"] == point_label(row.point))]
        mine = mine[mine["wall_s"].notna()]
        if mine.empty or row.per_trial_s is None:
            continue
        estimated = row.per_trial_s - RAY_TRIAL_OVERHEAD_S  # wall_s is measured inside the trial
        real = float(mine["wall_s"].mean())
        ratios.append(real / estimated)
        label = point_label(row.point)
        print(
            f"{row.variant:>10} {label:>14} {len(mine):>6} {estimated:>8.1f} {real:>8.1f} {real / estimated:>8.2f}"
        )
    print(f"median real/estimated time per trial: {statistics.median(ratios):.2f}")
    span = float(trials["finished_at"].max() - trials["started_at"].min())
    # The estimate was made for the trials the search planned; scale it to the trials that ran.
    planned = sum(r.to_run for r in est.rows)
    wall = (est.wall_s - RAY_STARTUP_S) * len(trials) / planned if planned else 0.0
    print(
        f"first start to last end: {format_duration(span)} real, {format_duration(wall)} estimated "
        f"for {len(trials)} trials (Ray start-up excluded)"
    )
    if command_wall is not None:
        print(
            f"`sweeper run` took {format_duration(command_wall)}; the dry-run said {format_duration(est.wall_s)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study", nargs="?", type=Path)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--run", action="store_true", help="run a small grid study first, then compare")
    parser.add_argument("--trials", type=int, default=8, help="trials of the --run study (a multiple of 2)")
    args = parser.parse_args()
    if not args.run:
        if args.study is None:
            parser.error("give a study file, or --run")
        compare(args.study, args.results)
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SWEEPER_CACHE_DIR"] = str(Path(tmp) / "cache")  # a fresh measurement
        path = Path(tmp) / "estimate_bench.yaml"
        values = [round(1e-3 * 2 ** (i / 2), 6) for i in range(args.trials // 2)]
        path.write_text(STUDY.format(values=values))
        results = Path(tmp) / "results"
        dry = [sys.executable, "-m", "sweeper.cli", "run", str(path), "--results", str(results)]
        subprocess.run([*dry, "--dry-run"], check=True)
        start = time.perf_counter()
        subprocess.run(dry, check=True, capture_output=True)
        compare(path, results, time.perf_counter() - start)


if __name__ == "__main__":
    main()
