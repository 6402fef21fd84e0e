"""``jepa-audit bench``: what an audit costs, as ratios measured within one run.

One process, one model, one batch.  Every step timing is the fastest of interleaved repetitions (A, B, C,
A, B, C, …): on a shared machine interference only ever *adds* time and comes in bursts, so the fastest
repetition of each arm is the least disturbed estimate of its cost (the reasoning of ``timeit``), and
interleaving gives every arm the same chances; absolute seconds are reported but never asserted anywhere.  Keys (kept stable for scripts): ``ce_step_s``,
``aux_step_ratio``, ``packed_two_view_ratio`` (views.nl=prefix), ``published_two_view_ratio``
(views.nl=published: LLM-JEPA's own two view rows packed into one extra forward), ``llm_jepa_three_row_ratio``, ``probe_overhead``,
``geometry_overhead``, ``decode_tokens_per_s``, ``decode_speedup_vs_hf_generate``, ``decode_lean_speedup``
(greedy decoding with ``model.forward=hf`` ÷ the lean forward, outputs compared in ``decode_lean_identical``),
``dfa_pairs_per_s``,
``cell_wall_s`` (= ``cell_wall_s_padded``), ``cell_wall_s_packed`` and ``cell_wall_packed_ratio`` (the same smoke
cell with ``train.pack=flat``; two single cells, so read it with the noise of one cell in mind), ``device``,
``step_options`` (the per-operator overhead options as ratios to the loop's own step (lean forward,
AdamW(foreach)): ``transformers_forward``, ``for_loop``, ``fused``, ``threads_2``, ``compile`` with ``--compile``), ``regex_sweep_chars``, ``regex_parse_s``, ``regex_equiv_s``,
``regex_parse_exponent``, ``regex_equiv_exponent`` (the regex length sweep), ``cpu_preset_estimate_s`` (with
its breakdown in ``cpu_preset_estimate``); on ``--device cuda`` also
``paper_step_s``, ``paper_tokens_per_s``, ``paper_mfu`` and ``peak_memory`` ({lora, full} → {method class →
peak_gb, model_gb, step_s}); plus ``step_profile_ms`` (where a step's time goes, per phase of the loop)
and a few diagnostics (``probe_step_ratio``, ``decode_identical_to_hf``, …).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jepa_audit.config import AdapterCfg, Config, ProbeCfg, TrainCfg, load_config
from jepa_audit.data.views import Encoded, collate, encode_all
from jepa_audit.models.lean import LeanCall, lean_reason, read_weights, uses_lean

BENCH_PRESET = "smoke"
STEPS_PER_CALL = 4  # amortises optimizer set-up; every arm pays the same collate per step


def _fastest_times(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Interleaved repetitions of each callable; the fastest seconds per call of each.

    A median over 15 repetitions still moved single-view ratios by up to 0.2 between two runs minutes apart
    on a 2-core VM shared with other jobs (T2: 1.07× then 1.20×; T3-Global: 1.04× then 1.16×).
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def _step_fn(model: nn.Module, rows: list[Encoded], pad: int, cfg: Config, method: str | None,
             probe: bool = False) -> Callable[[], None]:
    """STEPS_PER_CALL steps of the real training loop on one fixed batch (each arm pays the same set-up)."""
    from jepa_audit.objectives import build_objective, get_objective_class
    from jepa_audit.train import train

    tcfg = TrainCfg(steps=STEPS_PER_CALL, batch_size=len(rows), lr=1e-6, warmup_steps=0, threads=cfg.train.threads)
    objective, weight = None, 0.0
    if method is not None:
        spec = get_objective_class(method).spec
        weight = spec.default_weight or 0.1
        mc = model.config
        objective = build_objective(method, {}, mc.hidden_size, mc.num_hidden_layers, seed=0)
    pcfg = ProbeCfg(enabled=probe, every=1)

    def step() -> None:
        train(model, rows, pad_id=pad, cfg=tcfg, seed=0, objective=objective, weight=weight, probe=pcfg)

    return step


def _three_row_step(model: nn.Module, rows: list[Encoded], pad: int) -> Callable[[], None]:
    """LLM-JEPA as published: the full row, the NL view and the regex view as three separate forwards."""
    import torch.nn.functional as F

    from jepa_audit.train import answer_ce

    nl_rows = [Encoded(r.full[: r.nl_last + 2], r.nl_last + 2, r.nl_start, r.nl_last, r.target_view, r.target_last,
                       r.idx) for r in rows]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    ar = torch.arange(len(rows))

    def step() -> None:
        full, nl = collate(rows, pad), collate(nl_rows, pad)  # collated each step, as in the other arms
        model.train()
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=full.input_ids, attention_mask=full.attention_mask)
        ce = answer_ce(out.logits, full.labels)
        hn = model(input_ids=nl.input_ids, attention_mask=nl.attention_mask, output_hidden_states=True).hidden_states[-1]
        hr = model(input_ids=full.target_ids, attention_mask=full.target_mask, output_hidden_states=True).hidden_states[-1]
        e_u, e_t = hn[ar, nl.nl_last], hr[ar, full.target_last]
        loss = ce + 1.0 * (1 - F.cosine_similarity(e_u.float(), e_t.float(), dim=-1).mean())
        loss.backward()
        opt.step()

    def steps() -> None:  # as many steps per call as the other arms
        for _ in range(STEPS_PER_CALL):
            step()

    return steps


def step_option_ratios(model: nn.Module, rows: list[Encoded], pad: int, repeats: int = 15,
                       compile_model: bool = True) -> dict[str, Any]:
    """What each way of cutting a tiny model's per-operator overhead does to one CE step, as ratios to the
    training loop's own choice (AdamW ``foreach=True``, ``train.threads`` = 1), measured in one run.

    Arms (each STEPS_PER_CALL plain CE steps on one fixed batch, interleaved, fastest repetition; the forward
    is the loop's own, :mod:`models.lean` where it applies): ``transformers_forward`` (``model.forward=hf``:
    transformers' modules and PEFT's LoRA wrappers), ``for_loop`` (AdamW ``foreach=False``), ``fused`` (AdamW ``fused=True``, a single fused kernel per
    parameter group), ``threads_2`` (``torch.set_num_threads(2)`` inside the step: intra-op parallelism;
    two audit workers on two cores then compete for the same cores), ``compile`` (``torch.compile`` of the
    model with inductor; ``compile_s`` is its one-off compile time, paid once per cell and per batch shape,
    and shapes change every batch unless rows are padded to buckets). A ratio < 1 is a gain. An arm that
    cannot run here says why in ``unavailable``.
    """
    from jepa_audit.train import answer_ce

    batch = collate(rows, pad)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]

    model.train()
    lean = uses_lean(model, "auto")

    def lean_call() -> Callable[..., Any]:  # the loop's own forward: weights (LoRA merged) read every step
        return LeanCall(model, read_weights(model)) if lean else model

    def make(opt_kw: dict[str, Any], fwd: Callable[[], Callable[..., Any]] = lean_call,
             threads: int | None = None) -> Callable[[], None]:
        opt = torch.optim.AdamW(params, lr=1e-9, **opt_kw)

        def steps() -> None:
            n0 = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                for _ in range(STEPS_PER_CALL):
                    opt.zero_grad(set_to_none=True)
                    out = fwd()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                    answer_ce(out.logits, batch.labels).backward()
                    opt.step()
            finally:
                torch.set_num_threads(n0)

        return steps

    fns: dict[str, Callable[[], None]] = {"foreach": make({"foreach": True}), "for_loop": make({"foreach": False})}
    unavailable: dict[str, str] = {}
    if lean:  # model.forward=hf: transformers' own modules (and PEFT's LoRA wrappers) instead of models/lean.py
        fns["transformers_forward"] = make({"foreach": True}, fwd=lambda: model)
    else:
        unavailable["transformers_forward"] = f"the lean forward does not apply: {lean_reason(model)}"
    out: dict[str, Any] = {}
    try:
        fused = make({"fused": True})
        fused()
        fns["fused"] = fused
    except (RuntimeError, TypeError) as e:  # fused AdamW needs a supported device/dtype
        unavailable["fused"] = str(e).splitlines()[0][:160]
    if (os.cpu_count() or 1) >= 2:
        fns["threads_2"] = make({"foreach": True}, threads=2)
    else:
        unavailable["threads_2"] = "one core"
    if compile_model:
        try:
            compiled = torch.compile(model)
            fn = make({"foreach": True}, fwd=lambda: compiled)
            t = time.perf_counter()
            fn()  # compiles (and recompiles for backward) on the first call
            out["compile_s"] = time.perf_counter() - t
            fns["compile"] = fn
        except Exception as e:  # noqa: BLE001 - inductor needs a C++ toolchain; say why it is out, keep the bench going
            unavailable["compile"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    t = _fastest_times(fns, repeats)
    with torch.no_grad():  # lr 1e-9 moved them by ~nothing; restore exactly anyway so later arms are unaffected
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    out["ratio"] = {k: t[k] / t["foreach"] for k in fns if k != "foreach"}
    out["foreach_step_s"] = t["foreach"] / STEPS_PER_CALL
    out["unavailable"] = unavailable
    return out


PROFILED = ("ce", "T1", "llm-jepa", "V3")  # CE; a single-pass, a two-view and a gradient-surgery objective
PHASES = ("forward", "backward", "optimizer")  # train.py's record_function labels, "train.<phase>"


def phase_profile(fns: dict[str, Callable[[], None]], calls: int = 3) -> dict[str, dict[str, float]]:
    """Where a step's time goes: ms per step in each phase of the training loop, from torch.profiler.

    ``fns`` run STEPS_PER_CALL steps of ``train.train`` each.  Per method: the CPU-side time inside the
    loop's ``train.forward`` / ``train.backward`` / ``train.optimizer`` labels, ``other`` (collate, LR,
    logging) and ``total``, all ms per step, each the fastest of ``calls`` separately profiled calls (as
    for the step timings: interference only adds time).  The profiler itself adds per-operator cost, so
    read shares and differences between methods, not absolute ms (``ce_step_s`` is the unprofiled figure).
    """
    from torch.profiler import ProfilerActivity, profile

    out: dict[str, dict[str, float]] = {}
    for name, fn in fns.items():
        fn()  # warm-up outside the profile
        best: dict[str, float] = {}
        for _ in range(calls):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                fn()
                total_s = time.perf_counter() - t0
            us = {e.key: e.cpu_time_total for e in prof.key_averages()}
            row = {ph: us.get(f"train.{ph}", 0.0) / 1000 / STEPS_PER_CALL for ph in PHASES}
            row["total"] = total_s * 1000 / STEPS_PER_CALL
            best = {k: min(v, best.get(k, v)) for k, v in row.items()}
        best["other"] = max(0.0, best["total"] - sum(best[ph] for ph in PHASES))
        out[name] = best
    return out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} ({cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s))"


def run_bench(device: str = "cpu", quiet: bool = False, write_docs: bool = False, repeats: int = 15,
              preset: str = BENCH_PRESET, compile_model: bool = False) -> dict[str, Any]:
    """Run every measurement and return the JSON-able result (see module docstring for keys).

    ``compile_model``: also time a ``torch.compile``d step in ``step_options`` (1–3 min of inductor compile
    on a 2-core CPU, hence opt-in: ``bench --compile``)."""
    from jepa_audit.cell import prepare, run_cell
    from jepa_audit.decode import decode_benchmark, end_ids, greedy_decode
    from jepa_audit.objectives import spec_rows
    from jepa_audit.regex import DfaScorer

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    cfg = load_config(preset, None, [f"model.device={device}", "adapter.mode=lora"])
    torch.set_num_threads(cfg.train.threads)
    out: dict[str, Any] = {"device": f"{device}: {_machine()}", "preset": preset}

    # ---- a smoke cell: wall time and the geometry share of it ---------------------------------------------
    say("bench: one smoke cell (builds the base if needed)")
    with tempfile.TemporaryDirectory() as tmp:
        row = run_cell(cfg.cell(cfg.benchmark, "T1", cfg.seed, "lora"), Path(tmp) / "cells" / "bench")
        preds = [(p["gold"], p["pred"]) for p in _read_jsonl(Path(tmp) / "cells" / "bench" / "predictions.jsonl")]
    out["cell_wall_s"] = row["wall_s"]
    out["geometry_overhead"] = row["timing"]["geometry_s"] / row["wall_s"]
    # the same cell with its CE rows packed flat (train.pack): the whole cell, not just a step
    say("bench: the same smoke cell with packed CE rows (train.pack=flat)")
    packed_cfg = cfg.cell(cfg.benchmark, "T1", cfg.seed, "lora")
    packed_cfg.train.pack = "flat"
    with tempfile.TemporaryDirectory() as tmp:
        packed_row = run_cell(packed_cfg, Path(tmp) / "cells" / "bench")
    out["cell_wall_s_padded"] = row["wall_s"]
    out["cell_wall_s_packed"] = packed_row["wall_s"]
    out["cell_wall_packed_ratio"] = packed_row["wall_s"] / row["wall_s"]

    # ---- step-time ratios ----------------------------------------------------------------------------------
    prep = prepare(cfg)
    model, pad = prep.model, int(prep.tok.pad_token_id)
    rows = prep.train_rows[: cfg.train.batch_size]
    ids = [r["id"] for r in spec_rows() if r["id"] != "ce"]
    say(f"bench: step time of ce and {len(ids)} objectives, {repeats} interleaved repetitions")
    fns = {"ce": _step_fn(model, rows, pad, cfg, None)}
    fns.update({i: _step_fn(model, rows, pad, cfg, i) for i in ids})
    fns["three_row"] = _three_row_step(model, rows, pad)
    # views.nl=published: LLM-JEPA's own user-only and assistant-only rows, packed into one extra forward
    pub_rows = encode_all(prep.tok, cfg.data.system, prep.splits.train[: len(rows)], "published")
    fns["llm-jepa_published"] = _step_fn(model, pub_rows, pad, cfg, "llm-jepa")
    fns["probe_T1"] = _step_fn(model, rows, pad, cfg, "T1", probe=True)
    t = _fastest_times(fns, repeats)
    out["ce_step_s"] = t["ce"] / STEPS_PER_CALL
    out["aux_step_ratio"] = {i: t[i] / t["ce"] for i in ids}
    out["packed_two_view_ratio"] = t["llm-jepa"] / t["ce"]  # views.nl=prefix (the default)
    out["published_two_view_ratio"] = t["llm-jepa_published"] / t["ce"]  # views.nl=published
    out["llm_jepa_three_row_ratio"] = t["three_row"] / t["ce"]
    # a probe step costs (probe_T1 - T1); it runs once every probe.every steps
    out["probe_step_ratio"] = t["probe_T1"] / t["T1"]
    out["probe_overhead"] = max(0.0, t["probe_T1"] - t["T1"]) / cfg.probe.every / t["T1"]
    say(f"bench: phase profile of {', '.join(PROFILED)}")
    out["step_profile_ms"] = phase_profile({m: fns[m] for m in PROFILED})
    say("bench: per-operator overhead options (optimizer kernels, threads" + (", torch.compile)" if compile_model else ")"))
    out["step_options"] = step_option_ratios(model, rows, pad, repeats, compile_model=compile_model)

    # ---- decoding ------------------------------------------------------------------------------------------
    say("bench: greedy decoding vs model.generate")
    stop = end_ids(model, prep.tok, {r.full[-1] for r in prep.test_rows})
    d = decode_benchmark(model, [r.prompt for r in prep.test_rows], pad_id=pad, stop_ids=stop,
                         max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size, repeats=3)
    out["decode_tokens_per_s"] = d["decode_tokens_per_s"]
    out["decode_speedup_vs_hf_generate"] = d["decode_speedup_vs_hf_generate"]
    out["decode_identical_to_hf"] = d["identical"]
    # the lean forward's share of that: the same greedy decoding with model.forward=hf (transformers' modules)
    prompts = [r.prompt for r in prep.test_rows]
    got: dict[str, list[list[int]]] = {}

    def decode_with(forward: str) -> Callable[[], None]:
        def run() -> None:
            got[forward] = greedy_decode(model, prompts, pad_id=pad, stop_ids=stop, batch_size=cfg.eval.batch_size,
                                         max_new_tokens=cfg.eval.max_new_tokens, forward=forward)
        return run

    td = _fastest_times({"lean": decode_with("auto"), "hf": decode_with("hf")}, repeats=3)
    out["decode_lean_speedup"] = td["hf"] / td["lean"]
    out["decode_lean_identical"] = got["auto"] == got["hf"]

    # ---- DFA scoring ---------------------------------------------------------------------------------------
    pairs = _dfa_pairs(preds)
    say(f"bench: DFA equivalence on {len(pairs)} (gold, prediction) pairs")

    def score_fresh() -> None:  # a fresh scorer each time: no compiled automaton carries over
        DfaScorer(max_states=cfg.eval.dfa_max_states, time_budget_s=cfg.eval.dfa_time_budget_s).score_many(pairs)

    # fastest of 3 passes, as for the steps: single passes read 1,040–3,060 pairs/s on this VM within the hour
    out["dfa_pairs_per_s"] = len(pairs) / _fastest_times({"dfa": score_fresh}, repeats=3, warmup=0)["dfa"]
    out["dfa_pairs_source"] = "NL-RX test gold vs predictions" if len(pairs) > len(preds) else "smoke predictions"
    say("bench: regex parse/equiv time on identical regexes of 10k..200k characters (linearity)")
    from jepa_audit.regex.equiv import length_sweep

    out.update(length_sweep())  # regex_sweep_chars, regex_{parse,equiv}_s, regex_{parse,equiv}_exponent

    say("bench: the cpu preset's test grid, estimated as `audit --preset cpu --dry-run` does")
    est = cpu_preset_estimate()
    out["cpu_preset_estimate_s"] = est["wall_s"]
    out["cpu_preset_estimate"] = est

    if device == "cuda":
        say("bench: Llama-3.2-1B-shaped LoRA step on the GPU (random weights)")
        out.update(paper_step_benchmark("cuda"))
        say("bench: peak GPU memory per method class, LoRA (paper) and full fine-tuning (paper-full-ft)")
        out["peak_memory"] = {m: peak_memory_by_class("cuda", mode=m) for m in ("lora", "full")}
    if write_docs:
        write_performance_doc(out)
    return out


def cpu_preset_estimate(step_time_fn: Callable[[Config], float] | None = None) -> dict[str, Any]:
    """The wall time of the ``cpu`` preset's test grid as ``jepa-audit audit --preset cpu --dry-run`` estimates
    it (:func:`jepa_audit.audit.runner.estimate`: measured CE step time of the preset's model and batch ×
    steps, the decode factor, per-cell start-up, with the preset's workers); λ calibration is not included.
    Returns the estimator's dict plus ``cells``; ``wall_s`` is what ``bench`` reports as
    ``cpu_preset_estimate_s``. Run from the repo root (the preset's ``data.path`` is relative); elsewhere the
    step time falls back to the runner's documented guess and ``step_time_source`` says so."""
    from jepa_audit.audit.grid import expand_grid
    from jepa_audit.audit.runner import estimate, registry_methods

    cfg = load_config("cpu", None, [])
    cells = expand_grid(cfg, known_methods=registry_methods())
    return {"cells": len(cells), **estimate(cfg, len(cells), cfg.audit.workers, step_time_fn)}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _dfa_pairs(preds: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Model-like pairs: the smoke cell's predictions, plus real NL-RX test gold vs a near-miss variant."""
    pairs = list(preds)
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "llm-jepa-nlrx" / "synth_test.jsonl"
    if shared.is_file():
        import json

        golds = [json.loads(x)["messages"][2]["content"] for x in shared.read_text().splitlines() if x.strip()]
        # near misses like a model's: a swapped neighbour regex, or the gold with one operator changed
        for i, g in enumerate(golds):
            other = golds[(i + 1) % len(golds)] if i % 3 == 0 else g.replace("*", "+", 1) if i % 3 == 1 else g
            pairs.append((g, other))
    return pairs


def write_performance_doc(r: dict[str, Any], path: Path = Path("docs/performance.md")) -> None:
    """Rewrite the measured table between the BENCH markers of docs/performance.md."""
    lines = [
        "<!-- BENCH:BEGIN (written by `jepa-audit bench --write-docs`) -->",
        f"Measured on {r['device']}, preset `{r.get('preset', BENCH_PRESET)}`, {time.strftime('%Y-%m-%d')}.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| CE step | {r['ce_step_s'] * 1000:.1f} ms | — |",
        f"| worst single-pass auxiliary (no extra row, no extra backward) | {_worst(r, 0, 0)} | ≤ 1.10× |",
        f"| worst gradient-surgery auxiliary (+1 backward: V3–V5) | {_worst(r, 0, 1)} | — (see below) |",
        f"| worst auxiliary with extra rows | {_worst(r, 1, 0)} | — |",
        f"| packed two-view (LLM-JEPA, regex row only) | {r['packed_two_view_ratio']:.2f}× | ≤ 1.5× |",
        *([f"| published two-view (LLM-JEPA's own two view rows, packed) | {r['published_two_view_ratio']:.2f}× | — |"]
          if "published_two_view_ratio" in r else []),
        f"| LLM-JEPA three separate rows (reference) | {r['llm_jepa_three_row_ratio']:.2f}× | ≈ 3× published |",
        f"| probe overhead (averaged over training) | {r['probe_overhead']:.1%} | ≤ 5 % |",
        f"| geometry share of a cell | {r['geometry_overhead']:.1%} | ≤ 5 % |",
        f"| decoding | {r['decode_tokens_per_s']:.0f} tok/s, {r['decode_speedup_vs_hf_generate']:.2f}× HF generate | ≥ 1.0× |",
        *([f"| decoding, lean forward vs `model.forward=hf` | {r['decode_lean_speedup']:.2f}× "
           f"(tokens identical: {r['decode_lean_identical']}) | — |"] if "decode_lean_speedup" in r else []),
        f"| DFA scoring | {r['dfa_pairs_per_s']:.0f} pairs/s | ≥ 1,000 |",
        f"| smoke cell wall time | {r['cell_wall_s']:.1f} s | — |",
        *([f"| same cell, CE rows packed (`train.pack=flat`) | {r['cell_wall_s_packed']:.1f} s "
           f"({r['cell_wall_packed_ratio']:.2f}× padded) | — |"] if "cell_wall_s_packed" in r else []),
        *([f"| `cpu` preset test grid, dry-run estimate ({r['cpu_preset_estimate']['cells']} cells, "
           f"{r['cpu_preset_estimate']['workers']} workers) | {r['cpu_preset_estimate_s'] / 60:.1f} min | ≤ 30 min |"]
          if "cpu_preset_estimate" in r else []),
        "",
        "| objective | step ratio |",
        "|---|---|",
        *[f"| {k} | {v:.2f}× |" for k, v in sorted(r["aux_step_ratio"].items())],
        *(["", "Per-operator overhead options, CE step time as a ratio to the loop's AdamW(foreach=True), 1 thread:",
           "", "| option | step ratio |", "|---|---|",
           *[f"| {k} | {v:.2f}× |" for k, v in sorted(r["step_options"]["ratio"].items())],
           *[f"| {k} | not measured: {why} |" for k, why in sorted(r["step_options"]["unavailable"].items())],
           *([f"| torch.compile one-off compile time | {r['step_options']['compile_s']:.0f} s |"]
             if "compile_s" in r["step_options"] else [])]
          if "step_options" in r else []),
        "",
        "Profile (torch.profiler, CPU side, ms per step; the profiler inflates absolute times):",
        "",
        "| method | forward | backward | optimizer | other | total |",
        "|---|---|---|---|---|---|",
        *[f"| {m} | " + " | ".join(f"{p[k]:.1f}" for k in (*PHASES, "other", "total")) + " |"
          for m, p in r.get("step_profile_ms", {}).items()],
        "<!-- BENCH:END -->",
    ]
    block = "\n".join(lines)
    text = path.read_text() if path.exists() else "# Performance\n\n<!-- BENCH:BEGIN -->\n<!-- BENCH:END -->\n"
    start, end = text.find("<!-- BENCH:BEGIN"), text.find("<!-- BENCH:END -->")
    if start < 0 or end < 0:
        text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = text[:start] + block + text[end + len("<!-- BENCH:END -->") :]
    path.write_text(text)


def _worst(r: dict[str, Any], extra_forward: int, extra_backward: int) -> str:
    """"1.05× (D5)": the slowest objective of one cost class (extra_forward ≥ 1 counts as 1)."""
    from jepa_audit.objectives import spec_rows

    ids = {x["id"] for x in spec_rows()
           if min(x["extra_forward"], 1) == extra_forward and x["extra_backward"] == extra_backward and x["id"] != "ce"}
    vals = {k: v for k, v in r["aux_step_ratio"].items() if k in ids}
    if not vals:
        return "—"
    k = max(vals, key=vals.get)
    return f"{vals[k]:.2f}× ({k})"


# Llama-3.2-1B's architecture (public config): the shape the `paper` preset fine-tunes.
LLAMA_32_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
               "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 2048,
               "tie_word_embeddings": True, "rope_theta": 500000.0}
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peak, per GPU


def paper_step_benchmark(device: str = "cuda", shape: dict[str, Any] | None = None, batch: int = 16,
                         seq: int = 128, steps: int = 10, mode: str = "lora") -> dict[str, Any]:
    """Step time, tokens/s and MFU of the paper's fine-tuning step on random weights of ``shape``.

    No weights are needed (random init from the architecture alone).  Model FLOPs per token: 6·N for full
    fine-tuning; 4·N under LoRA (no weight gradients of the frozen base), N = non-embedding parameters,
    plus the attention term (PaLM's MFU definition: 12·L·d·T for full fine-tuning, 8·L·d·T under LoRA).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from jepa_audit.models.load import build_model
    from jepa_audit.train import answer_ce

    shape = {**LLAMA_32_1B, **(shape or {})}
    dev = torch.device(device)
    torch.manual_seed(0)
    with dev:  # initialise on the device: a 1B model takes seconds there, a minute on a CPU
        model = LlamaForCausalLM(LlamaConfig(**shape, attn_implementation="sdpa"))
    model = model.to(dev, dtype=torch.bfloat16 if mode == "lora" and dev.type == "cuda" else torch.float32)
    model = build_model(model, AdapterCfg(mode=mode), seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=dev.type == "cuda")
    ids = torch.randint(0, shape["vocab_size"], (batch, seq), device=dev)
    labels = ids.clone()
    amp = dev.type == "cuda"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = model(input_ids=ids, output_hidden_states=True)
        answer_ce(out.logits, labels).backward()
        opt.step()

    step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - t) / steps
    d, L = shape["hidden_size"], shape["num_hidden_layers"]
    n_embed = shape["vocab_size"] * d
    n = sum(p.numel() for p in model.parameters()) - n_embed  # non-embedding (the head is tied)
    per_token = (6 if mode == "full" else 4) * (n + n_embed) + (12 if mode == "full" else 8) * L * d * seq
    tokens_per_s = batch * seq / step_s
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return {"paper_step_s": step_s, "paper_tokens_per_s": tokens_per_s,
            "paper_mfu": None if peak is None else per_token * tokens_per_s / peak,
            "paper_shape": f"d={d} L={L} V={shape['vocab_size']} batch={batch}×{seq} {mode}", "paper_device": name}


def packed_vs_padded_step(device: str = "cuda", shape: dict[str, Any] | None = None, batch: int = 16,
                          seq: int = 128, steps: int = 10, mode: str = "lora", seed: int = 0) -> dict[str, Any]:
    """The CE step of ``shape`` on a ragged batch (lengths uniform in [seq/4, seq], seeded), right-padded vs
    packed flat (``train.pack=flat``: one row of every real token, position ids restarting per sequence),
    through the training loop's own :func:`train.forward_rows`. Attention: FlashAttention-2 when it is
    installed on a CUDA device (its varlen kernel reads the packed position ids), else SDPA (a dense
    block-diagonal mask: the packed row pays the square of its length). Returns ``padded_step_s``,
    ``packed_step_s``, ``packed_ratio`` (packed / padded), ``real_tokens``, ``padded_slots``, ``attn``."""
    import importlib.util

    from transformers import LlamaConfig, LlamaForCausalLM

    from jepa_audit.data.batch import Batch
    from jepa_audit.models.load import build_model
    from jepa_audit.train import answer_ce, forward_rows, pack_ce_rows

    shape = {**LLAMA_32_1B, **(shape or {})}
    dev = torch.device(device)
    attn = "flash_attention_2" if dev.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    torch.manual_seed(seed)
    with dev:
        model = LlamaForCausalLM(LlamaConfig(**shape, attn_implementation=attn))
    bf16 = dev.type == "cuda"
    model = build_model(model.to(dev, dtype=torch.bfloat16 if bf16 and mode == "lora" else torch.float32),
                        AdapterCfg(mode=mode), seed=0)
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(max(2, seq // 4), seq + 1, (batch,), generator=g)
    ids = torch.randint(1, shape["vocab_size"], (batch, seq), generator=g)
    att = (torch.arange(seq)[None, :] < lens[:, None]).long()
    ids = ids * att
    labels = torch.where(att.bool(), ids, -100)
    zeros = torch.zeros(batch, dtype=torch.long)
    b = Batch(input_ids=ids, attention_mask=att, labels=labels, answer_mask=att.bool(), prompt_mask=att.bool() & False,
              nl_last=zeros, answer_start=zeros, target_ids=ids[:, :2], target_mask=att[:, :2], target_last=zeros,
              item_ids=torch.arange(batch))
    packed = pack_ce_rows(b, "flat")
    b = b.to(dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-9)

    def arm(pk: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    _, logits = forward_rows(model, b, pk)
                answer_ce(logits, b.labels).backward()
                opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()

        return run

    t = _fastest_times({"padded": arm(None), "packed": arm(packed)}, repeats=3)
    return {"padded_step_s": t["padded"] / steps, "packed_step_s": t["packed"] / steps,
            "packed_ratio": t["packed"] / t["padded"], "real_tokens": int(att.sum()),
            "padded_slots": batch * seq, "attn": attn, "mode": mode}


# One method per cost class: what a step keeps alive differs by class, not by objective within it.
MEMORY_CLASSES = {"ce": None, "single-pass": "T1", "two-view": "llm-jepa", "gradient-surgery": "V3"}


def random_rows(n: int, seq: int, vocab: int, seed: int = 0) -> list[Encoded]:
    """``n`` chat-shaped rows of ``seq`` random ids (prompt 3/4, answer 1/4, a regex view), for timing and
    memory on random weights: every objective finds the indices it reads."""
    g = torch.Generator().manual_seed(seed)
    answer = max(3, seq // 4)
    prompt = seq - answer
    rows = []
    for i in range(n):
        full = torch.randint(10, vocab, (seq,), generator=g).tolist()
        nl_last = prompt - 4  # then the user's end-of-turn and a 2-token assistant header
        target_view = [1, *full[nl_last + 2 :]]
        rows.append(Encoded(full, prompt, 3, nl_last, target_view, len(target_view) - 2, i))
    return rows


def peak_memory_by_class(device: str = "cuda", shape: dict[str, Any] | None = None, batch: int = 16,
                         seq: int = 128, mode: str = "lora", steps: int = 2) -> dict[str, dict[str, Any]]:
    """Peak GPU memory of the real training loop per method class, on random weights of ``shape``.

    ``mode="lora"``: the ``paper`` preset (bf16 base, LoRA, bf16 autocast); ``"full"``: ``paper-full-ft``
    (fp32 weights, bf16 autocast).  Each class runs ``steps`` steps of :func:`jepa_audit.train.train` with
    the gradient-cosine probe on every step (a probe step takes g_CE and g_aux separately, as gradient surgery
    does: the peak of any auxiliary's run).  Returns {class: {method, peak_gb, model_gb, step_s}}; on a CPU
    the memory figures are None (torch.cuda.max_memory_allocated has nothing to read) and only step_s is set.
    """
    import gc

    from transformers import LlamaConfig, LlamaForCausalLM

    from jepa_audit.models.load import build_model
    from jepa_audit.objectives import build_objective, get_objective_class
    from jepa_audit.train import train

    shape = {**LLAMA_32_1B, **(shape or {})}
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    with dev:
        model = LlamaForCausalLM(LlamaConfig(**shape, attn_implementation="sdpa"))
    model = model.to(torch.bfloat16 if mode == "lora" and cuda else torch.float32)
    model = build_model(model, AdapterCfg(mode=mode), seed=0)
    rows = random_rows(batch, seq, shape["vocab_size"])
    tcfg = TrainCfg(steps=steps, batch_size=batch, lr=1e-6, warmup_steps=0)
    out: dict[str, dict[str, Any]] = {}
    for cls, method in MEMORY_CLASSES.items():
        objective, weight = None, 0.0
        if method is not None:
            spec = get_objective_class(method).spec
            weight = spec.default_weight or 0.1
            objective = build_objective(method, {}, shape["hidden_size"], shape["num_hidden_layers"], seed=0)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev) if cuda else None
        t = time.perf_counter()
        train(model, rows, pad_id=0, cfg=tcfg, seed=0, objective=objective, weight=weight,
              probe=ProbeCfg(enabled=True, every=1), autocast="bf16" if cuda else "none")
        if cuda:
            torch.cuda.synchronize(dev)
        out[cls] = {
            "method": method or "ce",
            "peak_gb": torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None,
            "model_gb": base / 2**30 if base is not None else None,
            "step_s": (time.perf_counter() - t) / steps,
        }
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out
