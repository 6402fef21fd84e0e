"""``jepa-audit rehearse PRESET``: a GPU preset's own path, on the CPU, at the real model shape.

No GPU has run the GPU presets, and the tiny CPU presets hide whole classes of fault that the real shape and
precision expose (a bf16 base with fp32 LoRA adapters crashed every ``paper`` cell at its first evaluation).
The rehearsal builds, in a temporary directory, a random-weight model directory of the preset's real
architecture (Llama-3.2-1B: :data:`jepa_audit.models.llama_dir.LLAMA32_1B`, safetensors, a locally trained
tokenizer with Llama-3's special tokens, begin-of-text post-processor and chat template; nothing is
downloaded), then runs the preset's own audit path (:func:`jepa_audit.audit.run_audit`: the λ calibration
stage when the preset has one, the grid, the report) in the preset's precision at a reduced size, stated in
the JSON (:data:`REDUCED`): one cell per method class (CE, a single-pass auxiliary, a two-view one, a
gradient-surgery one, a Fisher one), a few steps each, greedy decoding of a few test items with the preset's
stop rules, scoring, and the geometry pass at d = 2,048 on a smaller batch.

One JSON (printed and written to a file): per phase pass/fail with the error, step times (s), tokens per step
(real tokens of the CE rows), peak resident memory (GB) against :func:`estimate_rss_gb` (docs/performance.md,
"Rehearsal").  Only the data are stand-ins: the embedded NL-RX-style corpus, or a generated GSM8K-format
directory for ``gsm8k``.
"""

from __future__ import annotations

import io
import json
import os
import resource
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jepa_audit.config import PRESETS, Config, load_config

__all__ = ["CLASSES", "REDUCED", "rehearsal_presets", "estimate_rss_gb", "rehearse"]


def rehearsal_presets() -> list[str]:
    """The GPU presets (``model.kind: hf``), read from the preset files: what `rehearse` accepts."""
    return [p for p in PRESETS if load_config(p).model.kind == "hf"]


# One method per class: the auxiliaries' cost and code paths differ by class, not by method within one.
CLASSES = {"ce": "ce", "single-pass": "T1", "two-view": "llm-jepa", "gradient-surgery": "V3", "fisher": "F1"}

# What is reduced, and to what (everything else is the preset's): stated in the JSON.
REDUCED: dict[str, Any] = {
    "train.steps": 2, "train.batch_size": 2, "train.grad_accum": "min(preset, 2)", "audit.seeds": [82],
    "audit.benchmarks": "the preset's first", "audit.methods": list(CLASSES.values()),
    "data.max_test": "4 for ce, 2 for the other classes", "eval.batch_size": 4, "eval.max_new_tokens": 16,
    "geometry": "the ce cell only (the pass does not depend on the objective), geometry.n_sequences 8",
    "calibration": {"methods": ["T1"], "doses": [0.001, 1.0], "seeds": [1001], "steps": 1, "val_rows": 2,
                    "other auxiliaries": "λ pinned at the registry default"},
    "model.device": "cpu", "train.threads": "os.cpu_count()", "audit.workers": 1,
}


