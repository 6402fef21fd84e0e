"""An objective's randomness is its own: the global RNG streams (data order, dropout, init) never move.

The model here is a LoRA-wrapped tiny Llama in train mode with adapter dropout 0.1, so an extra forward row
that drew from the global RNG (regex view, noise twin, EMA target, predictor tokens) would be caught.
"""

from __future__ import annotations

import pytest
import torch

from _objective_helpers import RANDOM, SEED, build, forward
from conftest import make_tiny_llama, make_toy_batch
from jepa_audit.objectives import registry
from jepa_audit.objectives.gradients import combine, init_grad_state, split_grads

IDS = list(registry())


def lora_llama(seed: int = 1):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "up_proj"])
    model = get_peft_model(make_tiny_llama(), cfg)
    model.train()
    return model


@pytest.mark.parametrize("name", IDS)
def test_build_and_forward_leave_the_global_rng_untouched(name):
    model, batch = lora_llama(), make_toy_batch()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    obj = build(name)
    assert torch.equal(torch.get_rng_state(), state), "building drew from the global RNG"
    _, ctx = forward(model, batch)  # the CE forward's dropout is allowed to draw: it is the CE run's own
    state = torch.get_rng_state()
    loss = obj(ctx).loss
    if loss.requires_grad:
        loss.backward()
    assert torch.equal(torch.get_rng_state(), state), "the auxiliary drew from the global RNG"


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_draws_other_seed_other_draws(name):
    batch = make_toy_batch()
    model = make_tiny_llama()
    _, ctx = forward(model, batch)
    a, b, c = build(name), build(name), build(name, seed=SEED + 1)
    for _ in range(3):  # the streams stay in lock-step over several steps
        la, lb, lc = (o(ctx).loss.detach() for o in (a, b, c))
        assert torch.equal(la, lb) and not torch.equal(la, lc)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


@pytest.mark.parametrize("name", ["llm-jepa", "T3-Global", "D5", "P3", "F2", "P5", "V3"])
def test_zero_weight_aux_leaves_the_ce_run_bit_identical(name):
    """Three training steps with shuffled data order and adapter dropout: the CE run alone and the CE run
    with this auxiliary at λ = 0 see the same batches, the same dropout masks and the same weights."""

    def train(objective_name: str | None) -> tuple[list[float], list[torch.Tensor]]:
        torch.manual_seed(7)
        model, full = lora_llama(), make_toy_batch(B=8)
        obj = build(objective_name) if objective_name else None
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-2)
        state = init_grad_state(obj.p) if obj else {}
        losses = []
        for step in range(3):
            rows = torch.randperm(8)[:4]  # data order from the global RNG, as a DataLoader shuffle
            batch = full.select(rows)
            ce, ctx = forward(model, batch)
            if obj is None:
                ce.backward()
            else:
                g_ce, g_aux = split_grads(ce, obj(ctx).loss, params)
                for p, g in zip(params, combine(g_ce, g_aux, 0.0, obj.spec.grad_mode, state), strict=True):
                    p.grad = g
            opt.step()
            opt.zero_grad(set_to_none=True)
            if obj:
                obj.after_step(model, step, 3)
            losses.append(float(ce.detach()))
        return losses, [p.detach().clone() for p in params]

    base_losses, base_params = train(None)
    aux_losses, aux_params = train(name)
    assert aux_losses == base_losses
    assert all(torch.equal(a, b) for a, b in zip(aux_params, base_params, strict=True))
