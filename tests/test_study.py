"""Study spec: loading, validation messages (file, line, field), expansion and trial identity."""

from __future__ import annotations

import textwrap

import pytest

from sweeper.study import Study, StudyError, SweepSpec, group_key, load_study, trial_id
from trainers.config import TrainConfig

LR_WIDTH = """\
name: lr_width
description: Does the best learning rate stay put as width grows?
trainer: {depth: 2, head_dim: 32, seq_len: 64, batch_size: 16, steps: 300, warmup: 30}
variants:
  sp: {parameterization: sp}
  mup: {parameterization: mup, base_width: 64}
scale: {width: [64, 128, 256]}
sweep: {lr: {log2_grid: [-14, -4]}}
search: {method: grid}
seeds: [0]
objective: {metric: val_loss, mode: min}
early_stop: {method: asha, grace_steps: 60}
resources: {cpu: 1, gpu: 0}
wandb: {project: sweeper, mode: offline}
"""


def write(tmp_path, text: str, name: str = "study.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path, text: str, name: str = "study.yaml") -> Study:
    return load_study(write(tmp_path, text, name))


# --- loading and expansion ---
def test_valid_study_loads(tmp_path):
    path = write(tmp_path, LR_WIDTH)
    study = load_study(path)
    assert study.name == "lr_width"
    assert study.source == str(path)
    assert list(study.variants) == ["sp", "mup"]
    assert study.variants["mup"] == {"parameterization": "mup", "base_width": 64}
    assert study.scale_keys() == ["width"] and study.swept_keys() == ["lr"]
    assert study.early_stop is not None and study.early_stop.grace_steps == 60
    assert study.search.method == "grid" and study.objective.use == "final"
    assert study.sweep["lr"].log2_bounds() == (-14, -4)


def test_defaults_of_a_minimal_study(tmp_path):
    study = load_text(tmp_path, "name: tiny\n")
    assert study.variants == {"default": {}}
    assert study.seeds == [0]
    assert study.scale_points() == [{}]
    [trial] = study.grid_trials()
    assert trial.config == TrainConfig(seed=0)


def test_scale_points_are_the_cartesian_product_in_key_order(tmp_path):
    study = load_text(tmp_path, "name: s\nscale: {width: [64, 128], depth: [2, 4]}\n")
    assert study.scale_points() == [
        {"width": 64, "depth": 2},
        {"width": 64, "depth": 4},
        {"width": 128, "depth": 2},
        {"width": 128, "depth": 4},
    ]


def test_log2_grid_is_exact_powers_of_two():
    grid = SweepSpec(log2_grid=(-14, -4)).grid()
    assert grid == [2.0**k for k in range(-14, -3)]
    assert len(grid) == 11


def test_log2_grid_half_octaves():
    grid = SweepSpec(log2_grid=(-14, -4), step=0.5).grid()
    assert len(grid) == 21
    assert grid[0] == 2.0**-14 and grid[-1] == 2.0**-4
    assert grid[1] == 2.0**-13.5 and grid[2] == 2.0**-13


def test_values_and_choice_grids():
    assert SweepSpec(values=[0, 10, 30]).grid() == [0, 10, 30]
    assert SweepSpec(choice=["sqrt", "linear"]).grid() == ["sqrt", "linear"]
    assert SweepSpec(values=[1]).log2_bounds() is None


def test_ranges_are_not_enumerable():
    with pytest.raises(StudyError, match="not enumerable"):
        SweepSpec(loguniform=(1e-4, 1e-2)).grid()


PRECEDENCE = """\
name: precedence
trainer: {depth: 2, warmup: 10, init_std: 0.01, steps: 100, head_dim: 16}
variants:
  sp: {}
  mup: {parameterization: mup, base_width: 32, depth: 3, init_std: 0.03, warmup: 20}
scale: {depth: [2, 4], width: [32]}
sweep:
  warmup: {values: [0, 5]}
  lr: {values: [0.001, 0.01, 0.1]}
seeds: [0, 1]
"""


def test_grid_expansion_counts_order_and_precedence(tmp_path):
    study = load_text(tmp_path, PRECEDENCE)
    trials = study.grid_trials()
    assert len(trials) == 2 * 2 * 2 * (2 * 3)  # variants x points x seeds x grid
    keys = [(t.variant, t.scale["depth"], t.seed, t.params["warmup"], t.params["lr"]) for t in trials]
    assert keys == sorted(keys, key=lambda k: (["sp", "mup"].index(k[0]), *k[1:]))
    assert len({t.trial_id for t in trials}) == len(trials)
    for t in trials:
        c = t.config
        assert c.steps == 100  # trainer only
        assert c.depth == t.scale["depth"]  # scale point beats the variant's depth 3
        assert c.warmup == t.params["warmup"]  # params beat trainer and variant
        assert c.lr == t.params["lr"] and c.seed == t.seed and c.width == 32
        if t.variant == "mup":
            assert c.parameterization == "mup" and c.init_std == 0.03  # variant beats trainer
        else:
            assert c.parameterization == "sp" and c.init_std == 0.01
        assert group_key(t.scale) == (("depth", c.depth), ("width", 32))
        assert t.trial_id == trial_id(c)


def test_trial_config_merge_order(tmp_path):
    study = load_text(tmp_path, PRECEDENCE)
    inherited = {"lr": 0.5, "warmup": 7, "init_std": 0.05, "grad_clip": 0.5}
    config = study.with_inherited({"mup": inherited}).trial_config(
        "mup", {"depth": 4, "width": 32}, {"depth": 6}, seed=3
    )
    assert config.grad_clip == 0.5 and config.lr == 0.5  # inherited beats trainer
    assert config.init_std == 0.03 and config.warmup == 20  # variant beats inherited
    assert config.depth == 6  # params beat the scale point
    assert config.seed == 3


# --- trial identity ---
def test_trial_ids_are_stable_and_ignore_key_order_and_explicit_defaults(tmp_path):
    first = [t.trial_id for t in load_text(tmp_path, LR_WIDTH, "a.yaml").grid_trials()]
    again = [t.trial_id for t in load_text(tmp_path, LR_WIDTH, "a.yaml").grid_trials()]
    reordered = LR_WIDTH.replace(
        "trainer: {depth: 2, head_dim: 32, seq_len: 64, batch_size: 16, steps: 300, warmup: 30}",
        "trainer: {warmup: 30, steps: 300, norm: layernorm, batch_size: 16, seq_len: 64, head_dim: 32, depth: 2}",
    )
    assert reordered != LR_WIDTH
    other = [t.trial_id for t in load_text(tmp_path, reordered, "b.yaml").grid_trials()]
    assert first == again == other
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in first)


