"""The results store: `results/<study>/` with Parquet tables anyone can open with pandas.

    trials.parquet          one row per trial: id, variant, seed, status, objective, metrics, every config
                            key as a column (named as in TrainConfig), the resolved config as JSON,
                            code version, host, times
    curves/<id>.parquet     one row per evaluation report of that trial (pd.read_parquet("curves") reads all)
    params/<variant>/<point>.parquet   the per-parameter table of each (variant, scale point)
    study.json              the study's spec as last run (scale and swept keys, search, objective, plan size)

The sweep driver is the only writer. Every write goes to a temp file in the same folder and is renamed
over the target, so a crash or a kill never leaves a half-written file and a reader never sees one.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from sweeper.record import StudyRecord
from trainers.atomic import atomic_write, atomic_write_json

DONE_STATUSES = ("completed", "diverged", "stopped")  # finished results: never rerun
STATUSES = (*DONE_STATUSES, "failed")
TRIALS_FILE = "trials.parquet"


@cache
def code_version() -> str:
    from sweeper import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def host() -> str:
    return socket.gethostname()


def plain(value: Any) -> Any:
    """A numpy scalar read from Parquet as the Python value it stands for."""
    return value.item() if hasattr(value, "item") else value


def point_label(scale: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in scale.items()) or "base"


class ResultsStore:
    def __init__(self, root: str | Path, study: str) -> None:
        self.dir = Path(root) / study
        self.study = study
        self._rows: dict[str, dict[str, Any]] | None = None
        self._record: StudyRecord | None = None

    @property
    def trials_path(self) -> Path:
        return self.dir / TRIALS_FILE

    @property
    def curves_dir(self) -> Path:
        return self.dir / "curves"

    def exists(self) -> bool:
        return self.trials_path.exists() or (self.dir / "study.json").exists()

    # --- reading ---
    def _load_rows(self) -> dict[str, dict[str, Any]]:
        if self._rows is None:
            self._rows = {}
            if self.trials_path.exists():
                import pandas as pd

                frame = pd.read_parquet(self.trials_path)
                for row in frame.to_dict("records"):
                    self._rows[row["trial_id"]] = row
        return self._rows

    def trials(self):
        """The trial table as a DataFrame (empty, with an id and a status column, before any trial)."""
        import pandas as pd

        rows = list(self._load_rows().values())
        if not rows:
            return pd.DataFrame({"trial_id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
        return pd.DataFrame(rows)

    def current_trials(self):
        """The trials of each variant's current definition (`study.definition_fingerprint`, listed per
        variant in study.json); rows of an earlier definition stay in the store but are left out of
        analyses. Rows stored without a fingerprint get theirs from their config on reading."""
        trials = self.trials()
        prints = self.study_record().fingerprints
        if trials.empty or not prints or "variant" not in trials.columns:
            return trials
        return trials[self._row_fingerprints(trials) == trials["variant"].map(prints)]

    def definition_counts(self) -> dict[str, int]:
        """How many stored trials belong to each variant's current definition and how many to older ones."""
        trials = self.trials()
        prints = self.study_record().fingerprints
        if trials.empty or "variant" not in trials.columns:
            return {"current": 0, "older": 0}
        if not prints:
            return {"current": len(trials), "older": 0}
        current = int((self._row_fingerprints(trials) == trials["variant"].map(prints)).sum())
        return {"current": current, "older": len(trials) - current}

    def _row_fingerprints(self, trials):
        """Each row's definition fingerprint: as stored, or computed from its config for older rows."""
        stored = trials["fingerprint"] if "fingerprint" in trials.columns else None
        missing = trials.index if stored is None else trials.index[stored.isna()]
        if len(missing) == 0:
            return stored
        from sweeper.identity import definition_fingerprint

        varied = self.study_record().varied_keys
        prints = stored.copy() if stored is not None else trials["trial_id"].map(lambda _: None)
        for index in missing:
            try:
                prints.at[index] = definition_fingerprint(json.loads(trials.at[index, "config"]), varied)
            except (ValueError, TypeError, KeyError):
                prints.at[index] = None  # an unreadable config is no current definition
        return prints

    def status_counts(self) -> dict[str, Any]:
        """`sweeper status --json`: trials per status, the plan size, and how many trials belong to each
        variant's current definition and how many to older ones."""
        statuses = list(self.statuses().values())
        counts: dict[str, Any] = {"study": self.study, "planned": self.study_record().planned}
        counts.update({status: statuses.count(status) for status in STATUSES})
        counts["total"] = len(statuses)
        definitions = self.definition_counts()
        counts["current_definition"] = definitions["current"]
        counts["older_definitions"] = definitions["older"]
        return counts

    def statuses(self) -> dict[str, str]:
        return {tid: row["status"] for tid, row in self._load_rows().items()}

    def done_ids(self, rerun_failed: bool = False) -> set[str]:
        """Trials that a rerun must not run again (failed ones too, unless rerun_failed)."""
        keep = DONE_STATUSES if rerun_failed else STATUSES
        return {tid for tid, status in self.statuses().items() if status in keep}

    def curves(self, trial_ids: Iterable[str] | None = None):
        import pandas as pd

        if not self.curves_dir.exists():
            return pd.DataFrame({"trial_id": pd.Series(dtype=str)})
        files = (
            [self.curves_dir / f"{tid}.parquet" for tid in trial_ids]
            if trial_ids is not None
            else sorted(self.curves_dir.glob("*.parquet"))
        )
        frames = [pd.read_parquet(f) for f in files if f.exists()]
        if not frames:
            return pd.DataFrame({"trial_id": pd.Series(dtype=str)})
        return pd.concat(frames, ignore_index=True)

    def study_record(self) -> StudyRecord:
        """study.json as a typed record (all defaults when there is none yet); read once per store."""
        if self._record is None:
            path = self.dir / "study.json"
            self._record = StudyRecord.of(json.loads(path.read_text()) if path.exists() else None)
        return self._record

    # --- writing (the driver only) ---
    def write_study_record(self, record: StudyRecord | dict[str, Any]) -> None:
        record = StudyRecord.of(record)
        atomic_write_json(self.dir / "study.json", record.as_json())
        self._record = record

    def record(self, row: dict[str, Any], curve: list[dict[str, Any]]) -> None:
        """Add or replace one trial: its curve first, then its row in the trial table."""
        import pandas as pd

        trial_id = row["trial_id"]
        if curve:
            frame = pd.DataFrame([{"trial_id": trial_id, **point} for point in curve])
            atomic_write(
                self.curves_dir / f"{trial_id}.parquet", lambda tmp: frame.to_parquet(tmp, index=False)
            )
        rows = self._load_rows()
        previous = rows.get(trial_id)
        rows[trial_id] = row
        try:
            self._write_trials()
        except BaseException:
            if previous is None:
                rows.pop(trial_id)
            else:
                rows[trial_id] = previous
            raise

    def _write_trials(self) -> None:
        import pandas as pd

        frame = pd.DataFrame(list(self._load_rows().values()))
        atomic_write(self.trials_path, lambda tmp: frame.to_parquet(tmp, index=False))

    def record_params(self, variant: str, scale: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        path = self.dir / "params" / variant / f"{point_label(scale)}.parquet"
        if path.exists():
            return
        frame = pd.DataFrame(rows)
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def study_summaries(root: Path) -> list[dict[str, Any]]:
    """`sweeper list --json`: per study folder under `root`, its trial counts by status and plan size."""
    rows = []
    if not root.is_dir():
        return rows
    for folder in sorted(p for p in root.iterdir() if (p / "study.json").exists()):
        store = ResultsStore(root, folder.name)
        statuses = list(store.statuses().values())
        rows.append(
            {
                "study": folder.name,
                "trials": len(statuses),
                **{status: statuses.count(status) for status in STATUSES},
                "planned": store.study_record().planned,
            }
        )
    return rows


def trial_row(
    *,
    trial_id: str,
    study: str,
    variant: str,
    seed: int,
    scale: dict[str, Any],
    params: dict[str, Any],
    config: dict[str, Any],
    status: str,
    objective: float | None,
    summary: dict[str, Any] | None,
    error: str | None = None,
    started_at: float | None = None,
    finished_at: float | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """One row of the trial table. Config keys are columns under their own names; run results use names
    that no config key has (steps_done, tokens_done) so the two never collide."""
    summary = summary or {}
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "study": study,
        "variant": variant,
        "status": status,
        "objective": objective,
        "final_val_loss": summary.get("final_val_loss"),
        "best_val_loss": summary.get("best_val_loss"),
        "final_train_loss": summary.get("final_train_loss"),
        "initial_loss": summary.get("initial_loss"),
        "steps_done": summary.get("steps"),
        "tokens_done": summary.get("tokens"),
        "wall_s": summary.get("wall_s"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "diverged_at": summary.get("diverged_at"),
        "divergence_reason": summary.get("divergence_reason"),
        "n_params": summary.get("n_params"),
        "device_used": summary.get("device"),
        "dtype_used": summary.get("dtype"),
        "error": error,
        "scale_point": point_label(scale),
        "fingerprint": fingerprint,
        "swept": json.dumps(params, sort_keys=True),
        "config": json.dumps(config, sort_keys=True),
        "code_version": code_version(),
        "host": host(),
        "started_at": started_at,
        "finished_at": finished_at,
    }
    for key, value in config.items():
        row[key] = json.dumps(value) if isinstance(value, list | tuple) else value
    row["seed"] = seed
    return row
