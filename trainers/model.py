"""A decoder-only GPT in the manner of nanoGPT's model file.

Token + learned position embeddings, pre-norm blocks (causal self-attention, GELU MLP), final norm,
readout. The model knows nothing of parameterizations beyond two things: each parameter's role
(`parameter_roles`) and plain float multipliers (`multiplier`, `scale`) that trainers.parameterization
sets; at the defaults (1.0 and 1/sqrt(d_head)) it is a plain GPT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import TrainConfig


class ScaledLinear(nn.Linear):
    """y = multiplier * (x W^T) + b. The multiplier is a forward constant, not a parameter."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.multiplier = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multiplier == 1.0:
            return F.linear(x, self.weight, self.bias)
        y = F.linear(x, self.weight) * self.multiplier
        return y if self.bias is None else y + self.bias


class Norm(nn.Module):
    """LayerNorm or RMSNorm, with or without a learnable gain (and a bias for LayerNorm if `bias`)."""

    def __init__(self, width: int, kind: str, gain: bool, bias: bool) -> None:
        super().__init__()
        self.kind, self.shape = kind, (width,)
        self.weight = nn.Parameter(torch.ones(width)) if gain else None
        self.bias = nn.Parameter(torch.zeros(width)) if bias and kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rmsnorm":
            return F.rms_norm(x, self.shape, self.weight, eps=1e-5)
        return F.layer_norm(x, self.shape, self.weight, self.bias, eps=1e-5)


class Embedding(nn.Module):
    """(token table[idx] + position table[t]) * multiplier."""

    def __init__(self, vocab_size: int, seq_len: int, width: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(vocab_size, width))
        self.positions = nn.Parameter(torch.empty(seq_len, width))
        self.multiplier = 1.0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = F.embedding(idx, self.tokens) + self.positions[: idx.shape[1]]
        return x if self.multiplier == 1.0 else x * self.multiplier


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, n_heads: int, head_dim: int, bias: bool) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        self.q = ScaledLinear(width, width, bias)
        self.k = ScaledLinear(width, width, bias)
        self.v = ScaledLinear(width, width, bias)
        self.out = ScaledLinear(width, width, bias)
        self.scale = head_dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.up = ScaledLinear(width, hidden, bias)
        self.down = ScaledLinear(hidden, width, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: TrainConfig, n_heads: int, head_dim: int) -> None:
        super().__init__()
        hidden = round(cfg.mlp_ratio * cfg.width)
        self.norm_attn = Norm(cfg.width, cfg.norm, cfg.norm_gain, cfg.bias)
        self.attn = CausalSelfAttention(cfg.width, n_heads, head_dim, cfg.bias)
        self.norm_mlp = Norm(cfg.width, cfg.norm, cfg.norm_gain, cfg.bias)
        self.mlp = MLP(cfg.width, hidden, cfg.bias)
        self.residual_mult = 1.0  # depth scaling: each branch x (depth / base_depth)^-alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual_mult == 1.0:
            x = x + self.attn(self.norm_attn(x))
            return x + self.mlp(self.norm_mlp(x))
        x = x + self.residual_mult * self.attn(self.norm_attn(x))
        return x + self.residual_mult * self.mlp(self.norm_mlp(x))


class GPT(nn.Module):
    TIED_EMBEDDING = "embed.tokens"
    TIED_READOUT = "lm_head.weight"

    def __init__(self, cfg: TrainConfig, vocab_size: int) -> None:
        super().__init__()
        n_heads, head_dim = cfg.resolved_heads()
        self.seq_len = cfg.seq_len
        self.embed = Embedding(vocab_size, cfg.seq_len, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg, n_heads, head_dim) for _ in range(cfg.depth))
        self.norm_final = Norm(cfg.width, cfg.norm, cfg.norm_gain, cfg.bias)
        self.lm_head = ScaledLinear(cfg.width, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.tokens

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_final(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def parameter_roles(self) -> dict[str, str]:
        """embedding | hidden | readout | vector (biases and norm gains), per parameter name."""
        roles = {}
        for name, p in self.named_parameters():
            if name.startswith("embed."):
                roles[name] = "embedding"
            elif name.startswith("lm_head."):
                roles[name] = "readout" if p.ndim == 2 else "vector"
            else:
                roles[name] = "hidden" if p.ndim == 2 else "vector"
        return roles

    def residual_output_names(self) -> set[str]:
        """Projections whose output is added to the residual stream (GPT-2 scales their init)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("attn.out.weight", "mlp.down.weight"))}

    def gain_names(self) -> set[str]:
        return {
            f"{n}.weight" for n, m in self.named_modules() if isinstance(m, Norm) and m.weight is not None
        }

    def matmul_params(self) -> int:
        """Parameters used in matrix multiplies per token: every 2-D weight but the embedding tables,
        plus the readout (counted once more when it is tied to the token table)."""
        n = sum(
            p.numel() for name, p in self.named_parameters() if p.ndim == 2 and not name.startswith("embed.")
        )
        if self.lm_head.weight is self.embed.tokens:
            n += self.lm_head.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 N for the matmuls plus 12 L d T for attention (PaLM, appendix B)."""
        width = self.embed.tokens.shape[1]
        return 6 * self.matmul_params() + 12 * len(self.blocks) * width * self.seq_len
