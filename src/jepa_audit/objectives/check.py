"""The objective battery (``jepa-audit aux check ID``): what every registered objective must satisfy before a
grid is spent on it.  tests/test_objectives_registry.py runs the same checks over the whole registry.

On a tiny random Llama (d = 32, 3 layers, vocabulary 97) and a toy batch of six rows of varied lengths:

* ``finite``: the loss is a finite fp32 scalar; its gradients reach the model and the objective's own
  parameters, and are finite;
* ``deterministic``: the same seed gives the same loss bit for bit;
* ``own-rng``: building and running it leave the global RNG untouched (all randomness from
  ``self.generator``, so adding the auxiliary leaves the CE run's data order and dropout as they were);
* ``zero-weight``: λ = 0 gives CE's gradients exactly, through ``gradients.combine`` and through the
  loop's one-backward path ``(ce + 0·aux).backward()``;
* ``training``: five optimizer steps at the default λ keep CE and the auxiliary finite.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa_audit.data.batch import Batch
from jepa_audit.objectives.base import AuxContext, Objective, build_objective, get_objective_class
from jepa_audit.objectives.gradients import combine, init_grad_state, split_grads
from jepa_audit.objectives.params import raise_problems

D, N_LAYERS, SEED = 32, 3, 82


def tiny_llama(vocab: int = 97, d: int = D, layers: int = N_LAYERS, seed: int = 0) -> nn.Module:
    """A random tiny Llama (eval mode, tied embeddings, sdpa): the battery's model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        tie_word_embeddings=True, attn_implementation="sdpa",
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def toy_batch(B: int = 6, vocab: int = 97, seed: int = 0) -> Batch:
    """Rows: [prompt (P tokens, NL content = positions 2..P-2)] [answer (A tokens incl. eot)] [pad].

    Lengths vary per row so padding and per-row indices are exercised.
    """
    g = torch.Generator().manual_seed(seed)
    P = [8 + int(torch.randint(0, 4, (1,), generator=g)) for _ in range(B)]
    A = [4 + int(torch.randint(0, 4, (1,), generator=g)) for _ in range(B)]
    T = max(p + a for p, a in zip(P, A, strict=True))
    Tr = max(A) + 2
    ids = torch.zeros(B, T, dtype=torch.long)
    att = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    pmask = torch.zeros(B, T, dtype=torch.bool)
    rids = torch.zeros(B, Tr, dtype=torch.long)
    rmask = torch.zeros(B, Tr, dtype=torch.long)
    nl_last, a0, rlast = [], [], []
    for b in range(B):
        p, a = P[b], A[b]
        row = torch.randint(3, vocab, (p + a,), generator=g)
        ids[b, : p + a] = row
        att[b, : p + a] = 1
        labels[b, p : p + a] = row[p:]
        pmask[b, 2 : p - 1] = True
        nl_last.append(p - 2)
        a0.append(p)
        rids[b, 0] = 1
        rids[b, 1 : 1 + a] = row[p:]
        rmask[b, : 1 + a] = 1
        rlast.append(a - 1)  # last target content token (the eot is at index a)
    return Batch(
        input_ids=ids, attention_mask=att, labels=labels, answer_mask=labels != -100, prompt_mask=pmask,
        nl_last=torch.tensor(nl_last), answer_start=torch.tensor(a0), target_ids=rids, target_mask=rmask,
        target_last=torch.tensor(rlast), item_ids=torch.arange(B),
    )


