"""The audit's λ calibration stage: a best-shot λ per (auxiliary, benchmark, mode), chosen on validation.

Before any test cell runs, for every (benchmark, method ≠ ce, mode) of the grid, the stage fine-tunes one
run per (dose, calibration seed) on the training split and scores it on the validation slice:

- **dose grid**: ``calibration.doses`` (default 10⁻³, 10⁻², 10⁻¹, 1). A run with dose δ sets
  λ = δ·‖∇CE‖/‖∇aux‖ from the step-0 probe (``train.train(target_dose=δ)``), so the grid spans three decades
  of λ and reaches an auxiliary gradient as large as CE's for every auxiliary, whatever its loss scale.
  When ‖∇aux‖ is 0 at step 0 the run keeps the fallback λ = registry default × δ/0.01 (``anchored: false``).
- **seeds**: ``calibration.seeds``, disjoint from ``audit.seeds`` (the config refuses an overlap).
- **score**: validation exact match on the first ``calibration.val_rows`` rows of the validation slice carved
  from train (the test split is never decoded here); the mean over calibration seeds per dose; the pick is
  :func:`objectives.calibrate.choose_point` under ``calibration.rule`` (default ``best``: the validation-best
  dose, ties to the smaller λ; ``one_se``: the largest λ within one paired standard error of the best score;
  non-finite never wins); its λ is the geometric mean over seeds of the λ the runs resolved.
- **curve**: each run also logs its per-item validation correctness (for the paired SE) and the geometry of
  the fixed held-out geometry batch, so calibration.json holds, per pair, a dose-response curve of both
  halves (score, SE and target geometry keys per dose; the picked and the validation-best dose).
- **freezing**: each (benchmark, method, mode)'s grid, scores, doses and pick go into ``DIR/calibration.json``
  the moment its runs have all *finished* (a NaN score or a diverged run is a finished run that never wins; a
  lost run, an exception or a dead worker, leaves the pair unpicked and stops the audit before the test grid
  until a rerun has retried it), with a ``basis`` hash of its runs' configs and the rule; a pick
  whose basis still matches is never recomputed (a changed rule re-picks from the stored runs, no rerun). :func:`apply_picks` writes the pick into each test cell's config
  (``aux.weight``, ``aux.calibrated_dose``), hence into its hash, before the runner registers the grid.
- **store**: the runs are cells of their own kind in the same store format, under ``DIR/calibration/``
  (its own results.jsonl, cells/, grid.json, lock), so a kill loses at most the runs in flight and a rerun
  skips every finished run; DIR/results.jsonl keeps only test cells (its DESIGN.md contract), so the report
  and the statistics never see a calibration row.

Why a plain grid and not successive halving: with 3–4 grid points, halving (η = 2) costs 4·½ + 2·1 = 4 full
runs for a 4-point grid, the same as running it whole, and its low rung (half the steps) would rank doses by
an earlier, noisier EM. The presets instead size the grid (docs/audit.md gives the arithmetic).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from jepa_audit.audit.executors import CellFn, CellJob, make_executor, read_progress
from jepa_audit.audit.grid import Cell, cell_key, expand_grid
from jepa_audit.audit.progress import AuditProgress
from jepa_audit.audit.store import Store, atomic_write, notes
from jepa_audit.config import Config, stable_hash

SUBDIR = "calibration"
FILE = "calibration.json"
FORMAT = 1
FALLBACK_DOSE = 0.01  # the dose the registry default λ stands for when a run cannot anchor (‖∇aux‖ = 0)
RULES = {
    "best": "validation exact match, mean over calibration seeds; the validation-best dose, ties to the smaller "
    "λ; non-finite never wins",
    "one_se": "validation exact match, mean over calibration seeds; the largest λ whose score is within one "
    "paired standard error (same items, same seeds) of the best (one-SE rule); non-finite never wins",
}


# ----------------------------------------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------------------------------------


def pair_id(benchmark: str, method: str, mode: str) -> str:
    return f"{benchmark}/{method}/{mode}"


def _default_weight(method: str) -> float:
    from jepa_audit.objectives import get_objective_class

    return float(get_objective_class(method).spec.default_weight)


def calibration_cells(cfg: Config, cells: list[Cell], default_weight: Callable[[str], float] = _default_weight) -> dict[str, list[Cell]]:
    """The runs of the stage, per pair id, for the (benchmark, method ≠ ce, mode) of ``cells``.

    Each run's config is the test cell's with the calibration seed, ``train.steps = calibration.steps``,
    ``aux.dose`` set and ``aux.weight`` the fallback; its key ``cal__<bench>__<method>__s<seed>__<mode>__d<dose>``
    and hash cover ``calibration.val_rows`` too (it changes the score).
    """
    cal = cfg.calibration
    pairs: dict[str, list[Cell]] = {}
    for c in cells:
        if c.method == "ce":
            continue
        pid = pair_id(c.benchmark, c.method, c.mode)
        if pid in pairs:
            continue
        pinned = cfg.aux.per_method.get(c.method)
        if pinned is not None and pinned.weight is not None:  # λ fixed by the preset for this method
            continue
        base_w = default_weight(c.method)
        if base_w <= 0:  # nothing to calibrate (a reference with λ = 0)
            continue
        runs = []
        for dose in cal.doses:
            for seed in cal.seeds:
                rc = cfg.cell(c.benchmark, c.method, seed, c.mode)
                rc.aux.dose = float(dose)
                rc.aux.weight = base_w * dose / FALLBACK_DOSE
                if cal.steps is not None:
                    rc.train.steps = cal.steps
                key = f"cal__{cell_key(c.benchmark, c.method, seed, c.mode)}__d{dose:g}"
                runs.append(Cell(c.benchmark, c.method, seed, c.mode, rc, key, stable_hash([rc.cell_hash(), cal.val_rows])))
        pairs[pid] = runs
    return pairs


def run_calibration_cell(cfg: Config, cell_dir: Path, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One calibration run: fine-tune on train at ``cfg.aux.dose``, score on the validation slice only.

    Returns a row like a test cell's (``metrics.exact_match`` / ``dfa_accuracy`` are **validation** scores,
    ``metrics.split = "validation"``), plus ``kind = "calibration"``, ``target_dose``, the resolved ``weight``
    and the run's ``dose``. The test split is never decoded, and never handed to anything here.
    """
    from jepa_audit.cell import prepare
    from jepa_audit.evaluate import evaluate
    from jepa_audit.models.load import init_embedding_rows
    from jepa_audit.objectives import build_objective
    from jepa_audit.tasks import get_task
    from jepa_audit.train import train

    if cfg.aux.dose is None:
        raise ValueError("run_calibration_cell: the config has no aux.dose (not a calibration run)")
    prep = prepare(cfg)
    if not prep.val_rows:
        raise ValueError("data.val_size is 0: the λ calibration needs a validation slice")
    mc = prep.model.config
    _, params = cfg.aux.resolved(0.0)  # the method's parameters as its test cells get them (aux.per_method)
    obj = build_objective(cfg.aux.method, params, mc.hidden_size, mc.num_hidden_layers, cfg.seed)
    init_embedding_rows(obj, prep.model, obj.generator)  # predictor rows, as run_cell does
    rep = None if progress is None else (lambda d: progress({"phase": "calibrate", **d}))
    res = train(
        prep.model, prep.train_rows, pad_id=int(prep.tok.pad_token_id), cfg=cfg.train, seed=cfg.seed,
        objective=obj, weight=float(cfg.aux.weight or 0.0), probe=cfg.probe, progress=rep,
        autocast=cfg.model.autocast, target_dose=cfg.aux.dose, forward=cfg.model.forward,
    )  # fmt: skip
    n = cfg.calibration.val_rows or len(prep.val_rows)
    rows, examples = prep.val_rows[:n], prep.splits.val[:n]
    ev = evaluate(prep.model, prep.tok, rows, examples, cfg.eval, task=cfg.data.task, forward=cfg.model.forward)
    return {
        **_run_extras(cfg, prep, ev),
        "kind": "calibration",
        "benchmark": cfg.benchmark,
        "method": cfg.aux.method,
        "seed": cfg.seed,
        "mode": cfg.adapter.mode,
        "target_dose": cfg.aux.dose,
        "weight": res.weight,
        "dose": res.dose,
        "metrics": {
            **{m.name: ev.metrics[m.name] for m in get_task(cfg.data.task).metrics},  # the task's, primary first
            "n_val": len(rows),
            "split": "validation",
        },
        "train": {"steps": res.steps, "final_loss": res.final_loss, "aux_skipped": res.aux_skipped},
        "status": "done",
    }


