"""The tiny base model: pre-trained once per (corpus, config) and cached content-addressed.

A recipe (it runs :func:`jepa_audit.train.train`), so it sits beside ``cell.py`` above the training loop,
not in ``models/`` below it.

Every cell fine-tunes the same base.  It is trained on the task's pre-training pool (NL-RX: generated
(description, regex) pairs), disjoint from the fine-tuning data, with a tokenizer trained on that pool plus
the fine-tuning *training* text of every benchmark of the task (never test).  A task without a pool (SCAN,
GSM8K) gets a base that is its random init with that tokenizer: its cells then learn the task from scratch.  The directory ``<cache_dir>/base/<key>/`` is written in Hugging Face format (config,
safetensors, tokenizer, chat template) by a temp-dir + rename, with a ``DONE.json`` holding the sha256 of
the weights; a file lock makes concurrent workers wait for the one that builds it instead of racing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jepa_audit.config import Config, TrainCfg, stable_hash
from jepa_audit.data.tokenizer import train_tiny_tokenizer
from jepa_audit.data.views import encode_all
from jepa_audit.models.load import ModelError, quiet_hf_progress
from jepa_audit.models.tiny import new_tiny_llama
from jepa_audit.tasks import get_task, load_benchmark, pretraining_pool
from jepa_audit.train import train

BASE_FORMAT = "tiny-base-v1"  # bump when the pre-training recipe changes: old caches are then ignored


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _corpus(cfg: Config) -> tuple[list, list[str]]:
    """(pre-training pool, tokenizer texts): the pool is empty when the task has none."""
    pool = pretraining_pool(cfg.data, cfg.base.pool_size, cfg.base.pool_seed) or []
    texts = [cfg.data.system] * 5000  # weight it so BPE merges the fixed system prompt into few tokens
    for ex in pool:
        texts += [ex.prompt, ex.target]
    for b in get_task(cfg.data.task).benchmark_names(cfg.data):
        for ex in load_benchmark(cfg.data, b).train:
            texts += [ex.prompt, ex.target]
    return pool, texts


def base_key(cfg: Config, texts: list[str]) -> str:
    text_hash = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    return stable_hash(
        {
            "format": BASE_FORMAT,
            "model": cfg.model.model_dump(exclude={"device", "compile", "dtype", "forward"}),
            "base": cfg.base.model_dump(),
            "system": cfg.data.system,
            "texts": text_hash,
        }
    )


def verify_base(path: Path) -> None:
    """Raise ModelError if a cached base is incomplete or its weights do not match the recorded hash."""
    done = path / "DONE.json"
    try:
        meta = json.loads(done.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cached base {path} is incomplete or corrupt ({done}: {e}); delete {path} to rebuild it") from None
    weights = path / "model.safetensors"
    if not weights.is_file() or _sha256(weights) != meta.get("weights_sha256"):
        raise ModelError(
            f"cached base {path} is corrupt: model.safetensors does not match the sha256 in DONE.json; "
            f"delete {path} to rebuild it"
        )


def ensure_tiny_base(cfg: Config, progress: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Return the directory of the cached base for ``cfg``, pre-training it first if needed."""
    pool, texts = _corpus(cfg)
    root = Path(cfg.cache_dir) / "base"
    root.mkdir(parents=True, exist_ok=True)
    final = root / base_key(cfg, texts)
    with open(root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building the same base: wait for it
        if final.exists():
            verify_base(final)
            return final
        tok = train_tiny_tokenizer(texts, cfg.model.vocab_size)
        model = new_tiny_llama(cfg.model, tok, seed=cfg.base.seed)
        final_loss, steps = None, 0
        if pool and cfg.base.steps:
            rows = encode_all(tok, cfg.data.system, pool, task=get_task(cfg.data.task))
            too_long = max(len(r.full) for r in rows)
            if too_long > cfg.model.max_positions:
                raise ModelError(
                    f"pre-training rows reach {too_long} tokens > model.max_positions={cfg.model.max_positions}"
                )
            tcfg = TrainCfg(
                steps=cfg.base.steps, batch_size=cfg.base.batch_size, lr=cfg.base.lr,
                warmup_steps=min(20, cfg.base.steps),
            )  # fmt: skip
            result = train(model, rows, pad_id=tok.pad_token_id, cfg=tcfg, seed=cfg.base.seed, progress=progress,
                           forward=cfg.model.forward)
            final_loss, steps = result.final_loss, cfg.base.steps
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            with quiet_hf_progress():
                model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            meta = {
                "format": BASE_FORMAT,
                "weights_sha256": _sha256(tmp / "model.safetensors"),
                "pretrain_final_loss": final_loss,  # None: the task has no pool, the base is its random init
                "pretrain_steps": steps,
                "pool_size": len(pool),
                "n_params": sum(p.numel() for p in model.parameters()),
            }
            with open(tmp / "DONE.json", "w") as f:
                json.dump(meta, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final