def ce_forward(model: nn.Module, batch: Batch) -> tuple[Tensor, AuxContext]:
    """The CE forward the loop runs: (CE on answer tokens, the context objectives read)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    logits = out.logits
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch.labels[:, 1:].reshape(-1), ignore_index=-100
    )
    ctx = AuxContext(
        batch=batch, hidden=tuple(out.hidden_states), logits=logits, model=model,
        lm_head_weight=model.get_output_embeddings().weight,
    )  # fmt: skip
    return ce, ctx


def build(name: str, seed: int = SEED, **params: Any) -> Objective:
    return build_objective(name, params, d_model=D, n_layers=N_LAYERS, seed=seed)


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


def check_finite(name: str, params: dict[str, Any]) -> str:
    model, batch = tiny_llama(), toy_batch()
    obj = build(name, **params)
    _, ctx = ce_forward(model, batch)
    loss = obj(ctx).loss
    if not (isinstance(loss, Tensor) and loss.dtype == torch.float32 and loss.shape == ()):
        got = f"{loss.dtype} {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
        raise AssertionError(f"the loss must be a float32 scalar tensor, got {got}")
    if not bool(torch.isfinite(loss)):
        raise AssertionError(f"the loss is {float(loss.detach())}")
    if not loss.requires_grad:
        if obj.spec.default_weight == 0.0:
            return "constant loss (a reference with λ = 0)"
        raise AssertionError("the loss does not depend on the model (no gradient can reach it)")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or sum(float(g.abs().sum()) for g in grads) == 0.0:
        raise AssertionError("no gradient reaches the model's parameters")
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        raise AssertionError("the model's gradients are not finite")
    for n, p in obj.named_parameters():  # an objective's own predictor/projector is trained by its loss
        if p.grad is None or not bool(torch.isfinite(p.grad).all()):
            raise AssertionError(f"the objective's own parameter {n} gets no finite gradient")
    return f"loss {float(loss.detach()):.4g}"


def check_deterministic(name: str, params: dict[str, Any]) -> str:
    batch = toy_batch()
    losses = []
    for _ in range(2):
        _, ctx = ce_forward(tiny_llama(), batch)
        losses.append(build(name, **params)(ctx).loss.detach())
    if not torch.equal(losses[0], losses[1]):
        raise AssertionError(
            f"the same seed gave {float(losses[0])!r} then {float(losses[1])!r}: draw randomness from self.generator"
        )
    return "same seed, same loss"


def check_own_rng(name: str, params: dict[str, Any]) -> str:
    model, batch = tiny_llama(), toy_batch()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    obj = build(name, **params)
    if not torch.equal(torch.get_rng_state(), state):
        raise AssertionError("building the objective drew from the global RNG: use self.generator")
    _, ctx = ce_forward(model, batch)
    state = torch.get_rng_state()
    loss = obj(ctx).loss
    if loss.requires_grad:
        loss.backward()
    if not torch.equal(torch.get_rng_state(), state):
        raise AssertionError(
            "the loss drew from the global RNG (it would shift the CE run's data order and dropout): draw "
            "from self.generator, e.g. torch.randn(..., generator=self.generator)"
        )
    return "global RNG untouched"


def check_zero_weight(name: str, params: dict[str, Any]) -> str:
    batch, model = toy_batch(), tiny_llama()
    ps = list(model.parameters())
    ce, _ = ce_forward(model, batch)
    g_ref = torch.autograd.grad(ce, ps)
    obj = build(name, **params)
    ce, ctx = ce_forward(model, batch)
    g_ce, g_aux = split_grads(ce, obj(ctx).loss, ps)
    upd = combine(g_ce, g_aux, 0.0, obj.spec.grad_mode, init_grad_state(obj.p))
    if not all(torch.equal(u, r) for u, r in zip(upd, g_ref, strict=True)):
        raise AssertionError(f"λ = 0 does not give CE's gradients (grad_mode {obj.spec.grad_mode})")
    ce, ctx = ce_forward(model, batch)  # the one-backward path of the loop
    (ce + 0.0 * build(name, **params)(ctx).loss).backward()
    if not all(p.grad is not None and torch.equal(p.grad, r) for p, r in zip(ps, g_ref, strict=True)):
        raise AssertionError("(ce + 0·aux).backward() does not give CE's gradients (a NaN or inf in the aux?)")
    return "CE's gradients exactly"


def check_training(name: str, params: dict[str, Any], steps: int = 5) -> str:
    torch.manual_seed(0)
    model, batch = tiny_llama(), toy_batch()
    model.train()
    obj = build(name, **params)
    weight = obj.spec.default_weight
    ps = list(model.parameters()) + list(obj.parameters())
    opt = torch.optim.AdamW(ps, lr=1e-3)
    state = init_grad_state(obj.p)
    for step in range(steps):
        ce, ctx = ce_forward(model, batch)
        aux = obj(ctx).loss
        if not (bool(torch.isfinite(ce)) and bool(torch.isfinite(aux))):
            raise AssertionError(f"step {step}: CE {float(ce.detach())}, aux {float(aux.detach())}")
        if weight == 0.0 or not aux.requires_grad:
            ce.backward()
        else:
            g_ce, g_aux = split_grads(ce, aux, ps)
            for p, g in zip(ps, combine(g_ce, g_aux, weight, obj.spec.grad_mode, state), strict=True):
                p.grad = g
        torch.nn.utils.clip_grad_norm_(ps, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        obj.after_step(model, step, steps)
    ce, ctx = ce_forward(model, batch)
    total = ce + weight * obj(ctx).loss
    if not bool(torch.isfinite(total)):
        raise AssertionError(f"after {steps} steps the loss is {float(total.detach())}")
    return f"{steps} steps at λ = {weight:g}, final loss {float(total.detach()):.4g}"


CHECKS: tuple[tuple[str, Callable[[str, dict[str, Any]], str]], ...] = (
    ("finite", check_finite),
    ("deterministic", check_deterministic),
    ("own-rng", check_own_rng),
    ("zero-weight", check_zero_weight),
    ("training", check_training),
)


def run_checks(name: str, params: dict[str, Any] | None = None) -> list[CheckResult]:
    """Every check of the battery on objective ``name`` (KeyError when unknown, ParamsError when ``params``
    do not fit its typed model); a failing or raising check is a failed result with its reason."""
    cls = get_objective_class(name)
    raise_problems(name, cls.param_problems({**cls.spec.params, **(params or {})}), where="--param")
    out = []
    for check, fn in CHECKS:
        try:
            out.append(CheckResult(check, True, fn(name, dict(params or {}))))
        except AssertionError as e:
            out.append(CheckResult(check, False, str(e)))
        except Exception as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            out.append(CheckResult(check, False, f"{type(e).__name__}: {e} ({where.filename}:{where.lineno})"))
    return out
