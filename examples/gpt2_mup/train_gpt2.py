"""A Hugging Face GPT-2, built from a config (nothing downloaded), trained on sweeper's built-in corpus
under SP or muP: sweeper's rules come from `trainers.parameterize`, the model and the loop are plain
PyTorch and `transformers`. sweeper calls `train(config, report)` once per trial (study.yaml)."""

from __future__ import annotations

import math

import torch
import transformers

from trainers import parameterize
from trainers.data import Batches, load_corpus
from trainers.foreign import causal_lm_loss


def gpt2(width: int, config: dict, vocab_size: int) -> transformers.GPT2LMHeadModel:
    # The head size stays fixed and the head count grows with width, so the attention scale 1/sqrt(d_head)
    # is the same at every width (muP's 1/d_head rule only matters when d_head itself grows).
    shape = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=config["seq_len"],
        n_embd=width,
        n_layer=config["depth"],
        n_head=width // config["head_dim"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=config["tie_embeddings"],
        loss_type="ForCausalLM",
    )
    return transformers.GPT2LMHeadModel(shape)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Batches, n: int) -> float:
    model.eval()
    losses = [causal_lm_loss(model, x, y).item() for x, y in batches.val_batches(n)]
    model.train()
    return sum(losses) / len(losses)


def train(config: dict, report) -> dict:
    torch.manual_seed(config["seed"])
    corpus = load_corpus("builtin")
    model = gpt2(config["width"], config, corpus.vocab_size)
    with torch.device("meta"):  # the base model only lends its shapes
        base = gpt2(config["base_width"], config, corpus.vocab_size)
    p = parameterize(
        model,
        base=base,
        parameterization=config["parameterization"],
        lr=config["lr"],
        output_mult=config["output_mult"],
        embed_mult=config["embed_mult"],
        init="const",
        init_std=config["init_std"],
        apply_init=True,
        seed=config["seed"],
    )
    optimizer = torch.optim.AdamW(p.param_groups, betas=(0.9, 0.95))
    steps, warmup = config["steps"], config["warmup"]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    batches = Batches(corpus, config["batch_size"], config["seq_len"], config["seed"])
    report({"step": 0, "val_loss": evaluate(model, batches, config["eval_batches"])})
    for step in range(1, steps + 1):
        x, y = batches.train_batch()
        loss = causal_lm_loss(model, x, y)
        if not math.isfinite(loss.item()):
            return {"status": "diverged", "divergence_reason": f"train loss {loss.item()} at step {step}"}
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if step % config["eval_interval"] == 0 or step == steps:
            val = evaluate(model, batches, config["eval_batches"])
            report({"step": step, "val_loss": val, "train_loss": loss.item()})
            if not math.isfinite(val):
                return {"status": "diverged", "divergence_reason": f"val loss {val} at step {step}"}
    return {"status": "completed", "n_params": sum(t.numel() for t in model.parameters())}