def test_trial_id_equal_configs_equal_ids_and_seed_matters():
    a = TrainConfig(width=64, lr=1e-3, seed=0)
    assert trial_id(a) == trial_id(TrainConfig(lr=1e-3, width=64, seed=0))
    assert trial_id(a) != trial_id(TrainConfig(width=64, lr=1e-3, seed=1))
    assert trial_id(a) != trial_id(TrainConfig(width=64, lr=2e-3, seed=0))
    assert trial_id(TrainConfig()) == trial_id(TrainConfig(norm="layernorm", betas=[0.9, 0.95]))


def test_different_seeds_give_different_ids(tmp_path):
    study = load_text(tmp_path, LR_WIDTH.replace("seeds: [0]", "seeds: [0, 1]"))
    trials = study.grid_trials()
    by_seed = {seed: [t.trial_id for t in trials if t.seed == seed] for seed in (0, 1)}
    assert len(by_seed[0]) == len(by_seed[1]) == 2 * 3 * 11
    assert not set(by_seed[0]) & set(by_seed[1])


# --- bad input: one line naming file, line and field ---
BAD = {
    "unknown top-level key": (
        "name: s\nsweeps: {lr: {values: [1]}}\n",
        "sweeps",
        "sweeps: unknown key 'sweeps'; allowed: name,",
    ),
    "unknown nested key": (
        "name: s\nsearch:\n  method: grid\n  metod: x\n",
        "metod",
        "search.metod: unknown key",
    ),
    "unknown sweep spec key": (
        "name: s\nsweep:\n  lr: {log2grid: [-3, -1]}\n",
        "log2grid",
        "sweep.lr.log2grid: unknown key 'log2grid'; allowed: log2_grid, step",
    ),
    "trainer key typo": (
        "name: s\ntrainer:\n  depth: 2\n  widht: 64\n",
        "widht",
        "trainer.widht: unknown trainer key 'widht' (did you mean 'width'?)",
    ),
    "empty scale axis": ("name: s\nscale:\n  width: []\n", "width", "scale.width: empty scale axis"),
    "axis not a list": (
        "name: s\nscale:\n  width: 64\n",
        "width",
        "scale.width: Input should be a valid list",
    ),
    "lo > hi": (
        "name: s\nsweep:\n  lr: {log2_grid: [-4, -14]}\n",
        "log2_grid",
        "sweep.lr.log2_grid: lo -4 > hi -14",
    ),
    "step not positive": (
        "name: s\nsweep:\n  lr:\n    log2_grid: [-4, -1]\n    step: 0\n",
        "step:",
        "sweep.lr.step",
    ),
    "two kinds": (
        "name: s\nsweep:\n  lr: {values: [1], choice: [2]}\n",
        "lr:",
        "sweep.lr: give exactly one of log2_grid",
    ),
    "empty sweep": ("name: s\nsweep: {}\n", "sweep", "sweep: empty sweep"),
    "loguniform lo <= 0": (
        "name: s\nsearch: {method: optuna}\nsweep:\n  lr: {loguniform: [0, 1]}\n",
        "loguniform",
        "sweep.lr.loguniform: needs 0 < lo < hi",
    ),
    "unknown parameterization in a variant": (
        "name: s\nvariants:\n  sp: {}\n  mup:\n    parameterization: mupp\n    base_width: 64\n",
        "mupp",
        "variants.mup.parameterization: variant mup: parameterization='mupp'",
    ),
    "head_dim does not divide one scale width": (
        "name: s\ntrainer: {head_dim: 32}\nscale:\n  width:\n    - 64\n    - 80\n    - 128\n",
        "- 80",
        "scale.width[1]: variant default, width=80: head_dim 32 must divide width 80",
    ),
    "study name with a slash": ("name: a/b\n", "name", "name: study name 'a/b' is not a plain name"),
    "study name with ..": (
        "description: x\nname: a..b\n",
        "name",
        "name: study name 'a..b' is not a plain name",
    ),
    "bad variant name": ("name: s\nvariants:\n  'sp mup': {}\n", "sp mup", "variants.sp mup: variant name"),
    "malformed yaml": ("name: s\ntrainer: {depth: 2\nscale: {width: [64]}\n", "scale", "not valid YAML"),
    "duplicate key": (
        "name: s\ntrainer:\n  lr: 0.1\n  depth: 2\n  lr: 0.2\n",
        "lr: 0.2",
        "trainer.lr: duplicate key 'lr'",
    ),
    "grid with loguniform": (
        "name: s\nsweep:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n",
        "loguniform",
        "sweep.lr.loguniform: loguniform is not enumerable",
    ),
    "adaptive with two keys": (
        "name: s\nsearch:\n  method: adaptive\nsweep:\n  lr: {log2_grid: [-3, -1]}\n  warmup: {values: [0, 1]}\n",
        "method",
        "search.method: adaptive search sweeps exactly one key, got 2 (lr, warmup)",
    ),
    "adaptive without log2_grid": (
        "name: s\nsearch: {method: adaptive}\nsweep:\n  lr: {values: [0.1, 0.2]}\n",
        "lr:",
        "sweep.lr: adaptive search needs a log2_grid sweep",
    ),
    "optuna without sweep": (
        "name: s\nsearch:\n  method: optuna\n",
        "method",
        "search.method: optuna search needs",
    ),
    "seeds with duplicates": (
        "name: s\nseeds:\n  - 0\n  - 1\n  - 0\n",
        "- 0\n  - 1\n  - 0",
        "seeds[2]: duplicate seed 0",
    ),
    "negative seed": (
        "name: s\nseeds: [-1]\n",
        "seeds",
        "seeds[0]: Input should be greater than or equal to 0",
    ),
    "seed in trainer": (
        "name: s\ntrainer:\n  seed: 3\n",
        "seed: 3",
        "trainer.seed: 'seed' cannot be set in trainer",
    ),
    "seed in sweep": (
        "name: s\nsweep:\n  seed: {values: [1, 2]}\n",
        "seed:",
        "sweep.seed: 'seed' cannot be set",
    ),
    "key both scaled and swept": (
        "name: s\nscale: {width: [64]}\nsweep:\n  width: {values: [64, 128]}\n",
        "width: {values",
        "sweep.width: 'width' is both a scale axis and swept",
    ),
    "grace_steps not below steps": (
        "name: s\ntrainer: {steps: 50}\nearly_stop:\n  grace_steps: 60\n",
        "grace_steps",
        "early_stop.grace_steps: variant default: grace_steps 60 must be smaller than the run's 50 steps",
    ),
    "inherit unknown key": (
        "name: s\ninherit:\n  study: base\n  keys:\n    - lr\n    - lrr\n",
        "- lrr",
        "inherit.keys[1]: unknown trainer key 'lrr'",
    ),
    "invalid value in a values sweep": (
        "name: s\nsweep:\n  lr:\n    values:\n      - 0.1\n      - -1\n",
        "- -1",
        "sweep.lr.values[1]: variant default, lr=-1: lr=-1: Input should be greater than 0",
    ),
    "wrong literal": ("name: s\nobjective:\n  mode: lowest\n", "mode", "objective.mode: Input should be"),
    "metric the built-in trainer lacks": (
        "name: s\nobjective:\n  metric: loss\n",
        "metric",
        "objective.metric: the built-in trainer reports val_loss and train_loss, not 'loss'",
    ),
}


