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
        "lr": "1e-3",
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
