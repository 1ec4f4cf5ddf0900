"""TrainConfig validation: a bad value raises one line naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from trainers.config import ConfigError, TrainConfig, build_config, parse_set_options


def error_of(**values) -> str:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values, source="test.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_valid_and_resolve():
    cfg = TrainConfig()
    assert cfg.resolved_heads() == (cfg.width // 32, 32)
    assert cfg.total_steps == 300
    assert cfg.warmup_steps == 0
    assert cfg.effective_attn_scale == "sqrt"


def test_unknown_key_is_named():
    msg = error_of(widht=128)
    assert "test.yaml" in msg and "widht" in msg and "unknown key" in msg


def test_bad_choice_names_the_allowed_values():
    msg = error_of(norm="batchnorm")
    assert "norm='batchnorm'" in msg and "layernorm" in msg and "rmsnorm" in msg
    msg = error_of(parameterization="mupp")
    assert "parameterization='mupp'" in msg and "'mup'" in msg


def test_bad_number_is_named():
    msg = error_of(lr=-1)
    assert "lr=-1" in msg and "greater than 0" in msg
    msg = error_of(width="wide")
    assert "width='wide'" in msg


def test_width_relative_parameterization_needs_base_width():
    assert "base_width" in error_of(parameterization="mup")


def test_head_layout_must_fit_the_width():
    assert "head_dim 48 must divide width 128" in error_of(width=128, head_dim=48)
    assert "n_heads 3 must divide width 128" in error_of(width=128, n_heads=3)
    assert "base_width=80: head_dim 32 must divide width 80" in error_of(
        width=128, head_dim=32, base_width=80
    )


def test_only_one_warmup_and_one_horizon():
    assert "warmup, warmup_tokens" in error_of(warmup=10, warmup_frac=0.1)
    assert "steps, tokens" in error_of(steps=10, tokens=1000)


def test_token_horizon_and_warmup_resolve_to_steps():
    cfg = TrainConfig(batch_size=4, seq_len=10, tokens=1001, warmup_tokens=95)
    assert cfg.total_steps == 26  # ceil(1001 / 40)
    assert cfg.warmup_steps == 3  # ceil(95 / 40)
    assert TrainConfig(steps=200, warmup_frac=0.1).warmup_steps == 20


def test_width_grows_through_heads_or_head_dim():
    assert TrainConfig(width=256, head_dim=64).resolved_heads() == (4, 64)
    assert TrainConfig(width=256, n_heads=2).resolved_heads() == (2, 128)
    assert TrainConfig(width=256, n_heads=2, base_width=64).resolved_heads(64) == (2, 32)
    assert TrainConfig(width=256, head_dim=32, base_width=64).resolved_heads(64) == (2, 32)


def test_set_options_parse_yaml_values():
    assert parse_set_options(["lr=1e-3", "betas=[0.9, 0.99]", "bias=true", "corpus=x.txt"]) == {
        "lr": 0.001,  # YAML 1.2 floats: 1e-3 is a number, not the string YAML 1.1 makes of it
        "betas": [0.9, 0.99],
        "bias": True,
        "corpus": "x.txt",
    }
    cfg = build_config(None, ["lr=1e-3", "betas=[0.9, 0.99]"])
    assert cfg.lr == 0.001 and cfg.betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set_options(["lr"])


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("width: 64\nlr: 0.01\n")
    cfg = build_config(path, ["lr=0.02"])
    assert (cfg.width, cfg.lr) == (64, 0.02)
    (tmp_path / "bad.yaml").write_text("width: [64\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line"):
        build_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        build_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        build_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError) as info:
        build_config(path, ["depht=3"])
    assert "c.yaml + --set" in str(info.value) and "depht" in str(info.value)


# --- ranges: every key gets the range the trainer supports ---
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"betas": [2, 3]}, "betas.0=2: Input should be less than 1"),
        ({"betas": [0.9, 1.0]}, "betas.1=1.0: Input should be less than 1"),
        ({"betas": [-0.1, 0.9]}, "betas.0=-0.1: Input should be greater than or equal to 0"),
        ({"betas": [0.9, float("nan")]}, "betas.1=nan: Input should be a finite number"),
        ({"lr": float("inf")}, "lr=inf: Input should be a finite number"),
        ({"lr": float("nan")}, "lr=nan: Input should be a finite number"),
        ({"lr": 0}, "lr=0: Input should be greater than 0"),
        ({"lr": 1e40}, "lr=1e+40: Input should be less than or equal to 1000000"),
        ({"mlp_ratio": float("inf")}, "mlp_ratio=inf: Input should be a finite number"),
        ({"mlp_ratio": 100}, "mlp_ratio=100: Input should be less than or equal to 64"),
        ({"mlp_ratio": 0.001}, "rounds to an MLP of 0 units"),
        ({"mlp_ratio": 0.01, "width": 128, "base_width": 32}, "base_width 32 rounds to an MLP of 0 units"),
        ({"init_std": float("-inf")}, "init_std=-inf: Input should be a finite number"),
        ({"init_mult": 1e7}, "init_mult=10000000.0: Input should be less than or equal to 1000000"),
        ({"output_mult": float("nan")}, "output_mult=nan"),
        ({"attn_mult": 0}, "attn_mult=0: Input should be greater than 0"),
        ({"embed_mult": float("inf")}, "embed_mult=inf"),
        ({"gamma_hidden": 1e300}, "gamma_hidden=1e+300: Input should be less than or equal to 1000000"),
        ({"gamma_embed": float("nan")}, "gamma_embed=nan"),
        ({"gamma_readout": -1}, "gamma_readout=-1"),
        ({"eps": float("inf")}, "eps=inf"),
        ({"weight_decay": float("nan")}, "weight_decay=nan"),
        ({"grad_clip": float("inf")}, "grad_clip=inf"),
        ({"momentum": 1.0}, "momentum=1.0: Input should be less than 1"),
        ({"warmup_frac": float("nan")}, "warmup_frac=nan"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio=1.5"),
        ({"decay_frac": 0}, "decay_frac=0"),
        ({"diverge_factor": float("inf")}, "diverge_factor=inf: Input should be a finite number"),
        ({"depth_alpha": float("nan"), "depth_scaling": "completep", "base_depth": 2}, "depth_alpha=nan"),
        ({"width": 1048576}, "width=1048576: Input should be less than or equal to 65536"),
        ({"base_width": 1048576}, "base_width=1048576: Input should be less than or equal to 65536"),
        ({"depth": 100000}, "depth=100000: Input should be less than or equal to 1024"),
        ({"base_depth": 2000}, "base_depth=2000"),
        ({"n_heads": 10**6}, "n_heads=1000000"),
        ({"head_dim": 10**6}, "head_dim=1000000"),
        ({"seq_len": 10**7}, "seq_len=10000000: Input should be less than or equal to 1048576"),
        ({"batch_size": 10**7}, "batch_size=10000000: Input should be less than or equal to 1048576"),
        ({"batch_size": 65536, "seq_len": 1024}, "67108864 tokens per step; at most 16777216"),
        ({"eval_batches": 10**6}, "eval_batches=1000000"),
        ({"eval_batches": 10000, "batch_size": 1024, "seq_len": 1024}, "validation tokens, kept in memory"),
        ({"steps": 10**10}, "steps=10000000000: Input should be less than or equal to 1000000000"),
        ({"tokens": 10**16}, "tokens=10000000000000000"),
        ({"tokens": 10**15, "batch_size": 1, "seq_len": 1}, "steps; at most 1000000000"),
        ({"warmup": 10**10}, "warmup=10000000000"),
        ({"warmup_tokens": 10**16}, "warmup_tokens=10000000000000000"),
        ({"eval_interval": 10**10}, "eval_interval=10000000000"),
        ({"diverge_patience": 10**10}, "diverge_patience=10000000000"),
        ({"vocab_size": 1}, "vocab_size=1: Input should be greater than or equal to 2"),
        ({"vocab_size": 10**7}, "vocab_size=10000000: Input should be less than or equal to 1048576"),
        ({"seed": -1}, "seed=-1"),
        ({"seed": 2**32}, "seed=4294967296: Input should be less than or equal to 4294967295"),
        ({"seed": 10**20}, "seed=100000000000000000000"),
        ({"threads": 10**6}, "threads=1000000"),
        ({"width": 65536, "depth": 4, "head_dim": 64}, "parameters; at most 1e+11"),
        ({"corpus": ""}, "corpus='': empty corpus"),
        ({"corpus": "a\x00b"}, "cannot contain a NUL"),
        ({"corpus": "x" * 5000}, "corpus='xxxxxx"),
    ],
)
def test_every_key_has_a_range(values, expected):
    msg = error_of(**values)
    assert expected in msg, msg
    assert len(msg) < 400, msg


def test_the_ends_of_each_range_are_accepted():
    from trainers.config import MAX_SEED

    TrainConfig(betas=(0.0, 0.999999), momentum=0.0, lr=1e6, eps=0.0, grad_clip=0.0, seed=MAX_SEED)
    TrainConfig(width=65536, depth=1, head_dim=64)  # ~5e10 parameters: one device of the future, maybe
    TrainConfig(depth=1024, width=64, steps=10**9, warmup=10**9)
    TrainConfig(batch_size=2**14, seq_len=2**10, eval_batches=1)
    TrainConfig(tokens=10**15, batch_size=2**14, seq_len=2**10, warmup_tokens=10**15)
    TrainConfig(vocab_size=2**20, mlp_ratio=64)
    assert (
        TrainConfig(width=64, depth=2).estimated_params()
        == (256 + 64) * 64 + 2 * (4 * 64 * 64 + 2 * 64 * 256 + 4 * 64) + 2 * 64 + 256 * 64
    )


def test_a_huge_value_is_shown_shortened():
    msg = error_of(lr=list(range(10**5)))
    assert msg.startswith("test.yaml: lr=[0, 1, 2, 3, 4, 5, ...]: ") and len(msg) < 200
    msg = error_of(**{"x" * 10**5: 1})
    assert len(msg) < 1000 and "unknown key 'xxx" in msg


# --- YAML: numbers with an exponent are floats ---
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-3", 0.001),
        ("1E5", 1e5),
        ("-2e-4", -2e-4),
        ("+3e2", 300.0),
        ("1.0e5", 1e5),
        ("1.0e-3", 0.001),
        (".5e1", 5.0),
        ("1_000e-3", 1.0),
        ("10", 10),
        ("0x10", 16),
        ("1.5", 1.5),
        (".inf", float("inf")),
        ("1e", "1e"),
        ("e5", "e5"),
        ("'1e-3'", "1e-3"),
        ("[1e-3, 2E-3]", [0.001, 0.002]),
    ],
)
def test_yaml_numbers(text, value):
    from trainers.config import load_yaml

    parsed = load_yaml(text)
    assert parsed == value and type(parsed) is type(value)


def test_set_and_config_files_read_exponents_as_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 1E-1\n")
    cfg = build_config(path, ["init_std=2e-2"])
    assert (cfg.lr, cfg.weight_decay, cfg.init_std) == (0.001, 0.1, 0.02)


def test_bad_set_values_are_one_line():
    with pytest.raises(ConfigError, match=r"^--set: mlp_ratio=inf: Input should be a finite number$"):
        build_config(None, ["mlp_ratio=.inf"])
    with pytest.raises(ConfigError, match=r"^--set: betas\.0=2: Input should be less than 1$"):
        build_config(None, ["betas=[2,3]"])


def test_config_files_are_bounded(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("lr: 0.1\n" + "# padding\n" * 30000)
    with pytest.raises(ConfigError, match=r"big\.yaml: more than 262144 bytes"):
        build_config(big)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "a: &a [1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "lr: *i\n"
    )
    with pytest.raises(ConfigError, match=r"bomb\.yaml: not valid YAML \(line \d+\): its aliases expand"):
        build_config(bomb)
    (tmp_path / "keys.yaml").write_text("1: 2\n")
    with pytest.raises(ConfigError, match=r"key 1 is not a name"):
        build_config(tmp_path / "keys.yaml")
    (tmp_path / "date.yaml").write_text("corpus: 2024-13-45\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line 1\): cannot read the value '2024-13-45'"):
        build_config(tmp_path / "date.yaml")
