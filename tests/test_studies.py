"""The shipped study library: every file validates and dry-runs; a shrunken copy of each CPU study runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeper.study import load_study

STUDIES = Path(__file__).parent.parent / "studies"
CPU = sorted(STUDIES.glob("*.yaml"))
ALL = CPU + sorted((STUDIES / "gpu").glob("*.yaml"))
SWEEPER = [sys.executable, "-m", "sweeper.cli"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(STUDIES)))
def test_every_study_validates_and_says_what_it_asks(path):
    study = load_study(path)
    header = path.read_text().split("\nname:")[0]
    assert "Question" in header and "Expected" in header and "Time" in header, "header comment incomplete"
    assert study.description


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(STUDIES)))
def test_every_study_dry_runs(path, tmp_path):
    proc = subprocess.run(
        [*SWEEPER, "run", str(path), "--dry-run", "--no-estimate", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "plan" in proc.stdout and "no time estimate: not asked for" in proc.stdout
    assert not any(tmp_path.iterdir())


def shrink(path: Path, out: Path) -> Path:
    """The same study, tiny: few steps, two points per axis, two values per swept key, one seed."""
    spec = yaml.safe_load(path.read_text())
    trainer = spec.setdefault("trainer", {})
    trainer.update(steps=4, eval_interval=2, eval_batches=1, dtype="fp32")
    trainer.pop("warmup", None)
    if "warmup_tokens" in trainer:
        trainer["warmup_tokens"] = 1024
    for axis, values in spec.get("scale", {}).items():
        spec["scale"][axis] = [4096, 8192] if axis == "tokens" else sorted(values)[:2]
    if any(axis == "tokens" for axis in spec.get("scale", {})):
        trainer.pop("steps")
    else:
        trainer.pop("tokens", None)  # a fixed token budget (lr_batch): the 4 steps stand instead
    for _key, sweep in spec.get("sweep", {}).items():
        if "log2_grid" in sweep:
            lo, _hi = sweep["log2_grid"]
            sweep["log2_grid"] = (
                [lo, lo + 1] if spec.get("search", {}).get("method") != "adaptive" else [-9, -7]
            )
        elif "values" in sweep:
            sweep["values"] = sweep["values"][:2]
    if spec.get("search", {}).get("method") == "optuna":
        spec["search"]["num_samples"] = 2
    spec["seeds"] = [0]
    spec["wandb"] = {"mode": "disabled"}
    target = out / path.name
    target.write_text(yaml.safe_dump(spec))
    return target


@pytest.mark.slow
def test_a_shrunken_copy_of_every_cpu_study_runs_end_to_end(tmp_path):
    order = sorted(CPU, key=lambda p: p.name != "tune_base.yaml")  # transfer_target inherits from tune_base
    for path in order:
        small = shrink(path, tmp_path)
        proc = subprocess.run(
            [*SWEEPER, "run", str(small), "--results", str(tmp_path / "results")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{path.name}: {proc.stderr[-2000:]}"
        name = yaml.safe_load(small.read_text())["name"]
        table = pd.read_parquet(tmp_path / "results" / name / "trials.parquet")
        assert len(table) >= 2 and set(table["status"]) <= {"completed", "diverged"}, path.name
        spec = yaml.safe_load(small.read_text())
        axes = list(spec.get("scale") or {})
        axis = axes[0] if axes else "width"
        verify = subprocess.run(
            [
                *SWEEPER,
                "verify",
                "--study",
                name,
                "--results",
                str(tmp_path / "results"),
                "--json",
                "--axis",
                axis,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if not axes:  # nothing to verify along: refused in one line
            assert verify.returncode == 2 and "not a scale axis" in verify.stderr, verify.stderr
            continue
        assert verify.returncode == 0, verify.stderr
        rows = json.loads(verify.stdout)
        expected = {(v, k) for v in (spec.get("variants") or {"default": {}}) for k in spec.get("sweep", {})}
        assert {(r["variant"], r["hparam"]) for r in rows} == expected, path.name
        assert {r["verdict"] for r in rows} <= {"transfers", "shifts", "inconclusive"}, path.name


# Keys that change the architecture itself, or the optimizer or the form of the swept hyperparameter:
# variants that differ in one of them differ by design (an ablation rung; Muon against AdamW; coupled
# against independent weight decay, each at its own optimum), and are compared only with the variants
# that share them.
ARCHITECTURE_KEYS = ("norm", "norm_gain", "bias", "tie_embeddings", "mlp_ratio", "head_dim", "n_heads")
DESIGN_KEYS = (*ARCHITECTURE_KEYS, "optimizer", "muon_rule", "weight_decay_mode")


def _base_point_losses(study, base: dict) -> dict[str, tuple]:
    """Per variant: (architecture, losses of a few real training steps at the base point)."""
    from trainers.train import train

    point = {**study.scale_points()[0], **base}
    out = {}
    for variant in study.variants:
        config = study.trial_config(variant, point, study.probe_params(), study.seeds[0])
        small = config.with_updates(
            steps=3, seq_len=16, batch_size=2, eval_interval=3, eval_batches=1, dtype="fp32",
            compile=False, device="cpu", threads=1, warmup=None, warmup_tokens=None, warmup_frac=None,
            tokens=None,
        )  # fmt: skip
        result = train(small)
        architecture = tuple(getattr(config, key) for key in DESIGN_KEYS)
        out[variant] = (architecture, [p["train_loss"] for p in result.history[1:]], result.final_val_loss)
    return out


def _base_of(study) -> dict | None:
    """The base scale point shared by the variants: base width and/or base depth, where the study scales it."""
    configs = [
        study.trial_config(v, study.scale_points()[0], study.probe_params(), 0) for v in study.variants
    ]
    base = {}
    for axis, attribute in (("width", "base_width"), ("depth", "base_depth")):
        if axis in study.scale:
            values = {getattr(c, attribute) for c in configs} - {None}
            assert len(values) <= 1, f"variants disagree on {attribute}: {values}"
            if values:
                base[axis] = values.pop()
    return base or None


COMPARATIVE = [p for p in ALL if len(load_study(p).variants) > 1 and _base_of(load_study(p)) is not None]


@pytest.mark.parametrize("path", COMPARATIVE, ids=lambda p: str(p.relative_to(STUDIES)))
def test_compared_variants_are_the_same_model_at_the_base_scale(path):
    """A fair comparison across scale: at the base width (or depth) every variant trains identically, so
    any gap elsewhere is the parameterization's, not a difference in multipliers, init or LR constants."""
    study = load_study(path)
    if study.inherit is not None:
        pytest.skip("inherits its base values from another study (checked where that study's results exist)")
    losses = _base_point_losses(study, _base_of(study))
    by_architecture: dict[tuple, list[str]] = {}
    for variant, (architecture, _, _) in losses.items():
        by_architecture.setdefault(architecture, []).append(variant)
    for variants in by_architecture.values():
        first = losses[variants[0]]
        for other in variants[1:]:
            assert losses[other][1:] == first[1:], (
                f"{path.name}: {other} and {variants[0]} differ at the base scale {_base_of(study)}"
            )
    assert COMPARATIVE, "no comparative study found"
