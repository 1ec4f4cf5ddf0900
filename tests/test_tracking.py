"""sweeper.tracking against the real wandb package, offline.

wandb 0.31 writes an offline run as `wandb/offline-run-*/run-<id>.wandb` (no files/config.yaml or
wandb-summary.json any more) and ships no Python reader for it. The file is a LevelDB-style log of
`wandb.proto.wandb_internal_pb2.Record` messages, which `_records` below decodes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest
from wandb_reader import read_run as _read_run

from sweeper.tracking import Tracker, WandbSettings, run_name

STUDY = "lr_width"
FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 characters, shaped like a real API key


def _run_dirs(study_dir: Path) -> dict[str, Path]:
    return {p.name.rsplit("-", 1)[1]: p for p in (study_dir / "wandb").glob("offline-run-*")}


@pytest.fixture
def study_dir(tmp_path, monkeypatch):
    """The study's results folder, with the working directory elsewhere so a stray ./wandb shows."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield tmp_path / "results" / STUDY
    assert list(cwd.iterdir()) == [], "W&B wrote into the current working directory"


def _curve(n: int = 5) -> list[dict]:
    return [
        {
            "step": 10 * i,
            "tokens": 10 * i * 1024,
            "train_loss": 4.0 - 0.1 * i,
            "val_loss": 4.1 - 0.1 * i if i % 2 == 0 else None,
            "lr": 2**-9,
            "grad_norm": 1.5,
            "tokens_per_s": 5e4,
        }
        for i in range(n)
    ]


def test_trials_are_runs_with_group_job_type_config_and_summary(study_dir):
    tracker = Tracker(WandbSettings(dir=study_dir), STUDY)
    trials = {
        "sp": {"width": 64, "lr": 2**-9, "parameterization": "sp", "betas": [0.9, 0.95], "trial_id": "a1"},
        "mup": {"width": 128, "lr": 2**-7, "parameterization": "mup", "base_width": 64, "trial_id": "b2"},
    }
    ids = {}
    for variant, config in trials.items():
        ids[variant] = tracker.log_trial(
            name=run_name({"width": config["width"]}, {"lr": config["lr"]}, 0),
            variant=variant,
            config=config,
            curve=_curve(),
            summary={
                "final_val_loss": 3.7,
                "best_val_loss": 3.65,
                "status": "completed",
                "diverged_at": None,
            },
            tags=["test"],
        )
    tracker.close()

    dirs = _run_dirs(study_dir)
    assert set(dirs) == set(ids.values()) and len(dirs) == 2
    for variant, config in trials.items():
        recorded = _read_run(dirs[ids[variant]])
        run = recorded["run"]
        assert (run.run_group, run.job_type, run.project) == (STUDY, variant, "sweeper")
        assert run.display_name == run_name({"width": config["width"]}, {"lr": config["lr"]}, 0)
        assert list(run.tags) == ["test"]
        assert recorded["config"].items() >= config.items()
        summary = recorded["summary"]
        assert summary["final_val_loss"] == 3.7 and summary["status"] == "completed"
        assert "diverged_at" not in summary
        history = recorded["history"]
        assert sorted(history) == [0, 10, 20, 30, 40]
        assert history[20]["val_loss"] == pytest.approx(3.9) and "val_loss" not in history[10]
        assert history[40]["tokens"] == 40 * 1024 and "step" not in history[40]


def test_long_curve_spans_several_blocks_of_the_wandb_file(study_dir):
    tracker = Tracker(WandbSettings(dir=study_dir), STUDY)
    run_id = tracker.log_trial(name="long", variant="sp", config={}, curve=_curve(400), summary={})
    tracker.close()
    (wandb_file,) = _run_dirs(study_dir)[run_id].glob("*.wandb")
    assert wandb_file.stat().st_size > 2 * 32768
    assert sorted(_read_run(wandb_file.parent)["history"]) == [10 * i for i in range(400)]


def test_study_summary_logs_tables_and_images(study_dir, tmp_path):
    from PIL import Image

    figure = tmp_path / "optimum.png"
    Image.new("RGB", (8, 8), "white").save(figure)
    table = pd.DataFrame({"variant": ["sp", "mup"], "width": [64, 128], "best_lr": [2**-9, float("nan")]})
    tracker = Tracker(WandbSettings(dir=study_dir), STUDY)
    tracker.log_study_summary(tables={"optima": table}, images={"optimum": figure})
    tracker.close()

    (run_dir,) = _run_dirs(study_dir).values()
    run = _read_run(run_dir)["run"]
    assert (run.run_group, run.job_type, run.display_name) == (STUDY, "study", f"{STUDY}-summary")
    (table_file,) = run_dir.glob("files/media/table/optima_*.table.json")
    assert json.loads(table_file.read_text())["columns"] == ["variant", "width", "best_lr"]
    assert list(run_dir.glob("files/media/images/optimum_*.png"))


def test_logging_is_silent(study_dir, capfd):
    tracker = Tracker(WandbSettings(dir=study_dir), STUDY)
    assert tracker.log_trial(name="quiet", variant="sp", config={"lr": 0.1}, curve=_curve(), summary={})
    tracker.close()
    assert capfd.readouterr() == ("", "")


