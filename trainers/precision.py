"""Which precision a run uses: `dtype: auto` picks bf16 autocast where it is fast, fp32 elsewhere.

CUDA: bf16 where the GPU supports it. CPU: bf16 only if a bf16 matmul (forward and backward under
autocast, at a transformer-MLP shape) measured on this machine beats fp32 by `FAST_ENOUGH`. On CPUs
without native bf16 (AVX2 only: most laptops and many servers) autocast emulates it, 10-20x slower than
fp32; on CPUs with AVX512-BF16 or AMX it is faster. The measurement is cached per CPU, capability,
torch version and thread count (in `$SWEEPER_CACHE`, default `~/.cache/sweeper`), so it runs once.

The resolved precision is what a run reports (`TrainResult.dtype`, the store's `dtype_used`). The trial
id hashes the config as written (`auto`), so a study resumed on the same machine never reruns finished
trials; `sweeper verify` warns when the trials of one variant ran under different precisions.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from trainers.atomic import atomic_write_json

FAST_ENOUGH = 1.15  # bf16 must be at least this much faster than fp32 to be chosen
PROBE_SHAPE = (256, 256, 1024)  # rows x fan_in -> fan_out: one MLP matmul of a small GPT
PROBE_REPEATS = 5


@dataclass(frozen=True)
class CpuBf16Probe:
    cpu: str
    capability: str
    torch: str
    threads: int
    fp32_s: float  # median seconds of one forward + backward at PROBE_SHAPE
    bf16_s: float

    @property
    def speedup(self) -> float:
        """bf16 speed over fp32's (above 1: bf16 is faster)."""
        return self.fp32_s / self.bf16_s if self.bf16_s > 0 else 0.0

    @property
    def fast(self) -> bool:
        return self.speedup >= FAST_ENOUGH

    def describe(self) -> str:
        if self.speedup >= 1:
            return f"bf16 {self.speedup:.1f}x faster than fp32 on this CPU ({self.capability})"
        return (
            f"bf16 {1 / self.speedup:.1f}x slower than fp32 on this CPU ({self.capability}, no native bf16)"
        )


def resolve_dtype(requested: str, device: torch.device) -> str:
    """`fp32` or `bf16`: the precision a run with `dtype=requested` uses on `device`."""
    if requested != "auto":
        if requested == "bf16" and device.type == "cpu":
            warn_if_slow_bf16()
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_bf16_probe().fast else "fp32"
    return "fp32"


_warned = False


def warn_if_slow_bf16() -> None:
    """One line on stderr, once per process, when bf16 was asked for on a CPU where it is slow."""
    global _warned
    probe = cpu_bf16_probe()
    if probe.fast or _warned:
        return
    _warned = True
    print(
        f"warning: dtype=bf16: {probe.describe()}; this run will be slow (dtype=auto picks fp32 here)",
        file=sys.stderr,
    )


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    from trainers.data import resolve_cache_dir

    return resolve_cache_dir()


def cpu_bf16_probe() -> CpuBf16Probe:
    """The bf16-vs-fp32 measurement of this CPU at the current thread count, from the cache if there."""
    key = {
        "cpu": cpu_name(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    path = cache_dir() / "cpu_bf16_probe.json"
    cached = _read_cache(path)
    name = "|".join(str(v) for v in key.values())
    if name in cached:
        try:
            return CpuBf16Probe(**cached[name])
        except TypeError:
            pass  # an entry of another format: measure again
    probe = CpuBf16Probe(**key, fp32_s=_time_matmul(False), bf16_s=_time_matmul(True))
    cached[name] = asdict(probe)
    write_json_atomic(path, cached)
    return probe


def _time_matmul(bf16: bool) -> float:
    rows, fan_in, fan_out = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(fan_out, fan_in, generator=generator, requires_grad=True)
    x = torch.randn(rows, fan_in, generator=generator, requires_grad=True)

    def once() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = torch.nn.functional.linear(x, weight)
        y.float().sum().backward()
        return time.perf_counter() - start

    once()  # first call: kernel selection and allocation
    times = sorted(once() for _ in range(PROBE_REPEATS))
    return times[len(times) // 2]


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json_atomic(path: Path, data: dict) -> None:
    """A cache file: atomic; a read-only home just means measuring again next time."""
    atomic_write_json(path, data, quiet=True)
