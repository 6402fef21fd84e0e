"""Carving the validation slice and the geometry pool off a training split, by fixed seeds (never a cell
seed): every task whose data has no validation split of its own carves them this way (``tasks.carved_splits``;
NL-RX's llm-jepa split through :func:`jepa_audit.data.nlrx.load_nlrx`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from jepa_audit.data.examples import DataError, Example

__all__ = ["GEOMETRY_SEED", "VAL_SEED", "carve_geometry", "carve_val", "reindex"]

#: Seed of the validation carve. Fixed and unrelated to the cell seeds, so every cell tunes on the same rows.
VAL_SEED = 20_160_810
GEOMETRY_SEED = 20_160_811  # the geometry pool's carve, from train less val


def reindex(rows: list[Example]) -> list[Example]:
    """``rows`` with ``idx`` = 0, 1, ... in their order."""
    # replace, not Example(...): a task's Example subclass (tasks/jsonl.py) keeps its extra fields
    return [replace(e, idx=i) for i, e in enumerate(rows)]


def carve_val(
    train: list[Example], val_size: int, what: str = "train", seed: int = VAL_SEED, key: str = "data.val_size"
) -> tuple[list[Example], list[Example]]:
    """Split ``val_size`` rows off ``train`` by a permutation seeded with ``seed`` (:data:`VAL_SEED`, or
    :data:`GEOMETRY_SEED` for the geometry pool, carved from what is left after val).

    Both parts keep their original relative order and are re-indexed from 0. Deterministic in
    (len(train), val_size, seed) alone, never in a cell seed.  ``key`` names the setting in errors.
    """
    if val_size == 0:
        return reindex(train), []
    if val_size >= len(train):
        raise DataError(
            f"{key}={val_size}: {what} has only {len(train)} rows; expected {key} < {len(train)}"
        )
    pick = set(np.random.default_rng(seed).permutation(len(train))[:val_size].tolist())
    val = [e for i, e in enumerate(train) if i in pick]
    rest = [e for i, e in enumerate(train) if i not in pick]
    return reindex(rest), reindex(val)


def carve_geometry(
    train: list[Example], geometry_size: int, what: str = "train"
) -> tuple[list[Example], list[Example]]:
    """(train, geometry): the geometry pool carved from ``train`` (what is left after val), seed
    :data:`GEOMETRY_SEED`.  Never validation rows: λ is chosen on those, and geometry must not be."""
    return carve_val(train, geometry_size, what=what, seed=GEOMETRY_SEED, key="data.geometry_size")
