"""`from trainers import parameterize`: sweeper's rules on models sweeper did not build.

Checked against sweeper's own plan (the GPT built by `trainers.parameterization.build`), on a plain
PyTorch model, and on Hugging Face GPT-2 and Llama built from configs (no download; skipped without the
`hf` extra)."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from trainers import parameterize
from trainers.config import ConfigError, TrainConfig
from trainers.foreign import coord_check_model
from trainers.model import GPT
from trainers.parameterization import ParamPlan, build

VOCAB = 300  # not 4 x any width used here: the readout is the one Linear with vocabulary outputs


class TinyLM(nn.Module):
    def __init__(self, width: int, heads_out: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.hidden = nn.Linear(width, 4 * width, bias=False)
        self.back = nn.Linear(4 * width, width, bias=False)
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleList(nn.Linear(width, VOCAB, bias=False) for _ in range(heads_out))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        x = x + self.back(torch.relu(self.hidden(x)))
        return self.heads[0](self.norm(x))


def by_name(p) -> dict[str, dict]:
    return {row["name"]: row for row in p.rows}


def test_rows_are_the_sweeper_params_table_and_follow_mup_across_widths():
    lr = 0.01
    wide = parameterize(TinyLM(128), base=TinyLM(32), parameterization="mup", lr=lr, output_mult=2.0)
    rows = by_name(wide)
    assert all(list(row) == list(ParamPlan.TABLE_KEYS) for row in rows.values())
    assert rows["embed.weight"]["role"] == "embedding" and rows["heads.0.weight"]["role"] == "readout"
    assert rows["hidden.weight"]["role"] == rows["back.weight"]["role"] == "hidden"
    assert rows["norm.weight"]["role"] == "vector"
    assert rows["hidden.weight"]["width_mult"] == 4.0
    assert rows["hidden.weight"]["lr"] == pytest.approx(lr / 4)  # Adam LR 1/m for hidden matrices
    assert rows["back.weight"]["lr"] == pytest.approx(lr / 4)
    assert rows["embed.weight"]["lr"] == rows["heads.0.weight"]["lr"] == rows["norm.weight"]["lr"] == lr
    assert rows["heads.0.weight"]["multiplier"] == pytest.approx(2.0 / 4)  # output_mult / m
    base = by_name(parameterize(TinyLM(32), base=TinyLM(32), parameterization="mup", lr=lr, init="fan_in"))
    wide_fan_in = by_name(
        parameterize(TinyLM(128), base=TinyLM(32), parameterization="mup", lr=lr, init="fan_in")
    )
    ratio = wide_fan_in["hidden.weight"]["init_std"] / base["hidden.weight"]["init_std"]
    assert ratio == pytest.approx(0.5)  # 1/sqrt(fan_in): 1/sqrt(4)


def test_the_plan_of_sweepers_own_gpt_is_the_same_through_the_public_api():
    cfg = TrainConfig(
        width=128,
        base_width=32,
        depth=2,
        parameterization="mup",
        lr=0.01,
        residual_init="none",
        output_mult=3.0,
    )
    _, plans = build(cfg, VOCAB, device="meta")
    with torch.device("meta"):
        model = GPT(cfg, VOCAB)
        base = GPT(cfg.model_copy(update={"width": 32}), VOCAB)
    p = parameterize(
        model,
        base=base,
        roles=model.parameter_roles(),
        parameterization="mup",
        lr=0.01,
        residual_init="none",
        output_mult=3.0,
    )
    keys = ("role", "width_mult", "init_std", "multiplier", "lr", "weight_decay")
    expected = {plan.name: {k: getattr(plan, k) for k in keys} for plan in plans}
    got = {row["name"]: {k: row[k] for k in keys} for row in p.rows}
    assert got.keys() == expected.keys()
    for name in expected:
        for key in keys:
            assert got[name][key] == pytest.approx(expected[name][key]), (name, key)


def test_param_groups_carry_each_tensors_lr_weight_decay_and_eps():
    p = parameterize(TinyLM(64), base=TinyLM(32), parameterization="mup", lr=0.01, weight_decay=0.1)
    groups = {g["name"]: g for g in p.param_groups}
    assert groups["hidden.weight"]["lr"] == pytest.approx(0.005)
    assert groups["norm.weight"]["weight_decay"] == 0.0  # vectors take no weight decay
    # The default weight_decay_mode (coupled_scaled) keeps lr x wd width-free, as the mup package does.
    hidden = groups["hidden.weight"]
    assert hidden["lr"] * hidden["weight_decay"] == pytest.approx(0.01 * 0.1)
    assert all("eps" in g for g in groups.values())
    optimizer = torch.optim.AdamW(p.param_groups)
    assert len(optimizer.param_groups) == len(list(TinyLM(64).parameters()))


def test_the_readout_multiplier_is_a_forward_hook_and_state_dict_is_untouched():
    torch.manual_seed(0)
    model = TinyLM(64)
    idx = torch.randint(0, VOCAB, (2, 8))
    plain = model(idx)
    keys = list(model.state_dict())
    p = parameterize(model, base=TinyLM(32), parameterization="mup", lr=0.01)
    assert list(model.state_dict()) == keys  # nothing on the tensors, nothing in the checkpoint
    assert torch.allclose(model(idx), plain * 0.5)  # readout multiplier 1/m
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    again = TinyLM(64)
    again.load_state_dict(torch.load(buffer))
    parameterize(again, base=TinyLM(32), parameterization="mup", lr=0.01)
    assert torch.equal(again(idx), model(idx))
    p.remove()
    assert torch.equal(model(idx), plain)


def test_an_ambiguous_output_layer_is_one_error_naming_the_candidates_and_the_key():
    with pytest.raises(
        ConfigError, match=r"2 candidate output layers \(heads.0.weight, heads.1.weight\).*roles="
    ):
        parameterize(TinyLM(64, heads_out=2), parameterization="mup")
    p = parameterize(
        TinyLM(64, heads_out=2),
        roles={"heads.0.weight": "readout", "heads.1.weight": "hidden"},
        parameterization="mup",
    )
    assert by_name(p)["heads.1.weight"]["role"] == "hidden"


def test_keys_the_model_decides_are_refused():
    with pytest.raises(ConfigError, match="width"):
        parameterize(TinyLM(64), width=64)
    with pytest.raises(ConfigError, match="no parameter"):
        parameterize(TinyLM(64), roles={"nope.*": "hidden"})


# --- Hugging Face models built from configs ------------------------------------------------------------

try:
    import transformers
except ImportError:  # the hf extra is optional: these tests skip without it, the others still run
    transformers = None
needs_hf = pytest.mark.skipif(transformers is None, reason="needs the hf extra: pip install -e '.[hf]'")


def gpt2(width: int, heads: int):
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=width,
        n_layer=2,
        n_head=heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def llama(width: int, heads: int):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


@needs_hf
def test_gpt2_roles_layouts_and_mup_ratios():
    p = parameterize(gpt2(128, 8), base=gpt2(32, 2), parameterization="mup", lr=0.01, output_mult=2.0)
    rows = by_name(p)
    assert rows["transformer.wte.weight"]["role"] == "embedding" and rows["transformer.wte.weight"]["tied"]
    assert rows["lm_head.weight"]["role"] == "readout" and rows["lm_head.weight"]["tied"]
    assert rows["lm_head.weight"]["multiplier"] == pytest.approx(2.0 / 4)
    fc = rows["transformer.h.0.mlp.c_fc.weight"]  # Conv1D: stored (in, out)
    assert (
        fc["role"] == "hidden" and fc["shape"] == [128, 512] and (fc["fan_in"], fc["fan_out"]) == (128, 512)
    )
    assert fc["width_mult"] == 4.0 and fc["lr"] == pytest.approx(0.01 / 4)
    proj = rows["transformer.h.0.mlp.c_proj.weight"]
    assert (proj["fan_in"], proj["fan_out"]) == (512, 128) and proj["lr"] == pytest.approx(0.01 / 4)
    assert rows["transformer.ln_f.weight"]["role"] == "vector"


@needs_hf
def test_llama_roles_and_mup_ratios():
    p = parameterize(llama(128, 8), base=llama(32, 2), parameterization="mup", lr=0.01)
    rows = by_name(p)
    assert rows["model.embed_tokens.weight"]["role"] == "embedding"
    assert rows["lm_head.weight"]["role"] == "readout" and not rows["lm_head.weight"]["tied"]
    assert rows["lm_head.weight"]["multiplier"] == pytest.approx(1 / 4)
    q = rows["model.layers.0.self_attn.q_proj.weight"]
    assert q["role"] == "hidden" and q["lr"] == pytest.approx(0.01 / 4)
    assert rows["model.layers.0.input_layernorm.weight"]["role"] == "vector"


@needs_hf
@pytest.mark.parametrize("make", [gpt2, llama])
def test_mup_at_the_base_width_is_bit_identical_to_sp_after_adamw_steps(make):
    idx = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    losses = {}
    for name in ("sp", "mup"):
        model = make(32, 2)
        p = parameterize(model, base=make(32, 2), parameterization=name, lr=3e-3, apply_init=True)
        optimizer = torch.optim.AdamW(p.param_groups)
        trace = []
        for _ in range(3):
            loss = model(idx, labels=idx).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trace.append(loss.item())
        losses[name] = trace
    assert losses["sp"] == losses["mup"] and all(math.isfinite(x) for x in losses["sp"])


@needs_hf
@pytest.mark.parametrize("make", [gpt2, llama])
def test_the_coordinate_check_passes_mup_and_fails_sp_on_foreign_models(make):
    def at(width: int):
        return make(width, width // 16)

    mup = coord_check_model(at, [32, 64, 128, 256], steps=4, seeds=2, parameterization="mup", lr=1e-2)
    sp = coord_check_model(at, [32, 64, 128, 256], steps=4, seeds=2, parameterization="sp", lr=1e-2)
    assert mup.passed, mup.failing()
    assert not sp.passed
    failing = {s["module"] for s in sp.failing()}
    assert "hidden" in failing  # SP's hidden activations grow with width once Adam moves the weights
    last = {s["module"]: s["slope"] for s in sp.slopes if s["step"] == 4}
    assert last["hidden"] > 0.5


@pytest.mark.slow
def test_the_plan_survives_torch_compile():
    """State lives in the plan and in forward hooks, not on tensors: a compiled model computes the same."""
    torch.manual_seed(0)
    model = TinyLM(64)
    parameterize(model, base=TinyLM(32), parameterization="mup", lr=0.01, output_mult=3.0)
    idx = torch.randint(0, VOCAB, (2, 8))
    eager = model(idx)
    compiled = torch.compile(model)
    assert torch.allclose(compiled(idx), eager, atol=1e-5, rtol=1e-5)
    unscaled = TinyLM(64)
    unscaled.load_state_dict(model.state_dict())
    assert torch.allclose(unscaled(idx) * 3.0 / 2, eager, atol=1e-5, rtol=1e-5)  # output_mult / m


try:
    import mup
except ImportError:  # optional: `pip install --no-deps mup` (CI does; its torchvision would replace torch)
    mup = None


@pytest.mark.skipif(mup is None, reason="needs the mup package: pip install --no-deps mup")
def test_the_plan_agrees_with_the_mup_package_on_lr_weight_decay_and_the_readout_multiplier():
    """Where the `mup` package applies (its MuAdam and MuReadout), the plan gives the same numbers. One
    deliberate difference: sweeper gives vectors (biases, gains) no weight decay."""

    class MupLM(TinyLM):
        def __init__(self, width: int) -> None:
            super().__init__(width)
            self.heads = nn.ModuleList([mup.MuReadout(width, VOCAB, bias=False, output_mult=2.0)])

    lr, wd = 0.01, 0.1
    theirs = MupLM(128)
    mup.set_base_shapes(theirs, MupLM(32), delta=MupLM(64))
    groups = mup.MuAdamW(theirs.parameters(), lr=lr, weight_decay=wd).param_groups
    names = {id(p): n for n, p in theirs.named_parameters()}
    expected = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    ours = by_name(
        parameterize(
            TinyLM(128), base=TinyLM(32), parameterization="mup", lr=lr, weight_decay=wd, output_mult=2.0
        )
    )
    for name, (their_lr, their_wd) in expected.items():
        assert ours[name]["lr"] == pytest.approx(their_lr), name
        if ours[name]["role"] != "vector":
            assert ours[name]["weight_decay"] == pytest.approx(their_wd), name
    readout = theirs.heads[0]
    assert ours["heads.0.weight"]["multiplier"] == pytest.approx(readout.output_mult / readout.width_mult())


def test_the_plan_builds_its_optimizer_muon_included():
    from trainers.optim import Muon, OptimizerPair

    model = TinyLM(64)
    p = parameterize(
        model, base=TinyLM(32), parameterization="mup", lr=0.01, optimizer="muon", muon_rule="spectral"
    )
    opt = p.optimizer()
    assert isinstance(opt, OptimizerPair) and isinstance(opt.optimizers[0], Muon)
    stepped = {id(t) for o in opt.optimizers for g in o.param_groups for t in g["params"]}
    assert stepped == {id(t) for t in model.parameters()}
    muon_names = {n for g in opt.optimizers[0].param_groups for n in g["names"]}
    assert muon_names == {r["name"] for r in p.rows if r["optimizer"] == "muon"} and muon_names
    idx = torch.randint(0, VOCAB, (2, 8))
    before = [t.detach().clone() for t in model.parameters()]
    torch.nn.functional.cross_entropy(model(idx).reshape(-1, VOCAB), idx.reshape(-1)).backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