def _run_extras(cfg: Config, prep: Any, ev: Any) -> dict[str, Any]:
    """What a calibration run logs beyond its score, for the dose-response curve (issue #25):

    - ``items``: per validation row (in order) whether the primary metric is right, as a ``0``/``1`` string
      (:func:`objectives.calibrate.item_string`): the doses of a pair are scored on the same items, so the
      one-SE rule's SE is paired (:func:`objectives.calibrate.paired_se`);
    - ``geometry``: every geometry key on the fixed held-out geometry batch (the pool carved from train, never
      trained on and never test; the same batch the test cells use), so the curve can show the objective's
      target keys against dose. Empty when ``geometry.enabled`` is false or the pool is empty.
    """
    from jepa_audit.cell import geometry_batch
    from jepa_audit.geometry import compute_geometry
    from jepa_audit.objectives.calibrate import item_string
    from jepa_audit.tasks import get_task

    field = get_task(cfg.data.task).metrics[0].field
    geometry: dict[str, Any] = {}
    if cfg.geometry.enabled and prep.geometry_rows:
        gb = geometry_batch(cfg, prep.geometry_rows, int(prep.tok.pad_token_id))
        geometry = compute_geometry(prep.model, gb, cfg.geometry.layers, gen_seed=cfg.geometry.seed)
    return {"items": item_string([it.get(field) for it in ev.predictions]), "geometry": geometry}


