"""`sweeper params`, `sweeper coord-check` and the generated rules page."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.config import TrainConfig
from trainers.coord_check import run_coord_check, slope_of
from trainers.parameterization import ParamPlan, build
from trainers.rules_doc import render

SWEEPER = [sys.executable, "-m", "sweeper.cli"]
SMALL = [
    "--set",
    "depth=1",
    "--set",
    "head_dim=16",
    "--set",
    "batch_size=8",
    "--set",
    "seq_len=32",
    "--set",
    "threads=1",
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SWEEPER, *args], capture_output=True, text=True, timeout=300)


def test_params_json_is_the_plan_the_trainer_uses():
    proc = run(
        "params",
        "--json",
        "--set",
        "parameterization=mup",
        "--set",
        "base_width=64",
        "--set",
        "width=256",
        "--set",
        "weight_decay=0.1",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert all(list(row) == list(ParamPlan.TABLE_KEYS) for row in rows)
    cfg = TrainConfig(parameterization="mup", base_width=64, width=256, weight_decay=0.1)
    _, plans = build(cfg, 256)
    assert rows == [json.loads(json.dumps(p.as_row())) for p in plans]
    hidden = next(r for r in rows if r["name"] == "blocks.0.attn.q.weight")
    assert (hidden["role"], hidden["shape"], hidden["width_mult"]) == ("hidden", [256, 256], 4.0)
    assert hidden["lr"] == pytest.approx(cfg.lr / 4) and hidden["weight_decay"] == pytest.approx(0.4)


def test_params_table_lists_every_tensor():
    proc = run("params", "--set", "tie_embeddings=true")
    assert proc.returncode == 0, proc.stderr
    assert "blocks.1.mlp.down.weight" in proc.stdout and "attention scale" in proc.stdout
    assert proc.stdout.count("tied") >= 3  # the column header and two rows


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["params", "--set", "parameterization=ntk"], "set base_width"),
        (["params", "--set", "depth_scaling=completep"], "set base_depth"),
        (["params", "--set", "head_dim=48"], "head_dim 48 must divide width 128"),
        (["params", "--set", "parameterization=mup2"], "parameterization='mup2'"),
        (["coord-check", "--widths", "64"], "at least two positive widths"),
        (["coord-check", "--widths", "64,abc"], "comma-separated integers"),
        (["coord-check", "--widths", "64,96", "--set", "head_dim=64"], "head_dim 64 must divide width 96"),
        (["coord-check", "--lr", "-1"], "--lr -1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected):
    proc = run(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_coord_check_passes_mup_and_fails_sp_on_a_small_default_config():
    base = TrainConfig(depth=1, head_dim=16, batch_size=8, seq_len=32, threads=1)
    widths = [32, 64, 128]
    sp = run_coord_check(base, widths, steps=3, seeds=2)
    mup = run_coord_check(base.with_updates(parameterization="mup", base_width=32), widths, steps=3, seeds=2)
    assert mup.passed, mup.failing()
    assert not sp.passed
    failing = {s["module"] for s in sp.failing()}
    assert {"attention", "mlp"} <= failing
    assert "embedding" not in failing  # SP's embedding is fine: it is the hidden layers that blow up
    grown = {s["module"]: s["slope"] for s in sp.slopes if s["step"] == 3}
    assert grown["mlp"] > 0.5


def test_coord_check_cli_json_and_plot(tmp_path: Path):
    plot = tmp_path / "coord.png"
    proc = run(
        "coord-check",
        "--widths",
        "32,64,128",
        "--steps",
        "3",
        "--seeds",
        "2",
        "--set",
        "parameterization=mup",
        "--plot",
        str(plot),
        "--json",
        *SMALL,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"passed", "rows", "slopes"} and out["passed"] is True
    assert set(out["rows"][0]) == {"module", "step", "width", "l1"}
    assert set(out["slopes"][0]) == {"module", "step", "slope", "ok"}
    assert len(out["rows"]) == 5 * 3 * 3  # modules x steps x widths
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    failing = run("coord-check", "--widths", "32,64,128", "--steps", "3", "--seeds", "1", *SMALL)
    assert failing.returncode == 1 and "FAIL" in failing.stdout


def test_zero_initialised_readout_is_flat_at_zero_and_slopes_fit_powers():
    assert slope_of([64, 128], [0.0, 0.0]) == 0.0
    assert slope_of([64, 128, 256], [1.0, 2.0, 4.0]) == pytest.approx(1.0)
    assert slope_of([64, 256], [1.0, 0.5]) == pytest.approx(-0.5)


def test_rules_page_is_generated_from_the_code():
    page = Path(__file__).parent.parent / "docs" / "parameterizations.md"
    assert page.read_text() == render(), (
        "regenerate: python -m trainers.rules_doc > docs/parameterizations.md"
    )
    assert "| hidden | m^(-1/2) | 1 | m^-1 | 1 | m^-1 |" in render()  # classic muP's hidden row


def test_keys_lists_every_config_key_with_its_default_and_allowed_values():
    done = run("keys", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["key"]: row for row in json.loads(done.stdout)}
    assert set(rows) == set(TrainConfig.model_fields)
    assert rows["dtype"]["default"] == "fp32" and rows["dtype"]["allowed"] == "fp32 | bf16 | auto"
    assert rows["optimizer"]["allowed"] == "adamw | sgd | muon"
    assert rows["lr"]["allowed"] == "float (> 0, <= 1e+06)" and rows["lr"]["default"] == 3e-3
    assert rows["base_width"]["default"] is None and rows["base_width"]["allowed"].startswith("int | null")
    table = run("keys")
    assert table.returncode == 0 and "muon_rule" in table.stdout and "match_rms_adamw" in table.stdout
    assert "sweeper keys" in run("train", "--help").stdout
