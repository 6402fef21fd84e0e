"""The one training loop: ``loss = CE + λ·aux``, read top to bottom (nanoGPT style).

Phases per step: set LR → micro-batches (forward with hidden states → CE on answer tokens → auxiliary →
backward) → clip → optimizer step → objective hook → log; the forward, backward and optimizer phases carry
``record_function`` labels that ``jepa-audit bench`` profiles.  The loop never checks objective ids; it reads
the objective's spec: ``grad_mode`` says how the auxiliary gradient joins CE's.  On probe steps (step 0,
then every ``probe.every`` steps) and for grad-mode objectives, CE and auxiliary
gradients are taken separately with two ``autograd.grad`` calls on one graph; the update is then
``combine(g_CE, g_aux)`` (= g_CE + λ·g_aux for ``add``), so probing costs no third backward.

Randomness: the data order comes from a generator seeded by the cell seed, dropout from the global torch
RNG seeded by the cell seed, and the objective's draws from its own generator, so adding an auxiliary
leaves data order and dropout of the CE run untouched.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from jepa_audit.config import ProbeCfg, TrainCfg
from jepa_audit.data.batch import Batch
from jepa_audit.data.packing import Packed, pack_rows
from jepa_audit.data.views import Encoded, LabelMode, collate
from jepa_audit.models.lean import LeanCall, read_weights, uses_lean
from jepa_audit.models.load import lm_head_weight
from jepa_audit.objectives import AuxContext, Objective
from jepa_audit.objectives.gradients import combine, grad_cosine_stats, init_grad_state, layer_group


def _blame_weight(weight: float, aux_trained: bool) -> str:
    """Name λ when the updates so far included λ·aux: a λ too large shows up here first."""
    return f" (the updates so far included λ·aux with λ = {weight:g}; try a smaller aux.weight)" if aux_trained else ""


class TrainError(RuntimeError):
    """Training cannot go on (non-finite CE, or an auxiliary that is non-finite on most steps)."""


@dataclass
class TrainResult:
    steps: int
    final_loss: float = float("nan")  # mean total loss over the last 10 % of steps
    log: list[dict[str, float]] = field(default_factory=list)
    grad_cosine: dict[str, Any] | None = None  # {mean, frac_positive, per_layer, trace}
    aux_skipped: int = 0  # steps whose auxiliary was non-finite and left out
    wall_s: float = 0.0
    weight: float = 0.0  # λ actually used (differs from the argument only under ``target_dose``)
    dose: dict[str, Any] | None = None  # see :func:`dose_summary`
    forward: str = "hf"  # which forward ran the CE rows: lean (models/lean.py) or hf (transformers')


def dose_summary(trace: Sequence[tuple[int, float, float]], weight: float, anchored: bool | None) -> dict[str, Any]:
    """results.jsonl's ``dose`` object from the probes' ``(step, ‖∇aux‖, ‖∇CE‖)`` (norms over the model's
    trainable parameters, the objective's own predictor excluded, as in the cosine probe).

    ``median`` / ``step0``: λ·‖∇aux‖/‖∇CE‖ (unitless; 1 = the auxiliary pushes as hard as CE) over the probes
    and at the first probe; ``raw_median`` / ``raw_step0``: ‖∇aux‖/‖∇CE‖ without λ; ``trace``: [[step, raw]];
    a probe with ‖∇CE‖ = 0 is left out.  ``anchored``: whether λ came from ``target_dose`` at step 0 (None when
    no target was asked).  Values are None when nothing was probed.
    """
    raw = [(s, a / c) for s, a, c in trace if c > 0.0 and math.isfinite(a / c)]
    vals = sorted(r for _, r in raw)
    med = statistics.median(vals) if vals else None
    first = raw[0][1] if raw and raw[0][0] == 0 else None
    return {
        "weight": weight,
        "median": weight * med if med is not None else None,
        "step0": weight * first if first is not None else None,
        "raw_median": med,
        "raw_step0": first,
        "n_probes": len(raw),
        "trace": [[s, r] for s, r in raw],
        "anchored": anchored,
    }


def lr_at(step: int, cfg: TrainCfg) -> float:
    """``cosine``: linear warmup, then cosine decay to ``min_lr_ratio·lr``.  ``linear``: exactly transformers'
    ``get_linear_schedule_with_warmup`` (step/warmup, then linear to 0 at ``steps``), the HF Trainer default."""
    if cfg.schedule == "linear":
        if step < cfg.warmup_steps:
            return cfg.lr * step / max(1, cfg.warmup_steps)
        return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def batches(
    rows: Sequence[Encoded], batch_size: int, pad_id: int, seed: int, labels: LabelMode = "answer"
) -> Iterator[Batch]:
    """Endless shuffled micro-batches; the order depends on ``seed`` alone (``labels``: see views.collate)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(rows), generator=g).tolist()
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            yield collate([rows[j] for j in perm[i : i + batch_size]], pad_id, labels)
        if len(rows) < batch_size:  # tiny data: one short batch per epoch
            yield collate([rows[j] for j in perm], pad_id, labels)