# ----------------------------------------------------------------------------------------------------------
# Picks and calibration.json
# ----------------------------------------------------------------------------------------------------------


def primary_metric(cfg: Config) -> str:
    """The metric the validation grid is scored on: the task's primary (NL-RX: exact_match); ``val_em``."""
    from jepa_audit.tasks import get_task

    return get_task(cfg.data.task).metrics[0].name


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(float(x))


def _geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if _finite(x) and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def basis(cfg: Config, runs: list[Cell]) -> str:
    """What a frozen pick depends on: its runs' configs and the selection rule."""
    return stable_hash([sorted(c.hash for c in runs), cfg.calibration.rule])


def summarise_pair(cfg: Config, runs: list[Cell], rows: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """calibration.json's entry for one pair from its runs' rows (None = failed run = non-finite score)."""
    from jepa_audit.objectives.calibrate import best_point, choose_point, score_se

    first = runs[0]
    grid = []
    for dose in cfg.calibration.doses:
        mine = [c for c in runs if c.config.aux.dose == dose]
        got = [rows.get(c.key) for c in mine]
        ems = [(r or {}).get("metrics", {}).get(primary_metric(cfg)) for r in got]
        finite = all(_finite(x) for x in ems) and bool(ems)
        weights = [(r or {}).get("weight") for r in got]
        doses = [((r or {}).get("dose") or {}).get("median") for r in got]
        grid.append(
            {
                "dose_target": dose,
                "weight": _geomean([w for w in weights if _finite(w)]) if finite else None,
                "weights": weights,
                "val_em": sum(ems) / len(ems) if finite else None,
                "val_em_per_seed": ems,
                "dose_median": _geomean([d for d in doses if _finite(d)]),
                "anchored": [((r or {}).get("dose") or {}).get("anchored") for r in got],
                "runs": [c.key for c in mine],
            }
        )
    _add_paired_se(cfg, runs, rows, grid)
    rule = cfg.calibration.rule
    n_val = [((rows.get(c.key) or {}).get("metrics") or {}).get("n_val") for c in runs]
    n_items = min((int(n) for n in n_val if isinstance(n, int) and n > 0), default=0)
    i = choose_point(grid, rule, n_items) if n_items or rule == "best" else best_point(grid)
    b = best_point(grid)
    _add_curve(cfg, runs, rows, grid, n_items)
    return {
        "benchmark": first.benchmark,
        "method": first.method,
        "mode": first.mode,
        "seeds": list(cfg.calibration.seeds),
        "basis": basis(cfg, runs),
        "grid": grid,
        **curve_flags(grid, i, b),
        "pick": None if i is None else {
            "weight": grid[i]["weight"], "dose_target": grid[i]["dose_target"], "val_em": grid[i]["val_em"],
            "dose_median": grid[i]["dose_median"], "smallest": i == 0, "largest": i == len(grid) - 1, "rule": rule,
            "best_val_em": grid[b]["val_em"] if b is not None else None,
            "se": score_se(grid[b], n_items) if b is not None and n_items else None,
        },
        "note": None if i is not None else "no grid point had a finite validation score: registry default λ kept",
    }  # fmt: skip


def _seed_runs(cfg: Config, runs: list[Cell], dose: float) -> list[Cell]:
    """The runs of one dose, in ``calibration.seeds`` order (so per-seed lists line up across doses)."""
    mine = {c.seed: c for c in runs if c.config.aux.dose == dose}
    return [mine[s] for s in cfg.calibration.seeds if s in mine]


def _add_paired_se(cfg: Config, runs: list[Cell], rows: dict[str, dict[str, Any] | None], grid: list[dict[str, Any]]) -> None:
    """Set each grid point's ``se_paired``: the SE of its score's difference from the validation-best point,
    paired by item and seed (:func:`objectives.calibrate.paired_se`; 0 at the best; None without per-item
    scores). The one-SE rule reads it."""
    from jepa_audit.objectives.calibrate import best_point, paired_se

    b = best_point(grid)
    items = {
        g["dose_target"]: [(rows.get(c.key) or {}).get("items") for c in _seed_runs(cfg, runs, g["dose_target"])]
        for g in grid
    }
    for g in grid:
        g["se_paired"] = None if b is None else paired_se(items[g["dose_target"]], items[grid[b]["dose_target"]])


def _add_curve(
    cfg: Config, runs: list[Cell], rows: dict[str, dict[str, Any] | None], grid: list[dict[str, Any]], n_items: int
) -> None:
    """The dose-response curve on each grid point: ``se`` (the unpaired SE of its own score,
    :func:`objectives.calibrate.score_se`) and ``target`` ({resolved target geometry key: mean over the
    calibration seeds}, from the runs' geometry pass; {} when the runs logged none)."""
    from jepa_audit.objectives import get_objective_class
    from jepa_audit.objectives.base import resolve_target_key
    from jepa_audit.objectives.calibrate import score_se

    templates = list(get_objective_class(runs[0].method).spec.target_geometry) if runs else []
    for g in grid:
        geos = [(rows.get(c.key) or {}).get("geometry") or {} for c in _seed_runs(cfg, runs, g["dose_target"])]
        g["se"] = score_se(g, n_items) if _finite(g.get("val_em")) and n_items else None
        target: dict[str, float | None] = {}
        for t in templates:
            key = next((k for geo in geos if (k := resolve_target_key(t, geo)) is not None), None)
            if key is None:
                continue
            vals = [geo.get(key) for geo in geos]
            # the mean over seeds only when every seed has a finite value: a partial mean is a different curve
            target[key] = sum(map(float, vals)) / len(vals) if all(_finite(v) for v in vals) else None
        g["target"] = target


def curve_flags(grid: list[dict[str, Any]], pick: int | None, best: int | None) -> dict[str, Any]:
    """A pair's curve summary: ``best_dose`` (the validation-best dose, ties to the smaller), ``picked_dose``,
    ``picked_smallest`` / ``picked_largest`` (the pick is the grid's smallest / largest dose; None without a
    pick)."""
    return {
        "best_dose": None if best is None else grid[best]["dose_target"],
        "picked_dose": None if pick is None else grid[pick]["dose_target"],
        "picked_smallest": None if pick is None else pick == 0,
        "picked_largest": None if pick is None else pick == len(grid) - 1,
    }


def read_calibration(out_dir: Path) -> dict[str, Any]:
    """DIR/calibration.json, or an empty one. Raises ValueError naming the file when it is not valid."""
    path = Path(out_dir) / FILE
    if not path.exists():
        return {"format": FORMAT, "pairs": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore or delete it to recalibrate") from None
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), dict):
        raise ValueError(f"{path}: expected an object with a 'pairs' mapping")
    return data


