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
import re
import shlex
import socket
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from sweeper.errors import StoreError
from sweeper.record import StudyRecord
from trainers.atomic import atomic_write, atomic_write_json

DONE_STATUSES = ("completed", "diverged", "stopped")  # finished results: never rerun
STATUSES = (*DONE_STATUSES, "failed")
TRIALS_FILE = "trials.parquet"
RECORD_FILE = "study.json"


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


# What `best` and `verify` read of each trial (with the study's scale and swept keys): the rest of a row
# (its config and summary JSON, every config key) is most of a large store and none of their answer.
ANALYSIS_COLUMNS = (
    "variant",
    "status",
    "objective",
    "scale_point",
    "swept",
    "seed",
    "fingerprint",
    "dtype_used",
)


def analysis_columns(record: StudyRecord) -> tuple[str, ...]:
    return (*ANALYSIS_COLUMNS, *record.scale_keys, *record.swept_keys)


def point_label(scale: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in scale.items()) or "base"


class ResultsStore:
    def __init__(self, root: str | Path, study: str) -> None:
        self.dir = Path(root) / study
        self.study = study
        self._rows: dict[str, dict[str, Any]] | None = None
        self._frames: dict[tuple[str, ...] | None, Any] = {}  # read-only views: column set -> frame
        self._record: StudyRecord | None = None
        self.unreadable_curves: list[Path] = []

    @property
    def trials_path(self) -> Path:
        return self.dir / TRIALS_FILE

    @property
    def curves_dir(self) -> Path:
        return self.dir / "curves"

    @property
    def record_path(self) -> Path:
        return self.dir / RECORD_FILE

    def exists(self) -> bool:
        return _exists(self.trials_path) or _exists(self.record_path)

    # --- reading ---
    # Every read either answers or raises a StoreError: one line naming the file and what to do.
    def _load_rows(self) -> dict[str, dict[str, Any]]:
        """The rows as dicts, for the driver that adds to them (readers use `trials`, which skips this)."""
        if self._rows is None:
            frame = self._read_trials() if _exists(self.trials_path) else None
            rows: dict[str, dict[str, Any]] = {}
            for row in frame.to_dict("records") if frame is not None else ():
                rows[row["trial_id"]] = row
            self._rows = rows
            self._frames.clear()
        return self._rows

    def _read_trials(self, columns: Iterable[str] | None = None):
        """trials.parquet as a DataFrame (only `columns` that it has, with trial_id and status, when
        given); a StoreError when it cannot be read or is not a trial table."""
        import pandas as pd
        import pyarrow
        import pyarrow.parquet as pq

        path = self.trials_path
        if not path.is_file():
            why = "a folder, not a file"
        else:
            try:
                names = pq.read_schema(path).names
                wanted = None
                if columns is not None:
                    wanted = list(dict.fromkeys(c for c in ("trial_id", "status", *columns) if c in names))
                frame = pd.read_parquet(path, columns=wanted)
            except PermissionError as err:
                raise StoreError(f"{path}: cannot read it ({err.strerror}); check its permissions") from None
            except (OSError, ValueError, pyarrow.ArrowException):
                why = "truncated or damaged (not a readable Parquet file)"
            else:
                missing = [c for c in ("trial_id", "status") if c not in frame.columns]
                if not missing:
                    return frame
                why = f"not a trial table (no {' or '.join(missing)} column)"
        # The trial rows live in this one file: curves/<id>.parquet holds only the curves, so nothing
        # rebuilds the rows, and a rerun plans every trial whose row is missing (sweeper/stored.py).
        raise StoreError(
            f"{path}: {why}. The trial rows are only in this file (curves/ keeps the curves, not the rows), "
            f"so they cannot be rebuilt: move it aside (mv {path} {path}.corrupt) and rerun "
            f"`sweeper run {self._source_hint()}`, which runs the lost trials again"
        )

    def _source_hint(self) -> str:
        """The study's YAML as study.json names it (even a damaged one, where the key is still legible),
        for the advice of an error; a placeholder otherwise."""
        try:
            text = self.record_path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            text = ""
        try:
            source = json.loads(text).get("source")
        except (ValueError, AttributeError):
            found = re.search(r'"source"\s*:\s*"([^"\\]+)"', text)
            source = found.group(1) if found else None
        if isinstance(source, str) and source.strip() and "\n" not in source:
            return shlex.quote(source)
        return "<the study's YAML>"

    def trials(self, columns: Iterable[str] | None = None):
        """The trial table as a DataFrame (empty, with an id and a status column, before any trial). With
        `columns`, only those it has (and trial_id, status): a reader that needs few columns of a large
        store reads only them. Read once per store and column set."""
        import pandas as pd

        key = None if columns is None else tuple(columns)
        if self._rows is not None:  # the driver's rows, with what it recorded since
            rows = list(self._rows.values())
            frame = pd.DataFrame(rows) if rows else None
        elif key in self._frames:
            return self._frames[key]
        else:
            frame = self._read_trials(key) if _exists(self.trials_path) else None
        if frame is None or frame.empty:
            frame = pd.DataFrame({"trial_id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
        elif key is not None and self._rows is not None:
            frame = frame[[c for c in dict.fromkeys(("trial_id", "status", *key)) if c in frame.columns]]
        if self._rows is None:
            self._frames[key] = frame
        return frame

    def current_trials(self, columns: Iterable[str] | None = None):
        """The trials of each variant's current definition (`study.definition_fingerprint`, listed per
        variant in study.json); rows of an earlier definition stay in the store but are left out of
        analyses. Rows stored without a fingerprint get theirs from their config on reading. `columns`
        as for `trials`."""
        wanted = None if columns is None else (*columns, "variant", "fingerprint")
        trials = self.trials(wanted)
        prints = self.study_record().fingerprints
        if trials.empty or not prints or "variant" not in trials.columns:
            return trials
        return trials[self._row_fingerprints(trials) == trials["variant"].map(prints)]

    def definition_counts(self) -> dict[str, int]:
        """How many stored trials belong to each variant's current definition and how many to older ones."""
        trials = self.trials(("variant", "fingerprint"))
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

        if "config" in trials.columns:
            configs = trials["config"]
        else:  # a narrow read: the configs of the rows that lack a fingerprint, by trial id
            by_id = self.trials(("config",)).set_index("trial_id")["config"]
            configs = trials["trial_id"].map(by_id)
        varied = self.study_record().varied_keys
        prints = stored.copy() if stored is not None else trials["trial_id"].map(lambda _: None)
        for index in missing:
            try:
                prints.at[index] = definition_fingerprint(json.loads(configs.at[index]), varied)
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
        if self._rows is not None:
            return {tid: row["status"] for tid, row in self._rows.items()}
        frame = self.trials(())
        return dict(zip(frame["trial_id"], frame["status"], strict=True))

    def done_ids(self, rerun_failed: bool = False) -> set[str]:
        """Trials that a rerun must not run again (failed ones too, unless rerun_failed)."""
        keep = DONE_STATUSES if rerun_failed else STATUSES
        return {tid for tid, status in self.statuses().items() if status in keep}

    def curves(self, trial_ids: Iterable[str] | None = None):
        """The curves of these trials (all when None), one frame; a curve file that cannot be read is
        left out and listed in `unreadable_curves` (a curve only draws a figure)."""
        import pandas as pd
        import pyarrow

        empty = pd.DataFrame({"trial_id": pd.Series(dtype=str)})
        if not self.curves_dir.is_dir():
            return empty
        files = (
            [self.curves_dir / f"{tid}.parquet" for tid in trial_ids]
            if trial_ids is not None
            else sorted(self.curves_dir.glob("*.parquet"))
        )
        frames = []
        for file in files:
            if not file.is_file():
                continue
            try:
                frames.append(pd.read_parquet(file))
            except (OSError, ValueError, pyarrow.ArrowException):
                if file not in self.unreadable_curves:
                    self.unreadable_curves.append(file)
        if not frames:
            return empty
        return pd.concat(frames, ignore_index=True)

    def has_record(self) -> bool:
        return _exists(self.record_path)

    def study_record(self) -> StudyRecord:
        """study.json as a typed record (all defaults when there is none yet); read once per store. A
        StoreError when it is there but cannot be read."""
        if self._record is None:
            self._record = self._read_record() if _exists(self.record_path) else StudyRecord.of(None)
        return self._record

    def required_record(self) -> StudyRecord:
        """study.json, for a reader that needs the study's scale and swept keys: a StoreError when the store
        has none (a deleted study.json)."""
        if not self.has_record():
            raise StoreError(
                f"{self.record_path}: missing, and best, verify and report need it (the study's scale and "
                "swept keys); rerun `sweeper run <the study's YAML>` to rewrite it (the trials already in "
                f"{self.trials_path.name} are kept and do not run again)"
            )
        return self.study_record()

    def _read_record(self) -> StudyRecord:
        path = self.record_path
        try:
            text = path.read_bytes().decode("utf-8")
        except PermissionError as err:
            raise StoreError(f"{path}: cannot read it ({err.strerror}); check its permissions") from None
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        except OSError as err:
            why = f"cannot read it: {err.strerror or err}"
        else:
            record, why = _parse_record(text)
            if record is not None:
                return record
        raise StoreError(
            f"{path}: not a readable study record ({why}); rerun `sweeper run {self._source_hint()}` to "
            f"rewrite it, or move it aside (mv {path} {path}.corrupt)"
        )

    # --- writing (the driver only) ---
    def write_study_record(self, record: StudyRecord | dict[str, Any]) -> None:
        record = StudyRecord.of(record)
        atomic_write_json(self.record_path, record.as_json())
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


def _exists(path: Path) -> bool:
    """Path.exists, with a folder that cannot be searched as a StoreError rather than a traceback."""
    try:
        return path.exists()
    except OSError as err:
        raise StoreError(
            f"{path.parent}: cannot read it ({err.strerror or err}); check its permissions"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _parse_record(text: str) -> tuple[StudyRecord | None, str]:
    """study.json's text as a record, or None and why not."""
    from pydantic import ValidationError

    try:
        data = json.loads(text)
    except ValueError as err:
        return None, f"not valid JSON: {_first_line(err)}"
    if not isinstance(data, dict):
        return None, f"a JSON {type(data).__name__}, not an object"
    try:
        return StudyRecord.of(data), ""
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return None, f"{where}: {first['msg']}" if where else first["msg"]


def _is_study_folder(path: Path) -> bool:
    try:
        return ResultsStore(path.parent, path.name).exists()
    except StoreError:
        return path.is_dir()  # a folder that cannot be read is listed, with the reason


def study_names(root: Path) -> list[str]:
    """The study folders under `root` (those with a study.json or a trials.parquet), sorted; none when
    `root` does not exist, a StoreError when it cannot be listed."""
    try:
        return sorted(p.name for p in root.iterdir() if _is_study_folder(p))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StoreError(f"--results {root}: cannot list it ({err.strerror or err})") from None


def study_summaries(root: Path) -> list[dict[str, Any]]:
    """`sweeper list --json`: per study folder under `root` (one with a study.json or a trials.parquet),
    its trial counts by status and plan size. A study whose files cannot be read still has its row, with
    null counts (or a null plan size) and the one-line reason under "error"."""
    rows = []
    for name in study_names(root):
        store = ResultsStore(root, name)
        row: dict[str, Any] = {
            "study": name,
            "trials": None,
            **dict.fromkeys(STATUSES),
            "planned": None,
        }
        errors = []
        try:
            statuses = list(store.statuses().values())
            row["trials"] = len(statuses)
            row.update({status: statuses.count(status) for status in STATUSES})
        except StoreError as err:
            errors.append(str(err))
        try:
            row["planned"] = store.study_record().planned
        except StoreError as err:
            errors.append(str(err))
        if errors:
            row["error"] = "; ".join(errors)
        rows.append(row)
    return rows


# The columns of the trial table that are not config keys (plus `seed`, which is both): a user's trainer
# may not name a config key after one of them.
RUN_COLUMNS = frozenset(
    [
        "trial_id",
        "study",
        "variant",
        "status",
        "objective",
        "final_val_loss",
        "best_val_loss",
        "final_train_loss",
        "initial_loss",
        "steps_done",
        "tokens_done",
        "wall_s",
        "tokens_per_s",
        "diverged_at",
        "divergence_reason",
        "n_params",
        "device_used",
        "dtype_used",
        "error",
        "scale_point",
        "fingerprint",
        "swept",
        "config",
        "summary",
        "code_version",
        "host",
        "started_at",
        "finished_at",
    ]
)


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
        "summary": json.dumps(summary, sort_keys=True, default=repr),
        "code_version": code_version(),
        "host": host(),
        "started_at": started_at,
        "finished_at": finished_at,
    }
    for key, value in config.items():
        row[key] = json.dumps(value) if isinstance(value, list | tuple) else value
    row["seed"] = seed
    return row
