"""The step time an audit's compute estimate multiplies (``jepa-audit audit --dry-run``): one CE training step
of the configured model and batch, measured here.  It lives in ``audit/`` (not ``bench.py``, which reports
costs and sits above the audit) so that the runner's estimate needs nothing from a layer above it.
"""

from __future__ import annotations

import time

import torch

from jepa_audit.config import Config, TrainCfg


def measure_step_time(cfg: Config, steps: int = 6) -> float:
    """Seconds per CE training step of ``cfg``'s model and batch, on a randomly initialised model of the
    configured shape (step time does not depend on the weights, so no base is built or loaded).

    Used by ``jepa-audit audit --dry-run`` for its compute estimate.  Real (``hf``) models are measured from
    their config alone, without reading the weights.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from jepa_audit.data.tokenizer import train_tiny_tokenizer
    from jepa_audit.data.views import encode_all
    from jepa_audit.models.load import build_model, resolve_device
    from jepa_audit.models.tiny import new_tiny_llama
    from jepa_audit.tasks import get_task, load_benchmark
    from jepa_audit.train import train

    torch.set_num_threads(cfg.train.threads)
    # the grid's first benchmark when cfg.benchmark (default "synth") is not one of the task's
    bench = cfg.benchmark if cfg.benchmark in get_task(cfg.data.task).benchmarks else cfg.audit.benchmarks[0]
    splits = load_benchmark(cfg.data, bench)
    sample = splits.train[: cfg.train.batch_size * 2]
    if cfg.model.kind == "tiny":
        tok = train_tiny_tokenizer([cfg.data.system] * 50 + [t for e in sample for t in (e.prompt, e.target)],
                                   cfg.model.vocab_size)
        model = new_tiny_llama(cfg.model, tok, seed=0)
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.model.path, local_files_only=True)
        from jepa_audit.data.tokenizer import ensure_pad

        ensure_pad(tok)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg.model.path, local_files_only=True))
    model = build_model(model.to(resolve_device(cfg.model.device)), cfg.adapter, seed=0)
    rows = encode_all(tok, cfg.data.system, sample, task=get_task(cfg.data.task))
    tcfg = TrainCfg(steps=steps, batch_size=cfg.train.batch_size, lr=1e-6, warmup_steps=0)
    train(model, rows, pad_id=int(tok.pad_token_id), cfg=tcfg.model_copy(update={"steps": 1}), seed=0)  # warm-up
    t = time.perf_counter()
    train(model, rows, pad_id=int(tok.pad_token_id), cfg=tcfg, seed=0)
    return (time.perf_counter() - t) / steps