def write_calibration(out_dir: Path, cfg: Config, pairs: dict[str, Any]) -> None:
    cal = cfg.calibration
    doc = {
        "format": FORMAT,
        "rule": RULES[cfg.calibration.rule],
        "doses": cal.doses,
        "seeds": cal.seeds,
        "steps": cal.steps if cal.steps is not None else cfg.train.steps,
        "val_rows": cal.val_rows,
        "pairs": dict(sorted(pairs.items())),
    }
    atomic_write(Path(out_dir) / FILE, json.dumps(doc, indent=1, allow_nan=False))


def frozen_picks(cfg: Config, out_dir: Path, pairs: dict[str, list[Cell]]) -> dict[str, dict[str, Any]]:
    """The entries of calibration.json whose basis matches the current runs (frozen: never recomputed)."""
    known = read_calibration(out_dir)["pairs"]
    return {
        pid: known[pid]
        for pid, runs in pairs.items()
        if pid in known and known[pid].get("basis") == basis(cfg, runs)
    }


def apply_picks(cells: list[Cell], picks: dict[str, dict[str, Any]]) -> list[Cell]:
    """The test cells with each pair's picked λ in their config (``aux.weight``, ``aux.calibrated_dose``) and hash."""
    out = []
    for c in cells:
        entry = picks.get(pair_id(c.benchmark, c.method, c.mode))
        pick = (entry or {}).get("pick")
        if c.method == "ce" or not pick:
            out.append(c)
            continue
        cfg = c.config.model_copy(deep=True)
        cfg.aux.weight, cfg.aux.calibrated_dose = float(pick["weight"]), float(pick["dose_target"])
        out.append(replace(c, config=cfg, hash=cfg.cell_hash()))
    return out


