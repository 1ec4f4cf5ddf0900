"""Muon's orthogonalisation on this machine: torch.optim.Muon's own (bfloat16) against sweeper's float32
one (trainers.optim.Muon with fp32_orthogonalisation), and AdamW beside them, on one MLP-shaped matrix
(4w x w) per width, one thread, side by side in one run. Prints the median of 5 timed steps each.

    python bench/muon_step.py [--widths 128 256 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainers.optim import Muon
from trainers.precision import cpu_name


def step_seconds(make, width: int, repeats: int = 5) -> float:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4 * width, width) * width**-0.5)
    opt = make([p])
    x = torch.randn(1024, width)
    times = []
    for i in range(repeats + 2):
        (x @ p.T).square().mean().backward()
        start = time.perf_counter()
        opt.step()
        opt.zero_grad()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"CPU: {cpu_name()}, torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"{'width':>6} {'AdamW':>10} {'Muon bf16':>10} {'Muon fp32':>10} {'bf16/fp32':>10}")
    for width in args.widths:
        adamw = step_seconds(lambda ps: torch.optim.AdamW(ps, lr=1e-3), width)
        bf16 = step_seconds(lambda ps: Muon(ps, lr=1e-3, fp32_orthogonalisation=False), width)
        fp32 = step_seconds(lambda ps: Muon(ps, lr=1e-3, fp32_orthogonalisation=True), width)
        print(
            f"{width:>6} {adamw * 1e3:>8.1f}ms {bf16 * 1e3:>8.1f}ms {fp32 * 1e3:>8.1f}ms {bf16 / fp32:>9.1f}x"
        )


if __name__ == "__main__":
    main()