def _line_of(text: str, marker: str) -> int:
    """1-based line where `marker` ends (markers may span lines: the last one counts)."""
    return text[: text.index(marker) + len(marker)].count("\n") + 1


@pytest.mark.parametrize("case", list(BAD))
def test_bad_study_names_file_line_and_field(tmp_path, case):
    text, marker, expected = BAD[case]
    with pytest.raises(StudyError) as info:
        load_text(tmp_path, text)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'study.yaml'}:{_line_of(text, marker)}:"), msg
    assert expected in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(StudyError, match=r"nope\.yaml: no such study file$"):
        load_study(tmp_path / "nope.yaml")


def test_directory_empty_file_and_non_mapping(tmp_path):
    with pytest.raises(StudyError, match="is a directory"):
        load_study(tmp_path)
    with pytest.raises(StudyError, match=r"study\.yaml: empty study file"):
        load_text(tmp_path, "# nothing but a comment\n")
    with pytest.raises(StudyError, match=r"study\.yaml:1: expected a mapping of study keys.*got list"):
        load_text(tmp_path, "- name: s\n")


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    study = load_text(
        tmp_path,
        "name: s\nvariants:\n  a: &base {parameterization: mup, base_width: 64}\n"
        "  b:\n    <<: *base\n    base_width: 32\n",
    )
    assert study.variants["b"] == {"parameterization": "mup", "base_width": 32}


