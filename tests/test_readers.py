"""Every reader command answers, on any store: a result, or one line naming the file and what to do (exit 2),
never a traceback; and every --json output is valid JSON (no NaN or Infinity)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.store import ResultsStore, trial_row
from trainers.config import TrainConfig

RECORD = {
    "scale_keys": ["width"],
    "swept_keys": ["lr"],
    "objective": {"metric": "val_loss", "mode": "min", "use": "final"},
    "search": {"method": "grid"},
    "variants": ["sp"],
    "spec": {"wandb": {"mode": "disabled"}},
}
LRS = (2.0**-8, 2.0**-6, 2.0**-4)


def record_trial(store: ResultsStore, width: int, lr: float, seed: int, status: str, loss: float | None):
    cfg = TrainConfig(lr=lr, width=width, seed=seed)
    row = trial_row(
        trial_id=f"{store.study}-{width}-{lr}-{seed}",
        study=store.study,
        variant="sp",
        seed=seed,
        scale={"width": width},
        params={"lr": lr},
        config=cfg.model_dump(mode="json"),
        status=status,
        objective=loss,
        summary={"final_val_loss": loss, "steps": 10, "tokens": 640, "status": status},
    )
    curve = [{"step": 0, "tokens": 0, "val_loss": 5.5}]
    if loss is not None:
        curve.append({"step": 10, "tokens": 640, "val_loss": loss})
    store.record(row, curve)


def new_store(root: Path, name: str, planned: int = 18) -> ResultsStore:
    store = ResultsStore(root, name)
    store.dir.mkdir(parents=True)
    store.write_study_record({**RECORD, "name": name, "source": f"studies/{name}.yaml", "planned": planned})
    return store


def finished(store: ResultsStore, widths=(64, 128, 256), diverged_at: int | None = None) -> None:
    """A bowl in log2 lr at each width, two seeds; every setting diverges at `diverged_at`."""
    for width in widths:
        for lr in LRS:
            for seed in (0, 1):
                if width == diverged_at:
                    record_trial(store, width, lr, seed, "diverged", None)
                else:
                    loss = 2.0 + 0.05 * abs(LRS.index(lr) - 1) + 0.001 * seed
                    record_trial(store, width, lr, seed, "completed", loss)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readers") / "results"
    new_store(root, "empty")
    failed = new_store(root, "failed")
    for lr in LRS:
        record_trial(failed, 64, lr, 0, "failed", None)
    finished(new_store(root, "diverged"), diverged_at=256)
    for name in ("truncated", "garbage", "nojson"):
        finished(new_store(root, name))
    trials = root / "truncated" / "trials.parquet"
    trials.write_bytes(trials.read_bytes()[: trials.stat().st_size // 2])
    (root / "garbage" / "study.json").write_text('{"source": "studies/garbage.yaml", "scale_keys": [')
    (root / "nojson" / "study.json").unlink()
    return root


READERS = [
    ["status"],
    ["status", "--json"],
    ["best"],
    ["best", "--json"],
    ["best", "--width", "1024"],
    ["best", "--width", "1024", "--json"],
    ["verify"],
    ["verify", "--json"],
    ["report"],
]
# What each store gives: "ok" (a result, exit 0) or the text its one error line must hold.
EXPECTED = {
    "empty": {},
    "failed": {},
    "diverged": {},
    "truncated": {"*": "trials.parquet.corrupt"},
    "garbage": {"*": "sweeper run studies/garbage.yaml"},
    "nojson": {
        "best": "study.json: missing",
        "verify": "study.json: missing",
        "report": "study.json: missing",
    },
    "absent": {"*": "--study 'absent': no results"},
}


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def assert_valid_json(text: str):
    assert not re.search(r"\b(NaN|Infinity)\b", text), text
    return json.loads(text)


@pytest.mark.parametrize("study", list(EXPECTED))
@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_every_reader_answers_or_says_what_to_do_in_one_line(results, tmp_path, study, command):
    args = [*command, "--study", study, "--results", str(results)]
    if command[0] == "report":
        args += ["--out", str(tmp_path / "report")]
    result = invoke(*args)
    expected = EXPECTED[study].get("*") or EXPECTED[study].get(command[0])
    if expected is not None:
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
        assert result.stdout == ""
        assert not (tmp_path / "report").exists()
        return
    assert result.exit_code == 0, result.output
    if "--json" in command:
        value = assert_valid_json(result.stdout)
        if study in ("empty", "failed") and command[0] != "status":
            assert value == []
    elif command[0] == "report":
        assert (tmp_path / "report" / "report.md").exists()
        assert_valid_json((tmp_path / "report" / "verify.json").read_text())
    elif study in ("empty", "failed") and command[0] != "status":
        assert "nothing finished yet" in result.stdout


@pytest.mark.parametrize("json_out", [False, True])
def test_list_counts_every_study_and_names_the_unreadable_ones(results, json_out):
    result = invoke("list", "--results", str(results), *(["--json"] if json_out else []))
    assert result.exit_code == 0, result.output
    if not json_out:
        assert "truncated: unreadable" in result.stdout
        assert "nojson: 18 trials" in result.stdout  # counted from its trial table alone
        return
    rows = {r["study"]: r for r in assert_valid_json(result.stdout)}
    assert set(rows) == set(EXPECTED) - {"absent"}
    assert rows["empty"]["trials"] == 0 and rows["failed"]["failed"] == 3 and rows["nojson"]["trials"] == 18
    assert rows["truncated"]["trials"] is None and "trials.parquet" in rows["truncated"]["error"]
    assert "study.json" in rows["garbage"]["error"] and rows["garbage"]["trials"] == 18


def test_list_of_a_missing_results_folder_says_there_is_none(tmp_path):
    result = invoke("list", "--results", str(tmp_path / "nowhere"))
    assert result.exit_code == 0 and "no studies under" in result.stdout
    assert assert_valid_json(invoke("list", "--results", str(tmp_path / "nowhere"), "--json").stdout) == []


def test_an_all_diverged_scale_point_has_no_best_setting(results):
    rows = assert_valid_json(
        invoke("best", "--study", "diverged", "--results", str(results), "--json").stdout
    )
    top = next(r for r in rows if r["width"] == 256)
    assert top["best"] is None and top["objective"] is None and top["refined"] is None
    assert top["bracketed"] is False and top["all_diverged"] is True
    assert {"variant", "width", "n_trials", "seeds_at_best", "within_noise", "optimum_interval"} <= set(top)
    (row,) = assert_valid_json(
        invoke("verify", "--study", "diverged", "--results", str(results), "--json").stdout
    )
    assert row["drift_octaves"] is None and row["optimum_log2"][-1] is None
    human = invoke("best", "--study", "diverged", "--results", str(results)).stdout
    assert "all diverged" in human
    assert "all diverged" in invoke("verify", "--study", "diverged", "--results", str(results)).stdout


def test_a_target_is_a_finite_positive_number_and_json_stays_valid(results):
    for value in ("nan", "inf", "-inf", "-1", "0", "1e400", "wide"):
        result = invoke("best", "--study", "diverged", "--results", str(results), "--width", value, "--json")
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.startswith("error: --width") and len(result.stderr.strip().splitlines()) == 1
    far = invoke("best", "--study", "nojson", "--results", str(results), "--width", "1e300", "--json")
    assert far.exit_code == 2  # (no study.json): the refusal comes first
    result = invoke("best", "--study", "diverged", "--results", str(results), "--width", "1e300", "--json")
    assert result.exit_code == 0 and isinstance(assert_valid_json(result.stdout), list)


def test_the_live_best_table_sorts_scale_points_as_numbers_and_variants_in_study_order():
    from sweeper.display import _row_order

    keys = [
        ("sp", (("width", 128),)),
        ("mup", (("width", 32),)),
        ("sp", (("width", 32),)),
        ("sp", (("width", 1024),)),
    ]
    ordered = sorted(keys, key=lambda k: _row_order(k, ["sp", "mup"]))
    assert ordered == [keys[2], keys[0], keys[3], keys[1]]