def pack_ce_rows(batch: Batch, how: str) -> Packed | None:
    """``train.pack``: None for ``none``; else the CE rows' real tokens first-fit into rows of the batch's
    longest row (``longest``) or into one row of all of them (``flat``)."""
    if how == "none":
        return None
    if how not in ("longest", "flat"):
        raise ValueError(f"train.pack={how!r}; expected none, longest or flat")
    mask = batch.attention_mask
    cap = int(mask.sum()) if how == "flat" else int(mask.shape[1])
    return pack_rows(batch.input_ids, mask, cap)


def forward_rows(
    run: Callable[..., Any], batch: Batch, packed: Packed | None = None
) -> tuple[tuple[Tensor, ...], Tensor]:
    """The CE rows' forward: (hidden states, (B, T, d) per layer (L+1 tensors); logits (B, T, V)).

    ``run``: the model, or anything with its keyword signature (:class:`models.lean.LeanCall`: the lean forward
    on the model's own parameters, same outputs to float rounding, tests/test_lean.py).  ``packed`` None: the
    right-padded (B, T) rows with their attention mask. Otherwise the same rows packed first-fit into R ≤ B rows
    (:func:`data.packing.pack_rows`): position ids restart at 0 at every sequence, so each sequence sees only
    itself (a block-diagonal causal mask), and no padding is computed; the outputs are gathered back to the
    padded (B, T, ·) layout every objective reads (a pad position holds a copy of its row's last real state, and
    every reader masks pads: CE through labels −100, the objectives through their masks), so the loss and its
    gradients equal the padded forward's to float rounding (tests/test_packing.py checks loss, gradients and
    trained weights in float64).
    """
    if packed is None:
        out = run(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        return tuple(out.hidden_states), out.logits
    dev = batch.input_ids.device
    ids, pos, unpack = packed.ids.to(dev), packed.pos.to(dev), packed.unpack.to(dev)
    out = run(input_ids=ids, position_ids=pos, use_cache=False, output_hidden_states=True)
    return tuple(h.flatten(0, 1)[unpack] for h in out.hidden_states), out.logits.flatten(0, 1)[unpack]


def answer_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token CE over labelled positions (train.labels=answer: answer + end-of-turn; llm-jepa: every
    token but the collator's pad id, as HF's shifted loss). logits (B,T,V), labels (B,T)."""
    # the log-softmax over V runs at the labelled positions only (a third of a row on NL-RX); same mean
    target = labels[:, 1:]
    keep = target != -100
    return F.cross_entropy(logits[:, :-1][keep].float(), target[keep])


@dataclass
class GradProbes:
    """The gradient probes of one run (issue 5): CE–aux cosines, ‖∇aux‖ and ‖∇CE‖ (the dose), per-layer
    cosines, and the step-0 anchor of ``target_dose``.  ``anchored``: None without a target dose, else whether
    the step-0 probe set λ."""

    groups: list[str]  # layer group of each trainable model parameter (:func:`layer_group`)
    target_dose: float | None = None
    cos_trace: list[tuple[int, float]] = field(default_factory=list)
    norm_trace: list[tuple[int, float, float]] = field(default_factory=list)  # (step, ‖∇aux‖, ‖∇CE‖)
    per_layer_sum: dict[str, list[float]] = field(default_factory=dict)
    anchored: bool | None = None

    def __post_init__(self) -> None:
        self.anchored = None if self.target_dose is None else False

    def record(self, step: int, g_aux: list[Tensor | None], g_ce: list[Tensor | None], weight: float) -> float:
        """Log one probe of step ``step``; return λ for this step's update (anchored at step 0 under a target
        dose when both norms are positive and finite, else ``weight`` unchanged)."""
        st = grad_cosine_stats(g_aux, list(g_ce), self.groups)
        self.cos_trace.append((step, st.cos))
        self.norm_trace.append((step, st.norm_aux, st.norm_ce))
        for k, v in st.per_group.items():
            self.per_layer_sum.setdefault(k, []).append(v)
        anchor = step == 0 and self.target_dose is not None and not self.anchored
        if anchor and st.norm_aux > 0.0 and st.norm_ce > 0.0 and math.isfinite(st.norm_aux):
            weight, self.anchored = self.target_dose * st.norm_ce / st.norm_aux, True
        return weight


def backward_step(
    ce: Tensor,
    aux: Tensor | None,
    weight: float,
    *,
    params: list[nn.Parameter],
    obj_params: list[nn.Parameter],
    separate: bool,
    mode: str,
    combine_state: dict[str, Any],
    grad_accum: int,
    probe: Callable[[list[Tensor | None], list[Tensor | None], float], float] | None = None,
) -> float:
    """Accumulate one micro-batch's gradient into ``.grad``: CE alone (``aux`` None), ``CE + λ·aux`` in one
    ``backward``, or, when ``separate`` (grad-mode objectives, probe steps), g_CE and g_aux by two
    ``autograd.grad`` calls on one graph, joined by :func:`combine` (gradient surgery for cone / gate / GradVac).
    ``probe(g_aux, g_CE, λ)`` sees the separate gradients first and returns λ (the step-0 anchor may change
    it).  Each term is divided by ``grad_accum``.  Returns λ as used."""
    if aux is None:
        (ce / grad_accum).backward()
    elif not separate:
        ((ce + weight * aux) / grad_accum).backward()
    else:
        g_ce = list(torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True))
        g_all = torch.autograd.grad(aux, params + obj_params, allow_unused=True)
        g_aux, g_obj = list(g_all[: len(params)]), list(g_all[len(params) :])
        del g_all  # g_aux and g_obj hold the only references: combine can free as it goes
        if probe is not None:
            weight = probe(g_aux, g_ce, weight)
        # memory: at 1B parameters each gradient set is ~5 GB in fp32. combine frees g_CE and g_aux
        # entry by entry as it builds the update, and the update becomes .grad without a copy, so at
        # most about two sets (plus an accumulating .grad) are alive, not four
        update = combine(g_ce, g_aux, weight, mode, combine_state, consume=True)
        for i, p in enumerate(params):
            u, update[i] = update[i], None
            if u is None:
                continue
            if grad_accum > 1:
                u.div_(grad_accum)  # autograd.grad's outputs are fresh, unshared tensors
            p.grad = u if p.grad is None else p.grad.add_(u)
        for p, u in zip(obj_params, g_obj, strict=True):
            if u is not None:
                u = weight * u / grad_accum
                p.grad = u if p.grad is None else p.grad + u
    return weight


def train(
    model: nn.Module,
    rows: Sequence[Encoded],
    *,
    pad_id: int,
    cfg: TrainCfg,
    seed: int,
    objective: Objective | None = None,
    weight: float = 0.0,
    probe: ProbeCfg | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    curve_fn: Callable[[tuple[Tensor, ...], Batch], dict[str, float]] | None = None,
    curve_every: int = 0,
    autocast: str = "none",
    target_dose: float | None = None,
    forward: str = "auto",
) -> TrainResult:
    """Fine-tune ``model`` in place on ``rows``; return losses, gradient cosines, the dose and counters.

    ``target_dose`` (λ calibration, audit/calibration.py): replace ``weight`` at step 0 by
    ``target_dose·‖∇CE‖/‖∇aux‖`` measured on the first micro-batch (the step-0 probe), so the run's step-0 dose
    is ``target_dose`` whatever the auxiliary's scale; ``weight`` stays the fallback when a norm is zero.
    ``forward``: ``model.forward`` (auto | hf | lean), how the CE rows and the objectives' extra rows run.
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    torch.manual_seed(seed)  # dropout stream; objectives draw from their own generators
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    probes = GradProbes([layer_group(n) for n, _ in named], target_dose)
    use_aux = objective is not None and weight > 0
    obj_params = [p for p in objective.parameters() if p.requires_grad] if use_aux else []
    if use_aux:
        objective.to(device)
    opt = torch.optim.AdamW(
        [{"params": params}, {"params": obj_params}], lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
    )
    mode = objective.spec.grad_mode if use_aux else "add"
    probe = probe or ProbeCfg()
    data = batches(rows, cfg.batch_size, pad_id, seed, cfg.labels)
    combine_state: dict[str, Any] = init_grad_state(objective.p if use_aux else {})
    result = TrainResult(steps=cfg.steps)
    recent: list[float] = []
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast)
    model.train()
    with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        lean = uses_lean(model, forward)  # after .train(): LoRA dropout only counts while training
    result.forward = "lean" if lean else "hf"

    for step in range(cfg.steps):
        # ---- learning rate ------------------------------------------------------------------------------
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        probe_now = use_aux and ((probe.enabled and step % probe.every == 0) or (step == 0 and target_dose is not None))
        separate = use_aux and (mode != "add" or probe_now)
        opt.zero_grad(set_to_none=True)
        loss_sum, ce_sum, aux_sum = 0.0, 0.0, 0.0
        tokens = 0  # real tokens of the CE rows this step (progress: `rehearse` reports tokens per step)

        # ---- micro-batches -------------------------------------------------------------------------------
        for _ in range(cfg.grad_accum):
            batch = next(data)
            tokens += int(batch.attention_mask.sum())
            packed = pack_ce_rows(batch, cfg.pack)  # CPU work on B lengths, before the batch moves
            batch = batch.to(device)
            # extra rows an objective runs (regex view, noise twin, EMA target) share the CE row's precision;
            # the objectives keep their own maths in fp32
            with (
                record_function("train.forward"),
                torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None),
            ):
                # the lean forward merges LoRA once a micro-batch, shared by the CE rows and the extra rows
                run = LeanCall(model, read_weights(model)) if lean else model
                hidden, logits = forward_rows(run, batch, packed)
                ce = answer_ce(logits, batch.labels)
                aux: Tensor | None = None
                if use_aux:
                    ctx = AuxContext(batch, hidden, logits, model, lm_head_weight(model), step=step,
                                     total_steps=cfg.steps, forward=run)
                    aux = objective(ctx).loss.float()
            if not torch.isfinite(ce):
                raise TrainError(f"non-finite CE loss at step {step}" + _blame_weight(weight, use_aux and step > 0))
            if aux is not None and not torch.isfinite(aux):
                result.aux_skipped += 1
                aux = None
            if aux is not None and not math.isfinite(weight * float(aux.detach())):
                raise TrainError(
                    f"the λ·aux term is not finite at step {step}: λ = {weight:g} times aux = "
                    f"{float(aux.detach()):.4g} overflows; lower aux.weight"
                )
            with record_function("train.backward"):  # phase labels for `bench`'s profile (~µs when not profiling)
                weight = backward_step(
                    ce, aux, weight, params=params, obj_params=obj_params, separate=separate, mode=mode,
                    combine_state=combine_state, grad_accum=cfg.grad_accum,
                    probe=partial(probes.record, step) if probe_now else None,
                )
            ce_sum += float(ce.detach())
            aux_sum += float(aux.detach()) if aux is not None else 0.0
            loss_sum += float(ce.detach()) + (weight * float(aux.detach()) if aux is not None else 0.0)

        # ---- clip, step, hooks ---------------------------------------------------------------------------
        with record_function("train.optimizer"):
            if cfg.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params + obj_params, cfg.grad_clip)
                if not torch.isfinite(norm):  # would turn every weight into NaN: say what overflowed
                    raise TrainError(f"the gradient is not finite at step {step}" + _blame_weight(weight, use_aux))
            opt.step()
            if use_aux:
                objective.after_step(model, step, cfg.steps)
        if result.aux_skipped > max(5, cfg.steps // 2):
            raise TrainError(
                f"auxiliary {objective.spec.id} was non-finite on {result.aux_skipped} of {step + 1} steps"
            )

        # ---- log -----------------------------------------------------------------------------------------
        n = cfg.grad_accum
        recent.append(loss_sum / n)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "loss": loss_sum / n, "ce": ce_sum / n, "aux": aux_sum / n, "lr": lr_at(step, cfg)}
            if curve_fn is not None and curve_every and step % curve_every == 0:
                with torch.no_grad():
                    row.update(curve_fn(tuple(h.detach() for h in hidden), batch))
            result.log.append(row)
        if progress is not None:
            progress({"step": step + 1, "total": cfg.steps, "loss": loss_sum / n, "tokens": tokens})

    tail = recent[-max(1, len(recent) // 10) :]
    result.final_loss = sum(tail) / len(tail)
    if probes.cos_trace:
        vals = [c for _, c in probes.cos_trace]
        result.grad_cosine = {
            "mean": sum(vals) / len(vals),
            "frac_positive": sum(c > 0 for c in vals) / len(vals),
            "per_layer": {k: sum(v) / len(v) for k, v in sorted(probes.per_layer_sum.items())},
            "trace": [{"step": s, "cos": c} for s, c in probes.cos_trace],
            "n_probes": len(vals),
        }
    result.weight = weight
    if use_aux:
        result.dose = dose_summary(probes.norm_trace, weight, probes.anchored)
    result.wall_s = time.perf_counter() - t0
    model.eval()
    return result
