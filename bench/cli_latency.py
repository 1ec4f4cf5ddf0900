"""CLI latency: `sweeper --help`, and `sweeper best` on a synthetic store of 10,000 trials.

    python bench/cli_latency.py

Both are timed as a user runs them (a fresh process each), 5 times; medians are printed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.store import ResultsStore


def timed(args: list[str], cwd: Path | None = None, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "sweeper.cli", *args], cwd=cwd, capture_output=True)
        times.append(time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr.decode()[-1000:]
    return statistics.median(times)


def synthetic_store(root: Path, n: int = 10_000) -> None:
    """4 variants x 10 widths x 25 learning rates x 10 seeds of a bowl whose optimum moves with width."""
    rng = np.random.default_rng(0)
    rows = []
    for variant in ("sp", "mup", "sp_everett", "ntk"):
        for width in (64 * 2**i for i in range(10)):
            for k in np.linspace(-14, -2, 25):
                for seed in range(10):
                    lr = float(2.0**k)
                    loss = 3.0 + 0.05 * (k + 6 + np.log2(width / 64)) ** 2 + rng.normal(0, 0.01)
                    rows.append(
                        {
                            "trial_id": f"{variant}-{width}-{k:.2f}-{seed}",
                            "study": "big",
                            "variant": variant,
                            "status": "completed",
                            "objective": loss,
                            "final_val_loss": loss,
                            "width": width,
                            "lr": lr,
                            "seed": seed,
                            "scale_point": f"width={width}",
                            "swept": json.dumps({"lr": lr}, sort_keys=True),
                        }
                    )
    store = ResultsStore(root, "big")
    store.dir.mkdir(parents=True)
    pd.DataFrame(rows[:n]).to_parquet(store.trials_path, index=False)
    store.write_study_record(
        {
            "name": "big",
            "scale_keys": ["width"],
            "swept_keys": ["lr"],
            "objective": {"mode": "min"},
            "planned": n,
        }
    )


def main() -> None:
    help_s = timed(["--help"])
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_store(Path(tmp) / "results")
        best_s = timed(["best", "--study", "big", "--json"], cwd=Path(tmp))
    print(f"sweeper --help: median {help_s:.3f} s (aim: under 0.5 s)")
    print(f"sweeper best --json on 10,000 trials: median {best_s:.3f} s (aim: under 1 s)")


if __name__ == "__main__":
    main()
