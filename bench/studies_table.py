"""Print the README's "What the studies show" table from what bench/run_cpu_studies.sh recorded.

    python bench/studies_table.py [RESULTS_DIR]      (default: results)

One row per study and swept key: each variant's verdict with alpha and its 90% interval, the best loss at
the largest scale point, the study's wall time and the CPU it ran on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    evidence = results / "_evidence"
    cpu = " ".join((evidence / "cpu.txt").read_text().split()) if (evidence / "cpu.txt").exists() else "?"
    print(f"CPU: {cpu}\n")
    print(
        "| study | question | verdict per variant: alpha [90% interval] | best loss at the largest scale | wall |"
    )
    print("|---|---|---|---|---|")
    for wall_file in sorted(evidence.glob("*.wall")):
        study = wall_file.stem
        spec = json.loads((results / study / "study.json").read_text())
        wall = wall_file.read_text().split(",")[0]
        verify_file = evidence / f"{study}.verify.json"
        rows = (
            json.loads(verify_file.read_text()) if verify_file.exists() and verify_file.stat().st_size else []
        )
        if not rows:
            best = json.loads((evidence / f"{study}.best.json").read_text())
            top = min(best, key=lambda r: r["objective"]) if best else None
            summary = f"best {top['best']} at {top['objective']:.3f}" if top else "no result"
            print(f"| {study} | {spec['description']} | {summary} | | {wall} |")
            continue
        for hparam in dict.fromkeys(r["hparam"] for r in rows):
            verdicts, losses = [], []
            for row in (r for r in rows if r["hparam"] == hparam):
                ci = row.get("alpha_ci")
                alpha = "n/a" if row["alpha"] is None else f"{row['alpha']:+.2f}"
                interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
                verdicts.append(f"{row['variant']}: **{row['verdict']}** {alpha}{interval}")
                last = (row.get("best_loss") or [None])[-1]
                losses.append(f"{row['variant']} {last:.3f}" if last is not None else f"{row['variant']} -")
            question = spec["description"] + (f" ({hparam})" if len(rows) > 2 else "")
            print(f"| {study} | {question} | {'; '.join(verdicts)} | {', '.join(losses)} | {wall} |")


if __name__ == "__main__":
    main()
