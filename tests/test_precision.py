"""dtype: auto resolves to the precision that is fast on the machine; the resolution is reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sweeper.store import trial_row
from trainers import precision
from trainers.config import TrainConfig
from trainers.train import train


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path))
    return tmp_path


def test_auto_on_cpu_follows_the_measured_bf16_speed(cache):
    probe = precision.cpu_bf16_probe()
    assert probe.fp32_s > 0 and probe.bf16_s > 0 and probe.cpu and probe.threads == torch.get_num_threads()
    expected = "bf16" if probe.speedup >= precision.FAST_ENOUGH else "fp32"
    assert precision.resolve_dtype("auto", torch.device("cpu")) == expected
    assert precision.resolve_dtype("fp32", torch.device("cpu")) == "fp32"


def test_the_probe_is_measured_once_per_machine_and_thread_count(cache, monkeypatch):
    first = precision.cpu_bf16_probe()
    assert (cache / "cpu_bf16_probe.json").exists()

    def must_not_measure(bf16: bool) -> float:
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(precision, "_time_matmul", must_not_measure)
    assert precision.cpu_bf16_probe() == first
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        with pytest.raises(AssertionError, match="measured again"):
            precision.cpu_bf16_probe()  # another thread count is another measurement
    finally:
        torch.set_num_threads(threads)


def test_a_slow_bf16_is_chosen_by_auto_never_and_warned_about_when_asked_for(cache, monkeypatch, capsys):
    slow = precision.CpuBf16Probe("cpu", "AVX2", "t", 1, fp32_s=0.01, bf16_s=0.2)
    fast = precision.CpuBf16Probe("cpu", "AVX512_BF16", "t", 1, fp32_s=0.02, bf16_s=0.01)
    assert not slow.fast and fast.fast
    assert "20.0x slower" in slow.describe() and "2.0x faster" in fast.describe()
    monkeypatch.setattr(precision, "cpu_bf16_probe", lambda: slow)
    monkeypatch.setattr(precision, "_warned", False)
    assert precision.resolve_dtype("auto", torch.device("cpu")) == "fp32"
    assert precision.resolve_dtype("bf16", torch.device("cpu")) == "bf16"
    assert precision.resolve_dtype("bf16", torch.device("cpu")) == "bf16"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["warning: dtype=bf16: bf16 20.0x slower than fp32 on this CPU (AVX2, no native bf16); "
                     "this run will be slow (dtype=auto picks fp32 here)"]  # fmt: skip
    monkeypatch.setattr(precision, "cpu_bf16_probe", lambda: fast)
    monkeypatch.setattr(precision, "_warned", False)
    assert precision.resolve_dtype("auto", torch.device("cpu")) == "bf16"
    precision.resolve_dtype("bf16", torch.device("cpu"))
    assert capsys.readouterr().err == ""


def test_train_reports_the_precision_that_ran(cache):
    config = TrainConfig(width=32, steps=2, eval_interval=2, eval_batches=1, seq_len=16, batch_size=2)
    assert train(config.with_updates(dtype="bf16")).dtype == "bf16"
    auto = train(config.with_updates(dtype="auto"))
    assert auto.dtype == precision.resolve_dtype("auto", torch.device("cpu"))
    assert auto.summary()["dtype"] == auto.dtype
    row = trial_row(
        trial_id="x", study="s", variant="v", seed=0, scale={}, params={},
        config=config.model_dump(mode="json"), status="completed", objective=1.0, summary=auto.summary(),
    )  # fmt: skip
    assert row["dtype_used"] == auto.dtype and row["dtype"] == "fp32"


def test_cli_json_prints_the_resolved_dtype_and_warns_once_on_slow_bf16(cache):
    base = [sys.executable, "-m", "sweeper.cli", "train", "--json", "--set", "width=32", "--set", "steps=2"]
    base += ["--set", "eval_interval=2", "--set", "seq_len=16", "--set", "batch_size=2"]
    auto = subprocess.run([*base, "--set", "dtype=auto"], capture_output=True, text=True, timeout=120)
    assert auto.returncode == 0, auto.stderr
    assert json.loads(auto.stdout)["dtype"] in ("fp32", "bf16")
    bf16 = subprocess.run([*base, "--set", "dtype=bf16"], capture_output=True, text=True, timeout=120)
    assert bf16.returncode == 0 and json.loads(bf16.stdout)["dtype"] == "bf16"
    warnings = [line for line in bf16.stderr.splitlines() if line.startswith("warning: dtype=bf16")]
    probe = precision.cpu_bf16_probe()  # the subprocess measured with the same cache
    assert len(warnings) == (0 if probe.fast else 1)
    if warnings:
        assert "slower than fp32" in warnings[0]
