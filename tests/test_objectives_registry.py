"""One battery over the whole registry (PEFT-style): a new objective gets every test by registering.

Each objective is built on the tiny random Llama (d = 32, 3 layers) and the toy batch: finite fp32 scalar
loss, gradients reach the model, seeded determinism, λ = 0 gives CE's gradients exactly, and five steps of
training through ``gradients.combine`` stay finite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _objective_helpers import RANDOM, SEED, build, forward
from conftest import make_tiny_llama, make_toy_batch
from jepa_audit.objectives import get_objective_class, registry, spec_rows, views
from jepa_audit.objectives.base import FAMILIES, register_objective, target_view_hidden
from jepa_audit.objectives.check import check_training
from jepa_audit.objectives.gradients import (
    combine,
    grad_cosine_stats,
    init_grad_state,
    layer_group,
    split_grads,
)

IDS = list(registry())
CORE_22 = {
    "T1", "T2", "T3-Global", "T3-Local", "T4", "T6", "D1", "D2", "D4", "D5", "D6", "D7",
    "P1", "P2", "P3", "P4", "P7", "F1", "F2", "F4", "V1", "V3",
}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# The registry itself
# ----------------------------------------------------------------------------------------------------------


def test_registry_holds_core_references_and_extensions():
    specs = {n: c.spec for n, c in registry().items()}
    assert {n for n, s in specs.items() if s.core} == CORE_22
    assert specs["ce"].family == specs["llm-jepa"].family == "reference"
    assert specs["ce"].default_weight == 0.0
    extensions = [n for n, s in specs.items() if not s.core and s.family != "reference"]
    assert len(extensions) >= 8
    assert {s.family for s in specs.values()} == set(FAMILIES)
    assert "GUESS" in specs["T3-Local"].description
    assert {specs[n].grad_mode for n in ("V3", "V4", "V5")} == {"cone", "gate", "gradvac"}


def test_spec_rows_are_json_with_the_contract_keys():
    rows = json.loads(json.dumps(spec_rows()))
    assert [r["id"] for r in rows] == IDS
    for r in rows:
        assert {"id", "family", "description", "core", "extra_forward", "params"} <= set(r)
        assert r["description"] and r["source"].startswith("[")
        assert r["default_weight"] >= 0.0
    # the reference table's "+1 backward": exactly the gradient-surgery objectives
    assert {r["id"] for r in rows if r["extra_backward"]} == {"V3", "V4", "V5"}
    assert all(r["extra_backward"] == (r["grad_mode"] != "add") for r in rows)


def test_docs_table_is_the_one_generated_from_the_registry():
    from jepa_audit.objectives.registry_table import replace_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "objectives.md").read_text(encoding="utf-8")
    assert replace_table(doc) == doc, (
        "docs/objectives.md's registry table is not the registry's: run "
        "`python -m jepa_audit.objectives.registry_table docs/objectives.md`"
    )
    for r in spec_rows():  # every objective has its row (and the rows are the registry's own words)
        assert f"| {r['id']} | {r['family']} |" in doc, f"{r['id']} missing from docs/objectives.md"


def test_generated_table_escapes_bars_and_needs_its_marker():
    from jepa_audit.objectives.registry_table import registry_table, replace_table

    v2 = next(line for line in registry_table() if line.startswith("| V2 |"))
    assert "−(1/\\|𝒜\\|)" in v2 and v2.count(" | ") == 8  # a bar in a formula does not split the cell
    with pytest.raises(ValueError, match="registry table"):
        replace_table("# no marker here\n")


def test_registry_is_frozen_and_suggests_near_names():
    with pytest.raises(RuntimeError):
        register_objective(get_objective_class("T1"))
    with pytest.raises(KeyError, match="Did you mean: T3-Local"):
        get_objective_class("T3-local")
    with pytest.raises(ValueError, match="unknown parameter"):
        build("T1", nope=1)


# ----------------------------------------------------------------------------------------------------------
# The battery
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IDS)
def test_finite_fp32_scalar_and_gradients_reach_the_model(name):
    model, batch = make_tiny_llama(), make_toy_batch()
    obj = build(name)
    _, ctx = forward(model, batch)
    loss = obj(ctx).loss
    assert loss.dtype == torch.float32 and loss.shape == () and bool(torch.isfinite(loss))
    if name == "ce":
        assert not loss.requires_grad
        return
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0.0
    for p in obj.parameters():  # an objective's own predictor/projector is trained by its loss
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())


@pytest.mark.parametrize("name", IDS)
def test_seeded_determinism(name):
    batch = make_toy_batch()
    losses = []
    for seed in (SEED, SEED, SEED + 1):
        _, ctx = forward(make_tiny_llama(), batch)
        losses.append(build(name, seed=seed)(ctx).loss.detach())
    assert torch.equal(losses[0], losses[1])
    if name in RANDOM:
        assert not torch.equal(losses[0], losses[2])


@pytest.mark.parametrize("name", IDS)
def test_zero_weight_gives_ce_gradients_exactly(name):
    batch = make_toy_batch()
    model = make_tiny_llama()
    params = list(model.parameters())
    ce, _ = forward(model, batch)
    g_ref = torch.autograd.grad(ce, params)

    obj = build(name)
    ce, ctx = forward(model, batch)
    aux = obj(ctx).loss
    g_ce, g_aux = split_grads(ce, aux, params)
    upd = combine(g_ce, g_aux, 0.0, obj.spec.grad_mode, init_grad_state(obj.p))
    assert all(torch.equal(u, r) for u, r in zip(upd, g_ref, strict=True))

    ce, ctx = forward(model, batch)  # the one-backward path of the loop: (ce + 0·aux).backward()
    (ce + 0.0 * build(name)(ctx).loss).backward()
    assert all(torch.equal(p.grad, r) for p, r in zip(params, g_ref, strict=True))


@pytest.mark.parametrize("name", IDS)
def test_smoke_training_five_steps(name):
    # the loop `jepa-audit aux check` runs (objectives/check.py): finite losses at every step and after
    assert check_training(name, {}, steps=5).startswith("5 steps at")


# ----------------------------------------------------------------------------------------------------------
# Views, predictor tokens, EMA under LoRA, composition, the probe on a real graph
# ----------------------------------------------------------------------------------------------------------


def test_nl_view_is_a_prefix_of_the_ce_row():
    model, batch = make_tiny_llama(), make_toy_batch()
    _, ctx = forward(model, batch)
    for b in range(len(batch)):
        n = int(batch.nl_last[b]) + 1
        out = model(input_ids=batch.input_ids[b : b + 1, :n], output_hidden_states=True)
        torch.testing.assert_close(out.hidden_states[-1][0, -1], ctx.e_u(-1)[b], atol=1e-5, rtol=1e-5)


def test_predictor_tokens_row_matches_separate_unpadded_forwards():
    model, batch = make_tiny_llama(), make_toy_batch()
    obj = build("llm-jepa", k=2)
    _, ctx = forward(model, batch)
    batched = views.nl_predictor_view(ctx, obj.pred, obj.generator)
    emb = model.get_input_embeddings()
    for b in range(len(batch)):
        n = int(batch.nl_last[b]) + 1
        x = torch.cat([emb(batch.input_ids[b, :n]), obj.pred.detach()], 0)[None]
        ref = model(inputs_embeds=x, output_hidden_states=True).hidden_states[-1][0, -1]
        torch.testing.assert_close(batched[b].detach(), ref, atol=1e-5, rtol=1e-5)
    loss = obj(ctx).loss
    loss.backward()
    assert obj.pred.grad is not None and float(obj.pred.grad.abs().sum()) > 0


def test_extra_rows_follow_the_callers_autocast():
    """The regex row runs as the CE row does (here bf16 autocast); only the objective's maths are fp32."""
    model, batch = make_tiny_llama(), make_toy_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, ctx = forward(model, batch)
        build("P1")(ctx)
        ref = target_view_hidden(model, batch)
    assert torch.equal(ctx.target_hidden[-1], ref[-1])
    fp32 = target_view_hidden(model, batch)
    assert not torch.equal(ctx.target_hidden[-1], fp32[-1])