# ----------------------------------------------------------------------------------------------------------
# The stage (called by audit/runner.py)
# ----------------------------------------------------------------------------------------------------------


def active(cfg: Config) -> bool:
    """Whether the stage runs: asked for by the config and λ not pinned by it (``aux.weight``)."""
    return cfg.calibration.enabled and cfg.aux.weight is None


def plan_stage(cfg: Config, cells: list[Cell], out_dir: Path, stream: TextIO | None = None) -> list[Cell]:
    """``--dry-run``: print what the stage will run (touches nothing); return the test cells with the picks
    already frozen applied (the other cells' hashes change once their λ is picked)."""

    def say(msg: str) -> None:
        print(msg, file=stream or sys.stdout, flush=True)

    if not active(cfg):
        if cfg.calibration.enabled:
            say("calibration stage: off, λ fixed by the preset (aux.weight), not calibrated")
        return cells
    pairs = calibration_cells(cfg, cells)
    frozen = complete_picks(out_dir, pairs, frozen_picks(cfg, out_dir, pairs))
    sub = Path(out_dir) / SUBDIR
    store = Store(sub, lock=False) if sub.exists() else None
    todo = [c for pid, runs in pairs.items() if pid not in frozen for c in runs]
    pending = sum(1 for c in todo if not (store and store.is_done(c)))
    steps = cfg.calibration.steps or cfg.train.steps
    test_steps = sum(c.config.train.steps for c in cells)
    say(
        f"calibration stage: {len(pairs)} (auxiliary, benchmark, mode) pairs × {len(cfg.calibration.doses)} doses × "
        f"{len(cfg.calibration.seeds)} seed(s) = {sum(map(len, pairs.values()))} runs of {steps} steps; "
        f"{len(frozen)} pair(s) frozen in {Path(out_dir) / FILE}; {pending} run(s) to go "
        f"(≈ {pending * steps / max(1, test_steps):.0%} of the test grid's training steps, plus decoding "
        f"{cfg.calibration.val_rows or cfg.data.val_size} validation rows each)"
    )
    return apply_picks(cells, frozen)


