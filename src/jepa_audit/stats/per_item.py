"""The per-item section: McNemar per seed, the seed-level log-odds t-test, the hierarchical bootstrap and
the conditional logit of each comparison, from the cells' predictions files (read through a caller's loader)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from .index import BASELINE, CellIndex, Key, _is_seed, _sorted_seeds
from .items import (
    conditional_logit,
    hierarchical_bootstrap,
    mcnemar_exact,
    mcnemar_log_odds,
    seed_level_log_odds,
)

__all__ = ["CONDITIONAL_LOGIT_LABEL", "PredictionsLoader"]

CONDITIONAL_LOGIT_LABEL = "conditional on these trained models; excludes run-to-run variance"

PredictionsLoader = Callable[[str], "list[dict[str, Any]] | None"]


# --------------------------------------------------------------------------- per-item analyses


def _item_vector(preds: Sequence[Mapping[str, Any]] | None, field_name: str) -> dict[Hashable, bool] | None:
    if preds is None:
        return None
    out: dict[Hashable, bool] = {}
    for p in preds:
        if not isinstance(p, Mapping):
            continue
        item, value = p.get("item"), p.get(field_name)
        if _is_seed(item) and isinstance(value, bool):
            out[item] = value
    return out


def _items_entry(
    idx: CellIndex,
    key: Key,
    method: str,
    metric: str,
    seeds: Sequence[Hashable],
    load: Callable[[Mapping[str, Any]], list[dict[str, Any]] | None],
    rng: np.random.Generator,
    bootstrap_reps: int,
    fit_logit: bool,
) -> dict[str, Any] | None:
    by_method = idx.cells[key]
    field_name = idx.item_field(metric)
    per_seed = []
    diffs: dict[Hashable, dict[Hashable, float]] = {}
    long_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for seed in seeds:
        mine = _item_vector(load(by_method[method][seed]), field_name)
        base = _item_vector(load(by_method[BASELINE][seed]), field_name)
        if mine is None or base is None:
            continue
        items = _sorted_seeds(set(mine) & set(base))
        a = np.array([mine[i] for i in items], dtype=bool)
        b = np.array([base[i] for i in items], dtype=bool)
        mc = mcnemar_exact(a, b)
        per_seed.append(
            {
                "seed": seed,
                **mc.as_dict(),
                "log_odds_ratio": mcnemar_log_odds(mc.n_method_only, mc.n_baseline_only),
            }
        )
        if items:
            diffs[seed] = {i: float(x) - float(y) for i, x, y in zip(items, a, b, strict=True)}
            ids = np.array([str(i) for i in items])
            long_rows.append(
                (
                    np.r_[a, b],
                    np.r_[np.ones_like(a), np.zeros_like(b)],
                    np.r_[ids, ids],
                    np.full(2 * ids.size, str(seed)),
                )
            )
    if not per_seed:
        return None
    # the bootstrap redraws the same items in every seed, so it uses the items every seed has
    shared = _sorted_seeds(set.intersection(*(set(d) for d in diffs.values()))) if diffs else []
    matrix = [np.array([d[i] for i in shared], dtype=float) for d in diffs.values()]
    boot = hierarchical_bootstrap(matrix if shared else [], rng, reps=bootstrap_reps).as_dict()
    dropped = max((len(d) for d in diffs.values()), default=0) - len(shared)
    if dropped > 0 and boot["note"] is not None:
        boot["note"] += f"; {dropped} item(s) not shared by every seed left out of the bootstrap"
    entry: dict[str, Any] = {
        "benchmark": key[0],
        "mode": key[1],
        "method": method,
        "metric": metric,
        "n_seeds": len(per_seed),
        "mcnemar": per_seed,
        # the item-level result: per-seed McNemar log-odds ratios, t-test across seeds (df = n − 1)
        "item_level": seed_level_log_odds(
            [s["n_method_only"] for s in per_seed], [s["n_baseline_only"] for s in per_seed]
        ).as_dict(),
        "bootstrap": boot,
        "conditional_logit": None,
    }
    if fit_logit and long_rows:
        y, x, item, seed = (np.concatenate(parts) for parts in zip(*long_rows, strict=True))
        entry["conditional_logit"] = {
            "label": CONDITIONAL_LOGIT_LABEL,
            **conditional_logit(y, x, item, seed).as_dict(),
        }
    return entry


def _comparison_rng(seed: int, comp: Mapping[str, Any]) -> np.random.Generator:
    """A generator keyed by (benchmark, mode, metric, method), so adding a method moves no other interval."""
    name = "\x1f".join(str(comp[k]) for k in ("benchmark", "mode", "metric", "method"))
    words = np.frombuffer(hashlib.sha256(name.encode("utf-8")).digest()[:16], dtype=np.uint32)
    return np.random.default_rng(np.random.SeedSequence([seed, *words.tolist()]))


def _cached_loader(
    loader: PredictionsLoader, warnings: list[str]
) -> Callable[[Mapping[str, Any]], list[dict[str, Any]] | None]:
    cache: dict[str, list[dict[str, Any]] | None] = {}

    def load(row: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        rel = row.get("predictions_file")
        if not isinstance(rel, str) or not rel:
            return None
        if rel not in cache:
            cache[rel] = loader(rel)
            if cache[rel] is None:
                warnings.append(
                    f"predictions file {rel!r} is missing or unreadable; its cell has no item analysis"
                )
        return cache[rel]

    return load