def lora_llama(dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj", "up_proj"])
    return get_peft_model(make_tiny_llama(), cfg)


def test_ema_target_under_lora_tracks_adapter_weights_only():
    model, batch = lora_llama(), make_toy_batch()
    obj = build("P3")
    _, ctx = forward(model, batch)
    online_r = views.e_t(ctx, obj.generator)
    torch.testing.assert_close(obj.target_embedding(ctx), online_r.detach(), atol=1e-5, rtol=1e-5)
    assert obj.shadow and all("lora_" in n for n in obj.shadow)
    before = {n: s.clone() for n, s in obj.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    obj.after_step(model, 0, 10)  # τ = 0.996: the shadow moves 0.4 % of the way
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(obj.shadow[n], before[n] + 0.004 * (p.detach() - before[n]))
    state = obj.state_dict()
    fresh = build("P3")
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.shadow[n], obj.shadow[n]) for n in obj.shadow)


def test_grad_controlled_objectives_compose_their_inner_loss():
    model, batch = make_tiny_llama(), make_toy_batch()
    _, ctx = forward(model, batch)
    v1 = float(build("V1")(ctx).loss)
    for name in ("V3", "V4", "V5"):
        assert float(build(name)(ctx).loss) == v1
    assert float(build("V3", inner="llm-jepa")(ctx).loss) == pytest.approx(float(build("llm-jepa")(ctx).loss))
    with pytest.raises(ValueError, match="grad_mode"):
        build("V3", inner="V4")


def test_probe_and_cone_on_the_model_graph():
    model, batch = lora_llama(), make_toy_batch()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    ce, ctx = forward(model, batch)
    aux = build("V3")(ctx).loss
    g_ce, g_aux = split_grads(ce, aux, params)
    stats = grad_cosine_stats(g_aux, g_ce, [layer_group(n) for n, _ in named])
    assert -1.0 <= stats.cos <= 1.0 and set(stats.per_group) == {"layer_0", "layer_1", "layer_2"}
    upd = combine(g_ce, g_aux, 0.1, "cone", {})
    dot = sum(float(((u - c) * c).sum()) for u, c in zip(upd, g_ce, strict=True) if u is not None)
    assert dot >= -1e-9