def test_no_api_key_is_written(study_dir, tmp_path, monkeypatch):
    netrc = Path.home() / ".netrc"
    before = netrc.stat().st_mtime_ns if netrc.exists() else None
    environ_before = dict(os.environ)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    tracker = Tracker(WandbSettings(dir=study_dir), STUDY)
    assert tracker.log_trial(name="k", variant="sp", config={"lr": 0.1}, curve=_curve(), summary={"x": 1})
    tracker.close()
    monkeypatch.delenv("WANDB_API_KEY")

    assert (netrc.stat().st_mtime_ns if netrc.exists() else None) == before
    assert dict(os.environ) == environ_before  # WANDB_DIR & co. restored
    for path in tmp_path.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode(errors="replace")
            assert FAKE_KEY not in text, path
            assert not re.search(r"api_?key[\"']?\s*[:=]\s*[\"']?\w{8}", text, re.IGNORECASE), path


def test_disabled_creates_nothing_and_never_imports_wandb(tmp_path):
    study_dir = tmp_path / "results" / STUDY
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from sweeper.tracking import Tracker, WandbSettings
        assert "wandb" not in sys.modules and "pandas" not in sys.modules
        tracker = Tracker(WandbSettings(mode="disabled", dir=Path({str(study_dir)!r})), "s")
        assert tracker.log_trial(name="n", variant="v", config={{}}, curve=[{{"step": 0}}], summary={{}}) is None
        tracker.log_study_summary(tables={{}}, images={{}})
        tracker.close()
        assert "wandb" not in sys.modules, "wandb was imported"
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []


def test_online_without_api_key_warns_once_and_logs_offline(study_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # ignore any real ~/.netrc
    tracker = Tracker(WandbSettings(mode="online", dir=study_dir), STUDY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = [
            tracker.log_trial(name=f"t{i}", variant="sp", config={}, curve=_curve(), summary={})
            for i in range(3)
        ]
        tracker.log_study_summary(tables={"t": pd.DataFrame({"a": [1]})})
    tracker.close()
    assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning)
    message = str(caught[0].message)
    assert "logging offline" in message and "wandb sync" in message and "\n" not in message
    assert caught[0].filename == __file__
    assert all(ids) and len(set(ids)) == 3  # every trial is kept, offline
    assert len(list((study_dir / "wandb").glob("offline-run-*"))) == 4  # three trials and the summary


def test_online_without_api_key_never_prompts_at_a_terminal(tmp_path):
    """At a terminal wandb would ask for a key (and offer to save it); the tracker must fail instead."""
    script = textwrap.dedent(
        f"""
        import warnings
        from pathlib import Path
        from sweeper.tracking import Tracker, WandbSettings
        tracker = Tracker(WandbSettings(mode="online", dir=Path({str(tmp_path / "study")!r})), "s")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_id = tracker.log_trial(name="n", variant="v", config={{}}, curve=[], summary={{}})
        Path({str(tmp_path / "result.txt")!r}).write_text(f"{{run_id}} {{len(caught)}}")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE")}
    env |= {"NETRC": str(tmp_path / "no-netrc"), "TERM": "xterm"}
    main, terminal = os.openpty()
    try:
        subprocess.run(
            [sys.executable, "-c", script],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env,
            cwd=tmp_path,
            timeout=30,  # a login prompt would wait here forever
        )
    finally:
        os.close(terminal)
        os.close(main)
    run_id, warned = (tmp_path / "result.txt").read_text().split()
    assert run_id != "None" and warned == "1"  # logged offline, with one warning, and never prompted


@pytest.mark.parametrize(
    ("scale", "params", "seed", "expected"),
    [
        ({"width": 256}, {"lr": 2**-9}, 0, "w256-lr0.002(2^-9.0)-s0"),
        ({"width": 64, "depth": 4}, {"lr": 3e-4}, 1, "w64-d4-lr0.0003(2^-11.7)-s1"),
        ({"steps": 300, "tokens": 1_000_000, "batch_size": 16}, {}, 2, "steps300-tok1000000-bs16-s2"),
        (
            {"width": 128},
            {"lr": 2**-8.5, "init_std": 0.02},
            0,
            "w128-lr0.0028(2^-8.5)-init_std0.02(2^-5.64)-s0",
        ),
        (
            {"width": 128},
            {"lr": 0.125, "output_mult": 2.0, "warmup": 0.1},
            3,
            "w128-lr0.12(2^-3.0)-output_mult2(2^1.0)-warmup0.1(2^-3.32)-s3",
        ),
        (
            {"width": 64},
            {"lr": 1.5, "eps": 1e-8, "wd": 0.123456},
            0,
            "w64-lr1.5(2^0.58)-eps1e-08(2^-26.58)-wd0.12(2^-3.02)-s0",
        ),
        (
            {"width": 64},
            {"parameterization": "mup", "lr": 2**-6.25, "m": 2**1.5},
            0,
            "w64-parameterizationmup-lr0.013(2^-6.25)-m2.8(2^1.5)-s0",
        ),
    ],
)
def test_run_name(scale, params, seed, expected):
    assert run_name(scale, params, seed) == expected
