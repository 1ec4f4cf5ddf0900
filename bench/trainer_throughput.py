"""Trainer throughput: sweeper's `train()` against a plain nanoGPT-style loop on the same shapes.

    python bench/trainer_throughput.py                 # CPU, 1 thread, widths 64..512, depth 2
    python bench/trainer_throughput.py --device cuda --widths 768 --depth 12 --seq-len 1024 \
        --batch-size 16 --dtypes bf16 --compile both   # GPT-2-small shapes on a GPU

Both sides train the same shapes on the same batches (trainers.data.Batches), with AdamW, a cosine
schedule, global-norm clipping and a per-step `loss.item()`. The baseline has none of sweeper's machinery
(parameter plan, per-group LRs, multipliers, reports, divergence checks). Runs are paired (sweeper, then
the baseline, on the same shape) and repeated; the table gives the medians of each side's tokens/s,
`ratio` = the first column over the second (>= 0.95 is the target), and `paired` = the median of each
pair's own ratio (less swayed by the machine drifting between pairs).

`--dtypes auto` (the default) runs fp32, and bf16 only where this CPU's bf16 is native
(trainers.precision's measurement); on a CPU that emulates bf16 (AVX2 only) its rows are 10-20x slower and
would take most of the run. `--dtypes fp32,bf16` asks for them anyway.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import TrainConfig
from trainers.data import Batches, load_corpus
from trainers.train import train


# --- the baseline: a nanoGPT-style GPT with nothing but the architecture -----------------------------
class PlainBlock(nn.Module):
    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln_1 = nn.LayerNorm(width, bias=False)
        self.c_attn = nn.Linear(width, 3 * width, bias=False)
        self.c_proj = nn.Linear(width, width, bias=False)
        self.ln_2 = nn.LayerNorm(width, bias=False)
        self.c_fc = nn.Linear(width, 4 * width, bias=False)
        self.mlp_proj = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, width: int, depth: int, n_heads: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(PlainBlock(width, n_heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width, bias=False)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        for p in self.parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def baseline_tokens_per_s(cfg: TrainConfig, device: torch.device) -> float:
    corpus = load_corpus(cfg.corpus)
    batches = Batches(corpus, cfg.batch_size, cfg.seq_len, cfg.seed, device)
    n_heads, _ = cfg.resolved_heads()
    model = PlainGPT(corpus.vocab_size, cfg.seq_len, cfg.width, cfg.depth, n_heads).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        foreach=True,
    )
    forward = torch.compile(model) if cfg.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bf16")
    batches.val_batches(cfg.eval_batches)
    elapsed = 0.0
    for step in range(cfg.total_steps):
        t0 = time.perf_counter()
        lr = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.total_steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = batches.train_batch()
        with autocast:
            loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        elapsed += time.perf_counter() - t0
    return cfg.total_steps * cfg.tokens_per_step / elapsed


def steps_for(width: int, depth: int, seconds: float, tokens_per_step: int, device: str) -> int:
    """Roughly `seconds` of training on one CPU thread (flop-based guess), at least 10 steps."""
    if device == "cuda":
        return 60
    flops_per_token = 6 * 12 * depth * width * width
    return max(10, int(seconds * 20e9 / (flops_per_token * tokens_per_step)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--widths", default="64,128,256,512")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtypes", default="auto", help="comma list of fp32, bf16; auto: fp32, plus bf16 where it is native"
    )
    parser.add_argument("--compile", choices=["off", "on", "both"], default="off")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="target seconds per measurement (CPU)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device bf16 peak, for MFU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]

    dtypes = args.dtypes.split(",")
    from trainers.precision import cpu_bf16_probe, cpu_name

    if args.dtypes == "auto":
        dtypes = ["fp32"]
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            dtypes.append("bf16")
        elif device.type == "cpu":
            probe = cpu_bf16_probe()
            if probe.fast:
                dtypes.append("bf16")
            else:
                print(f"bf16 rows skipped: {probe.describe()} (--dtypes fp32,bf16 runs them anyway)")
    machine = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name()
    print(f"{machine}, capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    print(
        f"device {args.device}, {args.threads} thread(s), depth {args.depth}, head_dim {args.head_dim}, "
        f"seq {args.seq_len}, batch {args.batch_size}, {args.repeats} paired repeats, medians"
    )
    header = (
        f"{'width':>6} {'dtype':>5} {'compile':>7} {'sweeper tok/s':>14} {'baseline tok/s':>15} {'ratio':>6} "
        f"{'paired':>6} {'GFLOP/s':>8}"
    )
    if args.peak_tflops:
        header += f" {'MFU':>6}"
    print(header)
    fp32_rate: dict[int, float] = {}
    ratios = []
    for width in (int(w) for w in args.widths.split(",")):
        for dtype in dtypes:
            for compiled in compiles:
                tokens_per_step = args.batch_size * args.seq_len
                steps = steps_for(width, args.depth, args.seconds, tokens_per_step, device.type)
                cfg = TrainConfig(
                    width=width,
                    depth=args.depth,
                    head_dim=args.head_dim,
                    seq_len=args.seq_len,
                    batch_size=args.batch_size,
                    steps=steps,
                    eval_interval=steps,
                    eval_batches=1,
                    dtype=dtype,
                    compile=compiled,
                    device=args.device,
                    lr=1e-3,
                )
                ours, theirs = [], []
                flops = 0
                for _ in range(args.repeats):
                    result = train(cfg)
                    ours.append(result.tokens_per_s)
                    flops = result.flops_per_token
                    theirs.append(baseline_tokens_per_s(cfg, device))
                ours_med, theirs_med = statistics.median(ours), statistics.median(theirs)
                ratio = ours_med / theirs_med  # what the two columns beside it say
                paired = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
                ratios.append(ratio)
                gflops = ours_med * flops / 1e9
                line = (
                    f"{width:>6} {dtype:>5} {('on' if compiled else 'off'):>7} {ours_med:>14,.0f} "
                    f"{theirs_med:>15,.0f} {ratio:>6.3f} {paired:>6.3f} {gflops:>8.1f}"
                )
                if args.peak_tflops:
                    line += f" {gflops / (args.peak_tflops * 1e3):>6.1%}"
                if dtype == "fp32" and not compiled:
                    fp32_rate[width] = ours_med
                elif dtype == "bf16" and width in fp32_rate:
                    line += f"   bf16/fp32 {ours_med / fp32_rate[width]:.2f}x"
                print(line, flush=True)
    print(f"median sweeper/baseline ratio over all rows: {statistics.median(ratios):.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