def _rss_gb() -> float:
    """Peak resident set size of this process so far, GB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _n_params(shape: dict[str, Any]) -> int:
    """Parameters of a Llama of ``shape`` (tied embeddings counted once)."""
    d, i, L, V = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    hd = shape.get("head_dim") or d // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * hd
    per_layer = d * (d + 2 * kv) + d * d + 3 * d * i + 2 * d
    head = 0 if shape.get("tie_word_embeddings", False) else V * d
    return V * d + L * per_layer + d + head


def estimate_rss_gb(cfg: Config, shape: dict[str, Any], tokens_per_row: int = 160) -> dict[str, float]:
    """Host memory of one rehearsal cell, GB (the model in the preset's dtype on the CPU); docs/performance.md.

    1 GB for Python, torch and the tokenizer; the weights (params × dtype bytes); under LoRA the adapters and
    their AdamW state (16 B each, r = ``adapter.rank`` on all seven projections); under full fine-tuning fp32
    gradients and AdamW moments (12 B per parameter), a bf16 copy of the weights under autocast (2 B), and for
    the gradient-surgery class two more gradient sets (8 B: g_CE and g_aux alive while combined); activations:
    the logits of a micro-batch (B × T × V: bf16 logits, their fp32 copy for CE and its gradient, 10 B) plus
    every layer's kept activations (about 40 d-wide values per token per layer in the compute dtype).
    """
    p = _n_params(shape)
    wbytes = {"float32": 4, "bfloat16": 2, "float16": 2}[cfg.model.dtype]
    cbytes = 2 if cfg.model.autocast != "none" else wbytes
    d, L, V = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"]
    tokens = cfg.train.batch_size * tokens_per_row
    act = (tokens * V * 10 + tokens * d * L * 40 * cbytes) / 1e9
    weights = p * wbytes / 1e9
    if cfg.adapter.mode == "lora":
        r = cfg.adapter.rank
        hd = shape.get("head_dim") or d // shape["num_attention_heads"]
        kv = shape["num_key_value_heads"] * hd
        i = shape["intermediate_size"]
        per_layer = r * ((d + d) + (d + kv) * 2 + (d + d) + 2 * (d + i) + (i + d))
        state = L * per_layer * 16 / 1e9
        surgery = L * per_layer * 8 / 1e9
    else:
        state = p * (12 + (2 if cfg.model.autocast != "none" else 0)) / 1e9
        surgery = p * 8 / 1e9
    base = 1.0 + weights + state + act
    return {"params_b": p / 1e9, "weights_gb": weights, "train_state_gb": state, "activations_gb": act,
            "cell_gb": base, "gradient_surgery_gb": base + surgery}


def _config(preset: str, model_dir: Path, data_dir: Path | None) -> Config:
    """The preset with :data:`REDUCED` applied (its precision, adapter, views, labels, schedule untouched)."""
    from jepa_audit.objectives import get_objective_class
    from jepa_audit.tasks import get_task

    cfg = load_config(preset)
    if cfg.model.kind != "hf":
        raise ValueError(f"preset {preset!r} is a CPU preset (model.kind={cfg.model.kind}); rehearse one of "
                         f"{', '.join(rehearsal_presets())}")
    sets = [f"model.path={model_dir}", "model.device=cpu", f"train.threads={os.cpu_count() or 1}",
            "train.steps=2", "train.batch_size=2", f"train.grad_accum={min(cfg.train.grad_accum, 2)}",
            "train.log_every=1", "audit.seeds=[82]", f"audit.benchmarks=[{cfg.audit.benchmarks[0]}]",
            f"audit.methods=[{', '.join(CLASSES.values())}]", "audit.workers=1", "audit.executor=local",
            "data.max_test=4", "eval.batch_size=4", "eval.max_new_tokens=16", "geometry.n_sequences=8"]
    if "embedded" in get_task(cfg.data.task).sources:  # the task generates its data: no data directory needed
        sets.append("data.source=embedded")
    else:
        sets.append(f"data.path={data_dir}")
    if cfg.calibration.enabled:
        sets += ["calibration.doses=[0.001, 1.0]", "calibration.seeds=[1001]", "calibration.steps=1",
                 "calibration.val_rows=2"]
        for m in CLASSES.values():
            if m not in ("ce", "T1") and (cfg.aux.per_method.get(m) is None or cfg.aux.per_method[m].weight is None):
                sets.append(f"aux.per_method.{m}.weight={get_objective_class(m).spec.default_weight}")
    return load_config(preset, overrides=sets)


class _Recorder:
    """Wraps a cell function ``(cfg, cell_dir, progress) -> row`` (in-process: audit.workers = 1) to record,
    per run, the wall time of each optimizer step, the real tokens it trained on, the phase it was in when it
    failed and the peak RSS after it."""

    def __init__(self, fn: Callable[..., dict[str, Any]], adjust: Callable[[Config], None] | None = None) -> None:
        self.fn = fn
        self.adjust = adjust  # trims a cell's own copy of its config (after the store hashed it)
        self.runs: dict[str, dict[str, Any]] = {}

    def __call__(self, cfg: Config, cell_dir: Any, progress: Callable[[dict[str, Any]], None] | None = None):
        if self.adjust is not None:
            self.adjust(cfg)
        rec: dict[str, Any] = {"method": cfg.aux.method, "step_s": [], "tokens": [], "phase": "prepare",
                               "geometry": cfg.geometry.enabled}
        self.runs[Path(cell_dir).parent.name] = rec
        last = [time.perf_counter()]

        def listen(d: dict[str, Any]) -> None:
            rec["phase"] = d.get("phase", rec["phase"])
            if d.get("phase") in ("train", "calibrate") and "step" in d:
                now = time.perf_counter()
                rec["step_s"].append(round(now - last[0], 3))
                rec["tokens"].append(d.get("tokens"))
                last[0] = now
            elif d.get("phase") not in ("train", "calibrate"):
                last[0] = time.perf_counter()
            if progress is not None:
                progress(d)

        t = time.perf_counter()
        try:
            row = self.fn(cfg, cell_dir, listen)
        except BaseException as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["traceback"] = traceback.format_exc()[-4000:]
            raise
        finally:
            rec["wall_s"] = round(time.perf_counter() - t, 2)
            rec["peak_rss_gb"] = round(_rss_gb(), 2)
        rec["row"] = row
        return row


def _trim_cell(cfg: Config) -> None:
    """Decoding, scoring and the geometry pass do not depend on the objective: the ce cell runs them in full
    (4 test items, the geometry batch), the other classes decode 2 items and skip the geometry pass."""
    if cfg.aux.method != "ce":
        cfg.data.max_test = 2
        cfg.geometry.enabled = False


def _phase(ok: bool, error: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"ok": ok, "error": error, **extra}


def _failed_stage(rec: dict[str, Any]) -> str | None:
    """Which stage of a failed cell raised, read from its traceback (the innermost of our entry points)."""
    if not rec.get("error"):
        return None
    tb = rec.get("traceback", "")
    for stage, marker in (("geometry", "in compute_geometry"), ("decode_score", "in evaluate")):
        if marker in tb:
            return stage
    return "train"


def _cell_phases(rec: dict[str, Any], in_preset: bool) -> dict[str, Any]:
    """train / decode_score / geometry of one recorded cell; a stage after a failed one is "not reached"."""
    row = rec.get("row") or {}
    timing = row.get("timing", {})
    failed = _failed_stage(rec)
    order = ["train", "decode_score", "geometry"]

    def status(stage: str) -> tuple[bool, str | None]:
        if failed is None:
            return True, None
        if order.index(stage) < order.index(failed):
            return True, None
        return False, rec["error"] if stage == failed else f"not reached ({failed} failed)"

    tokens = [t for t in rec["tokens"] if t is not None]
    out = {
        # step_s[0] also builds the optimizer state and, with a probe, the gradient cosine's separate backward
        "train": _phase(*status("train"), in_preset_methods=in_preset, step_s=rec["step_s"],
                        tokens_per_step=round(sum(tokens) / len(tokens), 1) if tokens else None,
                        forward=row.get("train", {}).get("forward"),
                        final_loss=row.get("train", {}).get("final_loss"), prepare_s=timing.get("prepare_s"),
                        peak_rss_gb=rec.get("peak_rss_gb")),
        "decode_score": _phase(*status("decode_score"), eval_s=timing.get("eval_s"), metrics=row.get("metrics")),
        "geometry": _phase(*status("geometry"), geometry_s=timing.get("geometry_s"),
                           n_keys=len(row.get("geometry") or {})),
    }
    if not rec.get("geometry", True):
        out["geometry"] = _phase(True, skipped="run on the ce cell only")
    elif failed is None and not row.get("geometry"):
        out["geometry"] = _phase(False, "no geometry computed", geometry_s=timing.get("geometry_s"), n_keys=0)
    if failed:
        out["traceback"] = rec.get("traceback")
    return out


def rehearse(preset: str, layers: int | None = None, out: Path | None = None, keep: Path | None = None,
             stream: Any = None) -> dict[str, Any]:
    """Rehearse ``preset`` (one of :func:`rehearsal_presets`) at the real width and vocabulary and ``layers``
    decoder layers (None: the real 16); write the JSON to ``out`` (if given) and return it. ``keep``: a
    directory to work in and leave behind (default: a temporary one, removed)."""
    from jepa_audit.audit import run_audit
    from jepa_audit.audit.calibration import run_calibration_cell
    from jepa_audit.cell import run_cell
    from jepa_audit.models.llama_dir import LLAMA32_1B, write_llama_dir
    from jepa_audit.tasks import get_task, load_benchmark

    if preset not in rehearsal_presets():
        raise ValueError(f"rehearse: {preset!r} is not a GPU preset; expected one of {', '.join(rehearsal_presets())}")
    if layers is not None and layers < 1:
        raise ValueError(f"rehearse: --layers must be a positive number of decoder layers, got {layers}")
    shape = {**LLAMA32_1B, "num_hidden_layers": layers or LLAMA32_1B["num_hidden_layers"]}
    t_all = time.perf_counter()
    result: dict[str, Any] = {"preset": preset, "layers": shape["num_hidden_layers"], "shape": shape,
                              "reduced": REDUCED, "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(),
                              "phases": {}}
    phases = result["phases"]
    tmp = None if keep else tempfile.TemporaryDirectory(prefix=f"jepa-audit-rehearse-{preset}-")
    work = Path(keep) if keep else Path(tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = work / "model"
        task = get_task(load_config(preset).data.task)
        # a task without generated data runs on a stand-in in its own format (GSM8K: generated sums)
        data_dir = None if "embedded" in task.sources else task.stand_in_data(work / task.name)
        cfg = _config(preset, model_dir, data_dir)
        result["config"] = {"dtype": cfg.model.dtype, "autocast": cfg.model.autocast, "adapter": cfg.adapter.mode,
                            "grad_accum": cfg.train.grad_accum, "views": cfg.views.nl, "labels": cfg.train.labels,
                            "calibration": cfg.calibration.enabled, "preset_methods": load_config(preset).audit.methods}
        result["memory_estimate"] = estimate_rss_gb(cfg, shape)

        t = time.perf_counter()
        try:
            splits = load_benchmark(cfg.data, cfg.audit.benchmarks[0])
            texts = [cfg.data.system] * 20 + [x for e in splits.train[:1500] for x in (e.prompt, e.target)]
            # bf16 on disk, as Llama-3.2-1B-Instruct ships; the preset's model.dtype is what loading makes of it
            write_llama_dir(model_dir, texts, shape, dtype="bfloat16")
            size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e9
            phases["model_dir"] = _phase(True, wall_s=round(time.perf_counter() - t, 1), safetensors_gb=round(size, 2),
                                         peak_rss_gb=round(_rss_gb(), 2))
        except Exception as e:  # noqa: BLE001 - a failing phase is the finding; the JSON says which
            phases["model_dir"] = _phase(False, f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
            return _finish(result, t_all, out)

        cells, cal = _Recorder(run_cell, _trim_cell), _Recorder(run_calibration_cell)
        log = stream if stream is not None else io.StringIO()
        t = time.perf_counter()
        try:
            code = run_audit(cfg, work / "audit", workers=1, cell_fn=cells, calibration_fn=cal, stream=log, live=False,
                             known_methods=None)
            audit_error = None if code == 0 else f"run_audit exited {code}"
        except Exception as e:  # noqa: BLE001
            audit_error = f"{type(e).__name__}: {e}"
            result["audit_traceback"] = traceback.format_exc()[-4000:]
        result["audit_wall_s"] = round(time.perf_counter() - t, 1)

        if cfg.calibration.enabled:
            errs = [f"{k}: {r['error']}" for k, r in cal.runs.items() if r.get("error")]
            phases["calibration"] = _phase(bool(cal.runs) and not errs, "; ".join(errs) or (None if cal.runs else
                                           "no calibration run ran"), runs=len(cal.runs),
                                           wall_s=round(sum(r["wall_s"] for r in cal.runs.values()), 1),
                                           step_s=[r["step_s"] for r in cal.runs.values()])
        else:
            phases["calibration"] = _phase(True, skipped="the preset has no calibration stage")
        preset_methods = result["config"]["preset_methods"]
        by_method = {r["method"]: r for r in cells.runs.values()}
        for cls, method in CLASSES.items():
            rec = by_method.get(method)
            if rec is None:
                phases[f"cell:{cls}:{method}"] = _phase(False, audit_error or "the cell did not run")
                continue
            phases[f"cell:{cls}:{method}"] = _cell_phases(rec, method in preset_methods)
        report_files = [n for n in ("summary.json", "report.md", "report.html") if (work / "audit" / n).is_file()]
        phases["report"] = _phase(len(report_files) == 3, None if len(report_files) == 3 else
                                  (audit_error or "report files missing"), files=report_files)
        if audit_error and not any(_failed(p) for p in phases.values()):
            phases["audit"] = _phase(False, audit_error)
        if isinstance(log, io.StringIO):
            result["audit_log_tail"] = log.getvalue()[-3000:]
    finally:
        if tmp is not None:
            tmp.cleanup()
    return _finish(result, t_all, out)


def _failed(p: dict[str, Any]) -> bool:
    if "ok" in p:
        return not p["ok"]
    return any(_failed(v) for v in p.values() if isinstance(v, dict))


def _finish(result: dict[str, Any], t0: float, out: Path | None) -> dict[str, Any]:
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["peak_rss_gb"] = round(_rss_gb(), 2)
    result["load_avg_end"] = os.getloadavg()
    result["failed"] = sorted(k for k, p in result["phases"].items() if _failed(p))
    result["ok"] = not result["failed"]
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2, default=str))
    return result
