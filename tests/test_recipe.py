"""paper-full-ft follows LLM-JEPA's recipe; the linear schedule is HF's; gradient surgery frees g_CE and g_aux."""

from __future__ import annotations

import weakref

import pytest
import torch

from jepa_audit.config import TrainCfg, load_config
from jepa_audit.objectives.gradients import combine
from jepa_audit.train import lr_at


def test_paper_full_ft_is_llm_jepas_recipe():
    c = load_config("paper-full-ft")
    t = c.train
    assert t.batch_size * t.grad_accum == 128  # LLM-JEPA: 4 per device × accum 4 × 8 GPUs
    assert (t.lr, t.schedule, t.warmup_steps, t.weight_decay, t.grad_clip) == (2e-5, "linear", 0, 0.0, 1.0)
    n_train = 8000 - c.data.val_size - c.data.geometry_size  # what is left of LLM-JEPA's 8,000 rows
    micro_per_epoch = n_train // t.batch_size  # train.batches drops a short last micro-batch
    assert t.steps * t.grad_accum == pytest.approx(4 * micro_per_epoch, abs=t.grad_accum)  # 4 epochs
    assert c.adapter.mode == "full" and c.model.dtype == "float32" and c.model.autocast == "bf16"
    p = load_config("paper")
    assert p.train.steps * p.train.batch_size * p.train.grad_accum == pytest.approx(4 * n_train, rel=0.01)


def test_the_two_llm_jepa_presets_agree_where_they_share_a_source():
    """paper-full-ft and replicate-llm-jepa both claim LLM-JEPA's NL-RX full fine-tuning recipe (the paper and
    finetune.py, docs/presets.md): the same optimiser settings, update size, seeds, epochs and views; they
    differ only where one says so (labels, methods, the geometry pool's size)."""
    a, b = load_config("paper-full-ft"), load_config("replicate-llm-jepa")
    shared = ("lr", "schedule", "warmup_steps", "weight_decay", "grad_clip")
    assert [getattr(a.train, k) for k in shared] == [getattr(b.train, k) for k in shared] == [2e-5, "linear", 0, 0.0, 1.0]
    for c in (a, b):
        assert c.train.batch_size * c.train.grad_accum == 128 and c.audit.seeds == [82, 23, 37, 84, 4]
        assert (c.adapter.mode, c.model.dtype, c.model.autocast, c.views.nl) == ("full", "float32", "bf16", "published")
        n_train = 8000 - c.data.val_size - c.data.geometry_size
        assert c.train.steps == round(4 * n_train / 128)  # 4 epochs of what is left of the 8,000 rows
    assert 8000 - b.data.val_size - b.data.geometry_size == 7736 and b.train.steps == 242


@pytest.mark.parametrize("warmup", [0, 7])
def test_linear_schedule_is_transformers_linear_with_warmup(warmup):
    from transformers import get_linear_schedule_with_warmup

    cfg = TrainCfg(lr=3e-4, steps=40, warmup_steps=warmup, schedule="linear")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, warmup, cfg.steps)
    for step in range(cfg.steps):
        assert lr_at(step, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()


@pytest.mark.parametrize("mode", ["add", "cone", "gate", "gradvac"])
def test_combine_consume_frees_inputs_and_gives_the_same_update(mode):
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (4,), (2, 2)]
    ce = [torch.randn(s, generator=g) for s in shapes]
    aux = [torch.randn(s, generator=g) for s in shapes]
    ref = combine(list(ce), list(aux), 0.3, mode, {"phi_target": 0.0, "ema_beta": 0.0})
    g_ce, g_aux = [t.clone() for t in ce], [t.clone() for t in aux]
    refs = [weakref.ref(t) for t in g_ce + g_aux]
    out = combine(g_ce, g_aux, 0.3, mode, {"phi_target": 0.0, "ema_beta": 0.0}, consume=True)
    assert g_ce == [None] * 3 and g_aux == [None] * 3
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b)
    assert all(r() is None for r in refs)  # nothing else kept the gradient sets alive