class CalibrationIncomplete(RuntimeError):
    """Some calibration runs were lost (an exception, a dead worker): their pairs are not picked, and the test
    grid does not start. The message names the missing runs; running the same command again retries them."""


def diverged(error: str | None) -> bool:
    """Whether a run's error is a divergence of training at its dose (:class:`jepa_audit.train.TrainError`:
    non-finite loss or gradient): a result of that dose, as deterministic as a score, never a lost run."""
    return bool(error) and str(error).startswith("TrainError:")


def outcome_row(cfg: Config, cell: Cell, row: dict[str, Any] | None, error: str | None) -> dict[str, Any] | None:
    """The row to commit for one finished calibration run, or None when the run was lost and must run again.

    A finished run is a result even when its score is not finite: a NaN validation score, or training that
    diverged at this dose (``TrainError``), is committed with ``metrics[primary] = None`` and ``score:
    "non-finite"`` (it never wins the pick, and a rerun would give the same). Anything else that failed (an
    exception, a killed worker) is lost: recorded in failures.jsonl, retried on the next run, and its pair is
    never picked without it."""
    primary = primary_metric(cfg)
    if error is None and row is not None:
        em = (row.get("metrics") or {}).get(primary)
        return row if _finite(em) else {**row, "score": "non-finite", "note": f"validation {primary} is {em!r}"}
    if diverged(error):
        return {
            "kind": "calibration", **cell.ident(), "target_dose": cell.config.aux.dose, "weight": None,
            "dose": None, "metrics": {primary: None, "split": "validation"}, "status": "done",
            "score": "non-finite", "note": str(error),
        }  # fmt: skip
    return None


def missing_runs(store: Store, runs: list[Cell]) -> list[Cell]:
    """The runs of one pair without a committed row in the calibration store (lost or not yet run)."""
    return [c for c in runs if not store.is_done(c)]


