"""CLI latency: `sweeper --help`, and `sweeper best --json` / `status` / `verify --json` on a synthetic store
of 10,000 trials written as the driver writes them.

    python bench/cli_latency.py

Each is timed as a user runs it (a fresh process each), 7 times, interleaved so that the machine's
state at any moment touches all alike; medians are printed. `best` is timed twice: cold (the answer
computed: SWEEPER_NO_CACHE=1, as the first read after a trial lands) and warm (the same question again,
answered from the store's `.cache/`, `sweeper/read_cache.py`). A floor to compare with: `--help`, which
is only Python, Typer and the CLI's imports.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.store import ResultsStore


def once(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", *args],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, **(env or {})},
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr.decode()[-1000:]
    return elapsed


def synthetic_store(root: Path, n: int = 10_000) -> None:
    """4 variants x 10 widths x 25 learning rates x 10 seeds of a bowl whose optimum moves with width, as
    the driver writes them: every column of `trial_row` (each config key, the config and summary JSON,
    the variant's definition fingerprint)."""
    from sweeper.store import trial_row
    from trainers.config import TrainConfig

    rng = np.random.default_rng(0)
    rows = []
    variants = {"sp": "sp", "mup": "mup", "sp_everett": "sp", "ntk": "ntk"}
    for variant, parameterization in variants.items():
        for width in (64 * 2**i for i in range(10)):
            base = {} if parameterization == "sp" else {"base_width": 64}
            config = TrainConfig(parameterization=parameterization, width=width, **base).model_dump(
                mode="json"
            )
            for k in np.linspace(-14, -2, 25):
                for seed in range(10):
                    lr = float(2.0**k)
                    loss = 3.0 + 0.05 * (k + 6 + np.log2(width / 64)) ** 2 + rng.normal(0, 0.01)
                    summary = {"final_val_loss": loss, "best_val_loss": loss, "steps": 300, "wall_s": 40.0}
                    rows.append(
                        trial_row(
                            trial_id=f"{variant}-{width}-{k:.2f}-{seed}",
                            study="big",
                            variant=variant,
                            seed=seed,
                            scale={"width": width},
                            params={"lr": lr},
                            config={**config, "lr": lr, "seed": seed},
                            status="completed",
                            objective=loss,
                            summary=summary,
                            started_at=1.0,
                            finished_at=41.0,
                            fingerprint=f"fp-{variant}",
                        )
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
            "variants": list(variants),
            "fingerprints": {variant: f"fp-{variant}" for variant in variants},
        }
    )


def main(repeats: int = 7) -> None:
    import torch

    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "?")
    print(f"CPU: {cpu}, capability {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores")
    cold = {"SWEEPER_NO_CACHE": "1"}
    cases = {
        "sweeper --help": (["--help"], None),
        "best --json, cold (computed)": (["best", "--study", "big", "--json"], cold),
        "best --json, warm (cached)": (["best", "--study", "big", "--json"], None),
        "status --study big": (["status", "--study", "big"], None),
        "verify --json, cold": (["verify", "--study", "big", "--json"], cold),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_store(Path(tmp) / "results")
        once(["best", "--study", "big", "--json"], cwd=Path(tmp))  # fills the cache for the warm case
        for _ in range(repeats):
            for name, (args, env) in cases.items():
                times[name].append(once(args, cwd=Path(tmp), env=env))
    floor = statistics.median(times["sweeper --help"])
    print(
        f"median of {repeats} fresh processes each, on 10,000 trials (4 variants x 10 widths x 25 lr x 10 seeds):"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:32s} {median:6.3f} s   ({median / floor:4.2f}x --help)")
    print("aims: best --json under 0.5 s; --help under 0.5 s")


if __name__ == "__main__":
    main()
