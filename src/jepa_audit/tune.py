"""λ calibration of one auxiliary on the validation slice (never test).

For each λ of :func:`objectives.calibrate.calibration_grid` plus the CE baseline (λ = 0), fine-tune the same
seed and measure the validation answer-CE and validation exact match; :func:`choose_weight` picks λ.
The test split is never decoded here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from jepa_audit.config import Config
from jepa_audit.data.views import collate


def validation_ce(model: torch.nn.Module, rows: list, pad_id: int, batch_size: int = 64) -> float:
    """Mean answer-token CE (nats) over validation rows, no grad."""
    from jepa_audit.train import answer_ce

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = collate(rows[i : i + batch_size], pad_id).to(next(model.parameters()).device)
            out = model(input_ids=b.input_ids, attention_mask=b.attention_mask)
            k = int((b.labels[:, 1:] != -100).sum())
            total += float(answer_ce(out.logits, b.labels)) * k
            n += k
    return total / max(1, n)


def calibrate_weight(
    cfg: Config, method: str, criterion: str = "ce", log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Try every λ of the grid for ``method`` on ``cfg``'s benchmark and seed; return the table and the pick."""
    from jepa_audit.cell import prepare
    from jepa_audit.evaluate import evaluate
    from jepa_audit.objectives import build_objective, get_objective_class
    from jepa_audit.objectives.calibrate import calibration_grid, choose_weight
    from jepa_audit.train import train

    spec = get_objective_class(method).spec
    results: dict[float, dict[str, float]] = {}
    for weight in [0.0, *calibration_grid(spec)]:
        prep = prepare(cfg)
        if not prep.val_rows:
            raise ValueError("data.val_size is 0: calibration needs a validation slice")
        mc = prep.model.config
        obj = build_objective(method, cfg.aux.params, mc.hidden_size, mc.num_hidden_layers, cfg.seed) if weight else None
        pad = int(prep.tok.pad_token_id)
        train(prep.model, prep.train_rows, pad_id=pad, cfg=cfg.train, seed=cfg.seed, objective=obj, weight=weight,
              probe=cfg.probe.model_copy(update={"enabled": False}), autocast=cfg.model.autocast)
        em = evaluate(prep.model, prep.tok, prep.val_rows, prep.splits.val, cfg.eval).metrics["exact_match"]
        results[weight] = {"val_ce": validation_ce(prep.model, prep.val_rows, pad), "val_em": em}
        if log:
            log(f"λ={weight:g}: val CE {results[weight]['val_ce']:.4f}, val EM {em:.3f}")
    chosen = choose_weight(results, criterion=criterion)  # type: ignore[arg-type]
    return {"method": method, "benchmark": cfg.benchmark, "seed": cfg.seed, "criterion": criterion,
            "default_weight": spec.default_weight, "chosen_weight": chosen,
            "results": {str(k): v for k, v in results.items()}}
