"""Draw every stored study's report figures and list tick labels that overlap, before and after
`plots.untangle_ticks` (which every saved figure goes through).

    python bench/figure_check.py [RESULTS_DIR]      (default: results; reports go to a temporary folder)

Prints one line per figure that needed untangling, and any overlap left (there should be none).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sweeper import plots
from sweeper.report import build_report
from sweeper.store import ResultsStore, study_names


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    seen: list[tuple[str, list[str], list[str]]] = []
    save = plots._save

    def checked(fig, path):
        before = plots.tick_overlaps(fig)
        plots.untangle_ticks(fig)
        seen.append((str(path), before, plots.tick_overlaps(fig)))
        return save(fig, path)

    plots._save = checked
    with tempfile.TemporaryDirectory() as tmp:
        for name in study_names(results):
            store = ResultsStore(results, name)
            if not store.has_record() or store.current_trials().empty:
                continue
            axis = {"lr_depth": "depth", "steps_transfer": "tokens", "lr_batch": "batch_size"}.get(name)
            build_report(store, Path(tmp) / name, axis=axis)
    fixed = [(p, b) for p, b, a in seen if b and not a]
    left = [(p, a) for p, _, a in seen if a]
    print(f"{len(seen)} figures drawn; {len(fixed)} needed untangling; {len(left)} still overlap")
    for path, before in fixed:
        print(f"  untangled {Path(path).parent.name}/{Path(path).name}: {before[0]}")
    for path, after in left:
        print(f"  STILL OVERLAPPING {Path(path).parent.name}/{Path(path).name}: {after}")


if __name__ == "__main__":
    main()
