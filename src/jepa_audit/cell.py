"""One grid cell, end to end: data → base model → adapter → train → evaluate → geometry → results row.

This is the recipe (torchtune style): it only constructs components and calls them in order.  The audit
runner, ``jepa-audit train`` and the benchmarks all go through :func:`run_cell` or its parts.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from jepa_audit.config import Config, MethodOverride, stable_hash
from jepa_audit.data import DataError, Splits
from jepa_audit.data.views import Encoded, collate, encode_all
from jepa_audit.models.load import (
    ModelError,
    build_model,
    check_model_dir,
    init_embedding_rows,
    load_pretrained,
    quiet_hf_progress,
)
from jepa_audit.results import ResultsRow
from jepa_audit.tasks import get_task, load_benchmark

ProgressFn = Callable[[dict[str, Any]], None]


class GeometryCapWarning(UserWarning):
    """The geometry batch is smaller than ``geometry.n_sequences`` (the pool is too small)."""


@dataclass
class Prepared:
    """Everything a cell trains and evaluates on, built once."""

    model: nn.Module  # wrapped for fine-tuning (LoRA or full)
    tok: PreTrainedTokenizerBase
    splits: Splits
    train_rows: list[Encoded]
    val_rows: list[Encoded]
    test_rows: list[Encoded]
    geometry_rows: list[Encoded]  # the held-out geometry pool (never trained on, never val)


# Per-process memo of what every cell of a grid shares: a worker runs many cells, and rebuilding the
# corpus, re-hashing the base and re-tokenising the splits cost more than a short fine-tuning run.
# Keys are content hashes of the config parts that determine the value; values are never mutated.
_BASE_PATHS: dict[str, Path] = {}
_ENCODED: dict[str, tuple[Splits, list[Encoded], list[Encoded], list[Encoded], list[Encoded]]] = {}


def base_model_path(cfg: Config, progress: ProgressFn | None = None) -> Path:
    """The local directory of the model to fine-tune (building the tiny base if needed)."""
    if cfg.model.kind == "hf":
        return Path(cfg.model.path or "")
    from jepa_audit.tiny_base import ensure_tiny_base

    key = stable_hash([cfg.model.model_dump(), cfg.base.model_dump(), cfg.data.model_dump(), cfg.cache_dir])
    if key not in _BASE_PATHS or not _BASE_PATHS[key].is_dir():
        _BASE_PATHS[key] = ensure_tiny_base(cfg, progress=progress)
    return _BASE_PATHS[key]


def predictor_slots(cfg: Config) -> int:
    """Predictor slots the published NL views need: the method's ``k`` parameter (llm-jepa), else 0; always
    0 under views.nl=prefix (there the objective appends its predictor tokens itself)."""
    from jepa_audit.objectives import get_objective_class

    spec = get_objective_class(cfg.aux.method).spec
    weight, params = cfg.aux.resolved(spec.default_weight)
    if cfg.views.nl != "published" or weight <= 0 or "k" not in spec.params:
        return 0
    return int({**spec.params, **params}["k"])


def _encoded_splits(cfg: Config, model_dir: Path, tok: PreTrainedTokenizerBase):
    n_pred = predictor_slots(cfg)
    key = stable_hash([str(model_dir.resolve()), cfg.data.model_dump(), cfg.benchmark, cfg.views.nl, n_pred])
    if key not in _ENCODED:
        splits = load_benchmark(cfg.data, cfg.benchmark)
        enc = [
            encode_all(tok, cfg.data.system, s, cfg.views.nl, n_pred, get_task(cfg.data.task))
            for s in (splits.train, splits.val, splits.test, splits.geometry)
        ]
        _ENCODED.clear()  # keep one benchmark's rows: bounded memory, and cells of a grid come in order
        _ENCODED[key] = (splits, *enc)
    return _ENCODED[key]


def prepare(cfg: Config, progress: ProgressFn | None = None) -> Prepared:
    from jepa_audit.determinism import set_deterministic

    set_deterministic(cfg.train.deterministic)  # before the first CUDA call (cuBLAS reads its env var once)
    torch.set_num_threads(cfg.train.threads)
    model_dir = base_model_path(cfg, progress)
    model, tok = load_pretrained(model_dir, cfg.model)
    splits, train_rows, val_rows, test_rows, geometry_rows = _encoded_splits(cfg, model_dir, tok)
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(r.full) for r in (*train_rows, *test_rows))
    if limit is not None and longest + cfg.eval.max_new_tokens > limit:
        raise ModelError(
            f"rows of {longest} tokens + eval.max_new_tokens={cfg.eval.max_new_tokens} exceed the model's "
            f"{limit} positions; raise model.max_positions or lower eval.max_new_tokens"
        )
    model = build_model(model, cfg.adapter, cfg.seed)
    return Prepared(model, tok, splits, train_rows, val_rows, test_rows, geometry_rows)


def preflight(cfg: Config) -> None:
    """Check the inputs a whole grid shares (data, model directory, method ids) before any cell runs.

    Raises DataError, ModelError or KeyError with one message naming the input.
    """
    from jepa_audit.data.lines import line_limit
    from jepa_audit.objectives import get_objective_class

    for method in cfg.audit.methods:
        get_objective_class(method)
    if cfg.model.kind == "hf":
        check_model_dir(Path(cfg.model.path or ""))
    context, source = model_context(cfg)
    why = (
        f"in the model's {context} positions ({source}) even at {MAX_CHARS_PER_TOKEN} characters per token; "
        "shorten or drop that line"
    )
    for benchmark in cfg.audit.benchmarks:
        try:
            with line_limit(context * MAX_CHARS_PER_TOKEN, why):
                load_benchmark(cfg.data, benchmark)
        except OSError as e:  # a folder the loader cannot even look into (permissions)
            raise DataError(f"{e.filename or cfg.data.path}: cannot read ({e.strerror or type(e).__name__})") from None


#: No tokenizer the audit uses averages more characters per token than this over a line (BPE tokens of
#: English text and regexes average 3-5); a line longer than context × this cannot fit, so the preflight
#: refuses it before the base pre-trains. Shorter lines that still do not fit are caught, in tokens, by
#: :func:`prepare`.
MAX_CHARS_PER_TOKEN = 32


def model_context(cfg: Config) -> tuple[int, str]:
    """(positions the model can attend over, where that number comes from), without loading the model."""
    if cfg.model.kind == "hf":
        try:
            n = json.loads((Path(cfg.model.path or "") / "config.json").read_text()).get("max_position_embeddings")
        except (OSError, ValueError, AttributeError):
            n = None
        if isinstance(n, int) and n > 0:
            return n, f"{cfg.model.path}/config.json max_position_embeddings"
    return cfg.model.max_positions, "model.max_positions"


def geometry_batch(cfg: Config, rows: list[Encoded], pad_id: int):
    """The fixed held-out batch: ``geometry.n_sequences`` rows of the geometry pool chosen by ``geometry.seed``.

    Warns (:class:`GeometryCapWarning`) when the pool is smaller than ``geometry.n_sequences``: every rank,
    participation ratio and α-ReQ value is then bounded by the smaller sample."""
    from jepa_audit.geometry import heldout_rows

    if cfg.geometry.n_sequences > len(rows):
        warnings.warn(
            f"geometry.n_sequences={cfg.geometry.n_sequences} capped at the {len(rows)} rows of the geometry "
            f"pool: raise data.geometry_size (rank-type geometry is bounded by the sample)",
            GeometryCapWarning, stacklevel=2,
        )
    idx = heldout_rows(len(rows), cfg.geometry.n_sequences, cfg.geometry.seed)
    return collate([rows[i] for i in idx], pad_id)


def _eval_progress(progress: ProgressFn | None, total: int) -> Callable[[int], None] | None:
    """Adapt the decoder's ``progress(n_done)`` to the cell's progress dicts."""
    return None if progress is None else (lambda k: progress({"phase": "eval", "step": k, "total": total}))


def run_cell(
    cfg: Config, cell_dir: Path, progress: ProgressFn | None = None, save_model: Path | None = None
) -> dict[str, Any]:
    """Train and evaluate one cell; write per-item predictions into ``cell_dir``; return its results row.

    The row follows DESIGN.md (benchmark, method, seed, mode, metrics, geometry, grad_cosine, config_hash,
    wall_s, status="done").  ``progress`` receives dicts like {"phase": str, "step": int, "total": int,
    "loss": float}.  Raises on failure; the audit runner records the error and goes on.
    """
    from jepa_audit.evaluate import evaluate
    from jepa_audit.geometry import compute_geometry
    from jepa_audit.objectives import build_objective, get_objective_class
    from jepa_audit.train import train

    t0 = time.perf_counter()
    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)

    def report(phase: str) -> ProgressFn | None:
        return None if progress is None else (lambda d: progress({"phase": phase, **d}))

    spec = get_objective_class(cfg.aux.method).spec  # unknown ids fail here, before any compute
    prep = prepare(cfg, report("base"))
    weight, params = cfg.aux.resolved(spec.default_weight)
    mcfg = prep.model.config
    objective = None
    if weight > 0:

        objective = build_objective(
            spec.id, params, d_model=mcfg.hidden_size, n_layers=mcfg.num_hidden_layers, seed=cfg.seed
        )
        init_embedding_rows(objective, prep.model, objective.generator)
    pad = int(prep.tok.pad_token_id)
    curve_fn = None
    if cfg.geometry.curve_every:
        from jepa_audit.geometry import curve_subset

        curve_fn = curve_subset
    t_train = time.perf_counter()
    res = train(
        prep.model, prep.train_rows, pad_id=pad, cfg=cfg.train, seed=cfg.seed, objective=objective, weight=weight,
        probe=cfg.probe, progress=report("train"), curve_fn=curve_fn, curve_every=cfg.geometry.curve_every,
        autocast=cfg.model.autocast, target_dose=cfg.aux.dose, forward=cfg.model.forward,
    )
    t_eval = time.perf_counter()
    ev = evaluate(
        prep.model, prep.tok, prep.test_rows, prep.splits.test, cfg.eval,
        progress=_eval_progress(progress, len(prep.test_rows)), task=cfg.data.task, forward=cfg.model.forward,
    )
    t_geo = time.perf_counter()
    geometry: dict[str, Any] = {}
    if cfg.geometry.enabled and prep.geometry_rows:
        gb = geometry_batch(cfg, prep.geometry_rows, pad)
        geometry = compute_geometry(prep.model, gb, cfg.geometry.layers, gen_seed=cfg.geometry.seed)
    t_end = time.perf_counter()

    with open(cell_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for item in ev.predictions:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    with open(cell_dir / "train_log.jsonl", "w", encoding="utf-8") as f:
        for row in res.log:
            f.write(json.dumps(row) + "\n")
    if save_model is not None:
        save_hf(prep.model, prep.tok, Path(save_model))
    rel = Path(cell_dir.parent.name) / cell_dir.name / "predictions.jsonl"
    return ResultsRow(
        benchmark=cfg.benchmark,
        method=cfg.aux.method,
        seed=cfg.seed,
        mode=cfg.adapter.mode,
        family=spec.family,
        weight=res.weight if objective is not None else weight,
        dose=res.dose,  # λ·‖∇aux‖/‖∇CE‖ at the probes (train.dose_summary); None for ce
        weight_source=(
            "calibrated" if cfg.aux.calibrated_dose
            else "preset" if cfg.aux.weight is not None or cfg.aux.per_method.get(spec.id, MethodOverride()).weight is not None
            else "registry"
        ),
        # the validation grid picked its smallest λ: an identical-to-ce result then says "too weak", not "no effect"
        calibration_smallest=(
            cfg.aux.calibrated_dose == min(cfg.calibration.doses) if cfg.aux.calibrated_dose else None
        ),
        target_geometry=list(spec.target_geometry),  # what stats/manipulation.py tests
        target_direction=dict(spec.target_direction),  # which way each target is meant to move
        views=cfg.views.nl,  # how the two views were built (data/views.py); only two-view objectives read them
        labels=cfg.train.labels,  # CE targets: answer (+ end-of-turn) or llm-jepa (the published collator's)
        task=cfg.data.task,
        metric_specs=[m.as_dict() for m in get_task(cfg.data.task).metrics],  # what "metrics" holds, primary first
        metrics=ev.metrics,
        geometry=geometry,
        grad_cosine=res.grad_cosine,
        train={"steps": res.steps, "final_loss": res.final_loss, "aux_skipped": res.aux_skipped,
               "forward": res.forward},  # lean (models/lean.py) or hf: which forward ran the CE rows,
        timing={
            "prepare_s": t_train - t0, "train_s": t_eval - t_train, "eval_s": t_geo - t_eval,
            "geometry_s": t_end - t_geo,
        },
        data_source=prep.splits.source,
        predictions_file=str(rel),
        config_hash=cfg.cell_hash(),
        # plugins (docs/plugins.md) that registered this cell's method or task: source → sha256 (in the hash)
        **({"plugins": {src: p["sha256"] for src, p in cfg.cell_plugins().items()}} if cfg.cell_plugins() else {}),
        deterministic=cfg.train.deterministic,  # deterministic GPU kernels on (jepa_audit/determinism.py)
        versions=library_versions(),  # what ran the cell: a row compared across machines says so
        wall_s=time.perf_counter() - t0,
        status="done",
    ).as_row()


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries whose numerics a row depends on (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def save_hf(model: nn.Module, tok: PreTrainedTokenizerBase, path: Path) -> None:
    """Save a fine-tuned model as a plain HF directory (LoRA adapters merged into the weights)."""
    if hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    path.mkdir(parents=True, exist_ok=True)
    with quiet_hf_progress():
        model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def evaluate_dir(cfg: Config, model_dir: Path, progress: ProgressFn | None = None):
    """Evaluate a local HF model directory on ``cfg.benchmark``'s test split; returns an EvalResult."""
    from jepa_audit.evaluate import evaluate

    torch.set_num_threads(cfg.train.threads)
    splits = load_benchmark(cfg.data, cfg.benchmark)
    model, tok = load_pretrained(model_dir, cfg.model)
    rows = encode_all(tok, cfg.data.system, splits.test, task=get_task(cfg.data.task))
    return evaluate(
        model, tok, rows, splits.test, cfg.eval, progress=_eval_progress(progress, len(rows)), task=cfg.data.task,
        forward=cfg.model.forward,
    )