def complete_picks(out_dir: Path, pairs: dict[str, list[Cell]], picks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The frozen ``picks`` whose runs all have a row in ``DIR/calibration/`` (an entry written before this
    check existed may have been picked from a partial curve: it is dropped, and its lost runs run again)."""
    sub = Path(out_dir) / SUBDIR
    if not picks:
        return picks
    store = Store(sub, lock=False) if (sub / "results.jsonl").exists() else None
    if store is None:  # picks without their runs (a copied calibration.json): only those marked complete
        return {pid: e for pid, e in picks.items() if e.get("complete") is True}
    return {pid: e for pid, e in picks.items() if not missing_runs(store, pairs[pid])}


def _incomplete_message(out_dir: Path, store: Store, pairs: dict[str, list[Cell]], errors: dict[str, str]) -> str:
    errors = {**{f["cell"]: f.get("error") for f in store.failures()}, **errors}  # lost by an earlier run too
    lost = [(pid, c) for pid, runs in sorted(pairs.items()) for c in missing_runs(store, runs)]
    shown = "; ".join(f"{c.key} ({errors.get(c.key, 'not run')})" for _, c in lost[:4])
    more = f" and {len(lost) - 4} more" if len(lost) > 4 else ""
    names = ", ".join(sorted({pid for pid, _ in lost}))
    return (
        f"calibration stage: {len(lost)} run(s) lost: {shown}{more}. λ is not picked for {names} (never from a "
        f"partial curve) and no test cell ran; errors in {Path(out_dir) / SUBDIR / 'failures.jsonl'}. Run the "
        "same command again to retry them"
    )


def run_stage(
    cfg: Config,
    cells: list[Cell],
    out_dir: Path,
    *,
    kind: str,
    workers: int,
    fn: CellFn | None = None,
    stream: TextIO | None = None,
    live: bool | None = None,
) -> list[Cell]:
    """Run the missing calibration runs, freeze each pair into calibration.json the moment its last run is
    committed, and return ``cells`` with the picks applied. ``fn`` (default :func:`run_calibration_cell`) has
    the cell contract ``(cfg, cell_dir, progress) -> row``. A run that finished with a non-finite score (or
    diverged) counts as such and never wins (:func:`outcome_row`); a lost run leaves its pair unpicked and
    raises :class:`CalibrationIncomplete` once the stage is over (a rerun retries it)."""
    if not active(cfg):
        return cells
    out_dir = Path(out_dir)
    fn = fn or run_calibration_cell
    pairs = calibration_cells(cfg, cells)
    frozen = complete_picks(out_dir, pairs, frozen_picks(cfg, out_dir, pairs))
    todo_pairs = {pid: runs for pid, runs in pairs.items() if pid not in frozen}
    if todo_pairs:
        all_runs = [c for runs in todo_pairs.values() for c in runs]
        by_key = {c.key: c for c in all_runs}
        pair_of = {c.key: pid for pid, runs in todo_pairs.items() for c in runs}
        errors: dict[str, str] = {}
        with notes(lambda msg: print(msg, file=stream or sys.stdout, flush=True)):
            store = Store(out_dir / SUBDIR)
        with store:

            def freeze_if_complete(pid: str) -> None:  # calibration.json grows pair by pair
                runs = todo_pairs[pid]
                if pid in frozen or missing_runs(store, runs):
                    return
                entries = dict(read_calibration(out_dir)["pairs"])
                entries[pid] = frozen[pid] = {**summarise_pair(cfg, runs, {c.key: store.row(c) for c in runs}), "complete": True}
                write_calibration(out_dir, cfg, entries)

            store.check_grid(all_runs, force=True, name=f"{cfg.audit.name}-calibration")
            for pid in todo_pairs:  # runs all stored already (a changed rule, or a kill after the last commit)
                freeze_if_complete(pid)
            todo = [c for c in all_runs if not store.is_done(c)]
            jobs = [CellJob(c.key, c.config.model_copy(deep=True), str(store.prepare_cell(c)), c.hash) for c in todo]
            attempts = {j.key: Path(j.cell_dir) for j in jobs}  # where each run writes its progress, this attempt
            with AuditProgress(len(all_runs), len(all_runs) - len(todo), workers, stream=stream, live=live) as prog:
                if todo:
                    prog.log(f"calibration stage: {len(todo)} of {len(all_runs)} run(s) to go (validation slice only)")

                def poll() -> None:
                    prog.poll(lambda key: read_progress(attempts[key]))

                runner = make_executor(kind, workers, cfg) if jobs else None
                for out in runner.run(jobs, fn, on_start=prog.started, tick=poll, listener=prog.update) if runner else ():
                    cell = by_key[out.key]
                    row = outcome_row(cfg, cell, out.row, out.error)
                    if row is not None:
                        store.commit(cell, {**row, "wall_s": round(out.wall_s, 3)})
                        prog.finished(cell.key, True, out.wall_s, row=row)
                        if row.get("score") == "non-finite":
                            prog.log(f"{cell.key}: non-finite validation score ({row['note']}); it never wins the pick")
                        freeze_if_complete(pair_of[cell.key])
                    else:
                        error = out.error or "the run returned no row"
                        store.record_failure(cell, error, out.traceback, out.wall_s)
                        errors[cell.key] = error
                        prog.finished(cell.key, False, out.wall_s, error=error)
            if any(pid not in frozen for pid in todo_pairs):
                raise CalibrationIncomplete(_incomplete_message(out_dir, store, {p: todo_pairs[p] for p in todo_pairs if p not in frozen}, errors))
    return apply_picks(cells, frozen)


def calibrate_method(
    cfg: Config, method: str, out_dir: Path, *, workers: int = 1, stream: TextIO | None = None
) -> dict[str, Any]:
    """`jepa-audit aux calibrate ID`: the stage for one method on the config's benchmarks and modes, in
    ``out_dir`` (resumable like an audit's). Returns calibration.json's entries for that method."""

    c = cfg.model_copy(deep=True)
    c.audit.methods = [method]
    c.aux.weight = None
    c.calibration.enabled = True
    with notes(lambda msg: print(msg, file=stream or sys.stdout, flush=True)):
        lock = Store(out_dir)  # the directory's lock: never write into a directory whose audit is running
    with lock:
        run_stage(c, expand_grid(c, known_methods=None), Path(out_dir), kind="local", workers=workers, stream=stream)
    pairs = read_calibration(Path(out_dir))["pairs"]
    return {pid: e for pid, e in pairs.items() if e["method"] == method}
