"""Print the README's "What the studies show" table from what bench/run_cpu_studies.sh recorded.

    python bench/studies_table.py [RESULTS_DIR]      (default: results)

One row per study and swept key: each variant's verdict with alpha and its 90% interval (for a study with
several scale axes, its joint law: each axis's exponent, interval and verdict), the best loss at the
largest scale point, the study's wall time and the CPU it ran on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    evidence = results / "_evidence"
    cpu = " ".join((evidence / "cpu.txt").read_text().split()) if (evidence / "cpu.txt").exists() else "?"
    print(f"CPU: {cpu}\n")
    print(
        "| study | question | verdict per variant: alpha [90% interval] | best loss at the largest scale | wall |"
    )
    print("|---|---|---|---|---|")
    for study in sorted((f.stem for f in evidence.glob("*.wall")), key=_order):
        wall_file = evidence / f"{study}.wall"
        spec = json.loads((results / study / "study.json").read_text())
        source = Path("studies") / f"{study}.yaml"  # the current wording, if the study file is here
        description = (
            yaml.safe_load(source.read_text())["description"] if source.exists() else spec["description"]
        )
        wall = _minutes(wall_file.read_text().split(",")[0])
        verify_file = evidence / f"{study}.verify.json"
        rows = (
            json.loads(verify_file.read_text()) if verify_file.exists() and verify_file.stat().st_size else []
        )
        if not rows:
            best = json.loads((evidence / f"{study}.best.json").read_text())
            top = min(best, key=lambda r: r["objective"]) if best else None
            values = ", ".join(f"{k} {v:.3g}" for k, v in top["best"].items()) if top else ""
            summary = f"best {values} at {top['objective']:.3f}" if top else "no result"
            print(f"| {study} | {description} | {summary} | | {wall} |")
            continue
        for hparam in dict.fromkeys(r["hparam"] for r in rows):
            verdicts, losses = [], []
            shown: set[str] = set()
            for row in (r for r in rows if r["hparam"] == hparam):
                if row.get("alphas"):  # a multi-axis study: its joint law, once per variant
                    if row["variant"] in shown:
                        continue
                    shown.add(row["variant"])
                    parts = [
                        f"{axis} **{row['joint_verdicts'][axis]}** {alpha:+.2f} "
                        f"[{row['alphas_ci'][axis][0]:+.2f}, {row['alphas_ci'][axis][1]:+.2f}]"
                        for axis, alpha in row["alphas"].items()
                    ]
                    verdicts.append(f"{row['variant']} (joint law): " + ", ".join(parts))
                    corner = [r for r in rows if r["variant"] == row["variant"] and r["hparam"] == hparam][-1]
                    last = (corner.get("best_loss") or [None])[-1]
                    losses.append(
                        f"{row['variant']} {last:.3f}" if last is not None else f"{row['variant']} -"
                    )
                    continue
                ci = row.get("alpha_ci")
                alpha = "n/a" if row["alpha"] is None else f"{row['alpha']:+.2f}"
                interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
                verdicts.append(f"{row['variant']}: **{row['verdict']}** {alpha}{interval}")
                last = (row.get("best_loss") or [None])[-1]
                losses.append(f"{row['variant']} {last:.3f}" if last is not None else f"{row['variant']} -")
            several = len({r["hparam"] for r in rows}) > 1
            question = description + (f" ({hparam})" if several else "")
            print(f"| {study} | {question} | {'; '.join(verdicts)} | {', '.join(losses)} | {wall} |")


ORDER = ["lr_width", "lr_depth", "tune_base", "transfer_target", "everett_width", "embed_lr_width",
         "mup_ablation", "steps_transfer", "warmup_width", "gradclip_width", "multipliers_width"]  # fmt: skip


def _order(study: str) -> tuple[int, str]:
    return (ORDER.index(study) if study in ORDER else len(ORDER), study)


def _minutes(text: str) -> str:
    """ "1831 s" -> "30 min 31 s"."""
    seconds = int(text.split()[0])
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


if __name__ == "__main__":
    main()