def test_trial_config_error_names_variant_point_and_params(tmp_path):
    study = load_text(tmp_path, "name: s\nvariants:\n  sp: {}\nscale:\n  width: [64]\n")
    with pytest.raises(StudyError) as info:
        study.trial_config("sp", {"width": 96}, {"head_dim": 64}, seed=0)
    msg = str(info.value)
    assert "variant sp, width=96, head_dim=64: head_dim 64 must divide width 96" in msg
    assert msg.startswith(f"{study.source}:")


# --- counting trials, without expanding them ---
def test_trial_count_matches_the_expansion(tmp_path):
    study = load_text(tmp_path, PRECEDENCE)
    assert study.trial_count() == len(study.grid_trials()) == 2 * 2 * 2 * 6
    optuna = load_text(
        tmp_path,
        "name: s\nvariants: {a: {}, b: {depth: 3}}\nscale: {width: [64, 128]}\nseeds: [0, 1, 2]\n"
        "search: {method: optuna, num_samples: 5}\nsweep:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n",
        "o.yaml",
    )
    assert optuna.trial_count() == 2 * 2 * 3 * 5


def test_trial_cap_is_counted_before_any_config_is_built(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Study, "validate_configs", lambda self: calls.append(self))
    with pytest.raises(StudyError, match=r"plans 1000000 trials .* at most 100000"):
        load_text(
            tmp_path, "name: s\nsweep:\n  lr: {log2_grid: [-999, 0]}\n  init_std: {log2_grid: [-999, 0]}\n"
        )
    assert calls == []
    study = load_text(
        tmp_path,
        "name: s\nmax_trials: 1000000\nsweep:\n  lr: {log2_grid: [-999, 0]}\n  init_std: {log2_grid: [-999, 0]}\n",
    )
    assert study.max_trials == 1_000_000 and study.trial_count() == 10**6


def test_long_axes_and_value_lists_validate_in_linear_time(tmp_path):
    import time

    values = ", ".join(f"{k}.0e-6" for k in range(1, 5001))
    start = time.monotonic()
    study = load_text(tmp_path, f"name: s\ntrainer: {{steps: 10}}\nsweep:\n  lr: {{values: [{values}]}}\n")
    assert study.trial_count() == 5000 and time.monotonic() - start < 10


def test_range_ends_are_validated(tmp_path):
    with pytest.raises(StudyError, match=r"sweep\.lr\.loguniform: variant default, lr=100000000\.0"):
        load_text(
            tmp_path, "name: s\nsearch: {method: optuna}\nsweep:\n  lr: {loguniform: [1.0e-3, 1.0e8]}\n"
        )


def test_a_whole_config_error_points_at_the_key_that_causes_it(tmp_path):
    text = "name: s\ntrainer:\n  width: 128\n  head_dim: 48\n"
    with pytest.raises(StudyError, match=r"study\.yaml:4: trainer\.head_dim: variant default: head_dim 48"):
        load_text(tmp_path, text)


def test_numbers_are_floats_and_quoted_numbers_are_refused(tmp_path):
    study = load_text(tmp_path, "name: s\nsweep:\n  lr: {values: [1e-3, 2E-3, 4.0e-3]}\n")
    assert study.sweep["lr"].values == [0.001, 0.002, 0.004]
    with pytest.raises(StudyError, match=r"study\.yaml:3: sweep\.lr\.values\[1\]: '2e-3' is a string"):
        load_text(tmp_path, "name: s\nsweep:\n  lr: {values: [1e-3, '2e-3']}\n")
    # a key that takes text keeps its strings
    assert load_text(tmp_path, "name: s\nsweep:\n  norm: {values: [layernorm, rmsnorm]}\n").trial_count() == 2
