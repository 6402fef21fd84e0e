"""Batched greedy decoding with a KV cache, plus a ``model.generate`` reference and a speed benchmark.

The evaluation harness decodes thousands of NL→regex prompts per cell, so decoding must be fast and
exactly reproducible.  :func:`greedy_decode` is a lean replacement for ``model.generate(do_sample=False)``:

* prompts are sorted by length into micro-batches (less padding), left-padded inside each micro-batch;
* ``position_ids`` are derived from the attention mask (cumsum − 1, clamped at 0) so a padded row sees
  exactly the positions it would see unpadded — the same convention as ``generate``;
* the prompt is run once (prefill) and afterwards only the newest token is fed, reusing the model's cache;
* finished rows are tracked with tensor ops (no per-row Python), and are dropped from the batch *and* the
  cache once enough of them have accumulated, so late steps do not pay for rows that already stopped;
* the loop ends as soon as every row has stopped;
* for plain full-attention models the KV cache is preallocated (no ``torch.cat`` per step), and with SDPA the
  per-step attention mask is a slice of one precomputed tensor (no per-step mask construction);
* ``forward="auto"`` runs a Llama through :mod:`jepa_audit.models.lean` (weights, LoRA merged, read once per
  call; one fused matmul per projection group) instead of transformers' forward: same logits to float rounding.

Every shortcut is checked against ``generate`` token for token in ``tests/test_decode.py``.

Output convention (shared by :func:`greedy_decode` and :func:`hf_generate_reference`): for each prompt, in
input order, the generated ids *excluding* the stop id; a row that never stops gets ``max_new_tokens`` ids.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer

from jepa_audit.models.lean import LeanCall, uses_lean
from jepa_audit.models.load import last_logits_only

__all__ = ["decode_benchmark", "end_ids", "greedy_decode", "hf_generate_reference"]

# Drop finished rows from the batch/cache once at least this fraction of the rows still in the batch has
# finished.  Dropping costs one copy of the filled cache (≈ the attention reads of one step), so it is not done
# for every single finished row: the threshold bounds the number of copies per micro-batch to a handful.  On the
# CPU tiny-Llama bench 0.0 and 0.25 are within noise of each other; never dropping is ~10-20% slower with stops.
_DROP_FRACTION = 0.25
_PREALLOC = True


# --------------------------------------------------------------------------------------------- helpers


def _as_ids(value: Any) -> set[int]:
    """An eos setting (None, an int, or a list of ints) as a set of ids."""
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


def end_ids(model: nn.Module, tokenizer: Any = None, end_of_turn: Iterable[int] = ()) -> list[int]:
    """Every id that ends a generation, sorted: the model's generation-config eos ids (Llama-3.2-Instruct:
    128001 <|end_of_text|>, 128008 <|eom_id|>, 128009 <|eot_id|>), its config's eos ids, the tokenizer's
    eos, and ``end_of_turn`` (the ids the chat template closes answers with).  ``generate`` stops on the
    generation config's list; so must we, or a row that emits <|eom_id|> runs on to the token cap."""
    base = _base_model(model)
    ids = set(int(i) for i in end_of_turn)
    gen_cfg = getattr(base, "generation_config", None)
    ids |= _as_ids(getattr(gen_cfg, "eos_token_id", None))
    ids |= _as_ids(getattr(getattr(base, "config", None), "eos_token_id", None))
    if tokenizer is not None:
        ids |= _as_ids(getattr(tokenizer, "eos_token_id", None))
    return sorted(ids)


def _base_model(model: nn.Module) -> nn.Module:
    """The underlying ``PreTrainedModel`` (unwraps PEFT), used only to inspect the forward signature."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _model_device(model: nn.Module) -> torch.device:
    """Where input ids must go: the input-embedding weights' device (also right for models split over devices)."""
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters cannot decode anything
        return torch.device("cpu")


class _ForwardSpec:
    """How to call ``model.forward``: the cache keyword (``cache`` in transformers ≥ 5, ``past_key_values``
    before) and whether ``logits_to_keep`` is accepted (saves the full-vocab projection of every prompt
    position at prefill)."""

    def __init__(self, model: nn.Module) -> None:
        base = _base_model(model)
        params = inspect.signature(base.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.logits_to_keep = "logits_to_keep" in params
        # PEFT prompt learning (prefix/prompt tuning) rewrites masks and caches itself: keep to the generic path.
        peft_cfg = getattr(model, "active_peft_config", None)
        generic_only = bool(getattr(peft_cfg, "is_prompt_learning", False))
        self.prealloc = _PREALLOC and not generic_only  # use _PreallocLayer when the cache layout allows it
        # transformers >= 5 with SDPA builds the decode-step mask as a bool [B, 1, 1, kv] tensor that is just
        # the 2D padding mask, and passes any 4D mask through untouched.  Handing it that tensor directly
        # skips the per-step mask construction (~10% of a step on small models) with bit-identical results.
        # Other attention backends (eager: additive float masks; flash: 2D) keep the generic 2D path.
        config = getattr(base, "config", None)
        self.bool_4d_mask = (
            not generic_only
            and self.cache_kw == "cache"
            and getattr(config, "_attn_implementation", None) == "sdpa"
        )

    def cache_of(self, out: Any) -> Any:
        """The cache returned by a forward pass (attribute name depends on the transformers version)."""
        if self.cache_kw == "cache":
            return out.cache
        return out.past_key_values


class _PreallocLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values live in a buffer sized for the whole generation.

    ``DynamicLayer.update`` grows the cache with ``torch.cat``: a fresh ``[b, heads, n, head_dim]`` allocation and a
    full copy per layer per step, O(n²) copying over a generation.  Measured on CPU (1 thread): 3% faster on the
    d=64/2-layer bench, 33% faster with d=256, 4 layers, 100–200-token prompts and 100 new tokens.
    Here ``update`` writes the new positions in place and returns views ``[:, :, :n]`` of the buffer, which SDPA
    consumes with bit-identical results.  Only the operations greedy decoding needs are supported.
    """

    is_croppable = False

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity  # max positions: longest prompt + max_new_tokens
        self.length = 0
        self._kbuf: torch.Tensor | None = None  # [B, kv_heads, capacity, head_dim]
        self._vbuf: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, Dk = key_states.shape
        self.device = key_states.device
        self._kbuf = key_states.new_empty((B, H, self.capacity, Dk))
        self._vbuf = value_states.new_empty((B, value_states.shape[1], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, s = self.length, key_states.shape[-2]
        if n + s > self.capacity:
            raise RuntimeError(f"preallocated KV cache overflow: {n} + {s} > {self.capacity}")
        self._kbuf[:, :, n : n + s] = key_states
        self._vbuf[:, :, n : n + s] = value_states
        self.length = n + s
        self._refresh_views()
        return self.keys, self.values

    def _refresh_views(self) -> None:
        self.keys = self._kbuf[:, :, : self.length]
        self.values = self._vbuf[:, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only batch rows ``indices`` ([b'] int64); copies only the filled part of the buffer."""
        if not self.is_initialized:
            return
        n = self.length
        for name in ("_kbuf", "_vbuf"):
            old = getattr(self, name)
            new = old.new_empty((indices.numel(), *old.shape[1:]))
            new[:, :, :n] = old[indices, :, :n]
            setattr(self, name, new)
        self._refresh_views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def reset(self) -> None:
        self.length = 0
        self._kbuf = self._vbuf = None
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:  # pragma: no cover - not used by greedy decoding
        raise NotImplementedError("the preallocated decode cache does not support crop")

    def batch_repeat_interleave(self, repeats: int) -> None:  # pragma: no cover - not used by greedy decoding
        raise NotImplementedError("the preallocated decode cache does not support batch_repeat_interleave")


def _prealloc_cache(model: nn.Module, spec: _ForwardSpec, capacity: int) -> DynamicCache | None:
    """A ``DynamicCache`` with :class:`_PreallocLayer` layers, or None when that would not be equivalent.

    Only for models whose default cache is plain full-attention ``DynamicLayer``s (Llama, Qwen2 without sliding
    window, …); sliding-window, linear-attention or shared-KV layers keep the model's own cache.
    """
    if spec.cache_kw != "cache":
        return None
    config = getattr(_base_model(model), "config", None)
    if config is None:
        return None
    try:
        cache = DynamicCache(config=config)
    except Exception:  # exotic configs: let the model build its own cache
        return None
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [_PreallocLayer(capacity) for _ in cache.layers]
    return cache


def _micro_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``prompts`` grouped into micro-batches of similar length.

    Sorted longest-first (stable, so ties keep input order): the largest batch tensors are allocated
    first, which surfaces out-of-memory errors immediately rather than at the end of a long run.
    """
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad ``rows`` into ``(input_ids, attention_mask)``, both ``[B, L]`` int64 on ``device``."""
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            ids[b, L - len(r) :] = torch.as_tensor(r, dtype=torch.long)
            mask[b, L - len(r) :] = 1
    # Built on CPU and moved once: one host→device copy per micro-batch instead of one per row.
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def _cut_at_stop(rows: Iterable[Sequence[int]], stop_ids: set[int]) -> list[list[int]]:
    """Truncate each row before its first stop id (the stop id itself is excluded)."""
    out = []
    for r in rows:
        cut = len(r)
        for j, t in enumerate(r):
            if t in stop_ids:
                cut = j
                break
        out.append(list(r[:cut]))
    return out


def _validate(prompts: Sequence[Sequence[int]], batch_size: int, max_new_tokens: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (there is nothing to condition on otherwise)")


class _EvalMode:
    """Context manager: put ``model`` in eval mode and restore each submodule's own ``training`` flag after.

    Restoring per module (not ``model.train(prev)``) keeps deliberately frozen/eval submodules as they were.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.saved: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.saved = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, training in self.saved:
            m.training = training


# ------------------------------------------------------------------------------------------ decoding


def _decode_micro_batch(
    model: nn.Module,
    spec: _ForwardSpec,
    rows: Sequence[Sequence[int]],
    *,
    pad_id: int,
    stop: torch.Tensor,
    max_new_tokens: int,
    device: torch.device,
    drop_fraction: float | None = None,
    call: Callable[..., Any] | None = None,
) -> list[list[int]]:
    """Greedy-decode one micro-batch; returns per-row generated ids (stop id excluded), in ``rows`` order.

    ``call`` runs the forward (default ``model``; :class:`models.lean.LeanCall` for the lean forward).

    Shapes: B = len(rows), L = longest prompt, T = max_new_tokens.  The attention mask of live rows is
    ``[b, L + t]`` at step t; the cache holds ``[b, heads, L + t, head_dim]`` per layer.
    """
    if drop_fraction is None:
        drop_fraction = _DROP_FRACTION
    call = model if call is None else call
    B = len(rows)
    ids, mask = _left_pad(rows, pad_id, device)  # [B, L]
    L = ids.shape[1]

    # Full-length mask, allocated once: prompt part + ones for every generated position; step t uses the
    # prefix [:, : L + t + 1].  Finished rows keep attending to their (pad) tokens, which is harmless: their
    # outputs are never read.  Same for generate(), which is what keeps the two bit-identical.
    full_mask = torch.cat([mask, mask.new_ones((B, max_new_tokens))], dim=1)  # [B, L + T]
    # No padding at all → pass no mask, so SDPA can take its causal fast path (generate does the same).
    use_mask = not bool(mask.all())

    # cumsum − 1 gives each real token its unpadded position; pads get −1 → clamp to 0 (their value is
    # irrelevant because they are masked, but must be a valid rotary index).
    pos = (mask.cumsum(-1) - 1).clamp_(min=0)  # [B, L]
    next_pos = mask.sum(-1, keepdim=True)  # [B, 1] position of the first generated token

    # gen[:, t] is the token chosen at step t, indexed by *original* row so dropping rows needs no remapping.
    # Slots after a row's stop (pad, or never written once the row is dropped) are cut off at the end.
    gen = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    live = torch.arange(B, device=device)  # original-row index of each row still in the batch

    kwargs: dict[str, Any] = {"use_cache": True}
    if spec.logits_to_keep:
        kwargs["logits_to_keep"] = last_logits_only()  # only the last position's logits (a contiguous gather)

    # Our preallocated cache when the model's layout allows it; otherwise (None) the model creates its own.
    cache = _prealloc_cache(model, spec, L + max_new_tokens) if spec.prealloc else None
    kwargs_prefill = {**kwargs, spec.cache_kw: cache} if cache is not None else kwargs
    out = call(
        input_ids=ids, attention_mask=full_mask[:, :L] if use_mask else None, position_ids=pos, **kwargs_prefill
    )
    cache = spec.cache_of(out)
    if cache is None and max_new_tokens > 1:
        raise RuntimeError(f"{type(model).__name__} returned no KV cache with use_cache=True; cannot decode with a cache")
    finished = torch.zeros(B, dtype=torch.bool, device=device)  # per live row
    can_drop = _can_drop(cache)
    if use_mask and spec.bool_4d_mask and not any(getattr(cache, "is_sliding", [True])):
        # [B, 1, 1, L + T] view; step t slices the key axis.  Sliding-window layers need their own masks.
        full_mask = full_mask.bool()[:, None, None, :]

    for t in range(max_new_tokens):
        tok = out.logits[:, -1, :].argmax(dim=-1)  # [b]
        # A finished row still in the batch is fed pad; its choice is never recorded as output.
        tok = torch.where(finished, pad_id, tok)
        gen[live, t] = tok
        finished |= torch.isin(tok, stop)  # vectorised bookkeeping; no data-dependent shapes → no extra sync

        n_done = int(finished.sum())  # the one host sync per step (generate also syncs once per step)
        if n_done == finished.numel() or t + 1 == max_new_tokens:
            break

        if n_done and can_drop and n_done >= drop_fraction * finished.numel():
            keep = (~finished).nonzero().squeeze(1)  # [b'] rows of the current batch to keep
            cache.batch_select_indices(keep)
            live, tok, next_pos, full_mask = live[keep], tok[keep], next_pos[keep], full_mask[keep]
            finished = finished[keep]

        step_mask = full_mask[..., : L + t + 1] if use_mask else None
        out = call(
            input_ids=tok.unsqueeze(1), attention_mask=step_mask, position_ids=next_pos + t,
            **{spec.cache_kw: cache}, **kwargs,
        )
        cache = spec.cache_of(out)

    # First stop per row (T if none), found once on device; then one device→host copy for the micro-batch.
    is_stop = torch.isin(gen, stop)  # [B, T]
    first_stop = torch.where(is_stop.any(dim=1), is_stop.int().argmax(dim=1), max_new_tokens)
    return [row[:s] for row, s in zip(gen.tolist(), first_stop.tolist(), strict=True)]


def _can_drop(cache: Any) -> bool:
    """Whether finished rows can be removed from ``cache`` (transformers ``Cache.batch_select_indices``)."""
    return callable(getattr(cache, "batch_select_indices", None))


def _trivial_result(
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    max_new_tokens: int,
    progress: Callable[[int], None] | None = None,
) -> list[list[int]] | None:
    """Validate the arguments; the answer when no model call is needed (no prompts, or nothing to generate)."""
    _validate(prompts, batch_size, max_new_tokens)
    if not prompts:
        return []
    if max_new_tokens == 0:
        if progress is not None:
            progress(len(prompts))
        return [[] for _ in prompts]
    return None


def _map_micro_batches(
    model: nn.Module,
    prompts: list[list[int]],
    batch_size: int,
    decode_rows: Callable[[list[list[int]]], list[list[int]]],
    progress: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """``decode_rows`` over length-sorted micro-batches (model in eval mode, no autograd), results put back in
    the order of ``prompts``; ``progress`` gets the cumulative number of prompts done after each one."""
    results: list[list[int] | None] = [None] * len(prompts)
    done = 0
    with _EvalMode(model), torch.inference_mode():
        for idx in _micro_batches(prompts, batch_size):
            for i, o in zip(idx, decode_rows([prompts[i] for i in idx]), strict=True):
                results[i] = o
            done += len(idx)
            if progress is not None:
                progress(done)
    return results  # type: ignore[return-value]  # every slot was filled above


def greedy_decode(
    model: nn.Module,
    prompts: list[list[int]],
    *,
    pad_id: int,
    stop_ids: list[int] | set[int],
    max_new_tokens: int,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
    forward: str = "auto",
) -> list[list[int]]:
    """Greedy (argmax) decoding with a KV cache, batched, identical to ``generate(do_sample=False)``.

    Args:
        model: a causal LM (``PreTrainedModel`` or a PEFT wrapper of one) on any device/dtype.
        prompts: N token-id lists (each non-empty); any lengths.
        pad_id: id used for left padding and as the input of rows that already stopped.
        stop_ids: generation for a row ends at the first of these ids, which is not returned.
        max_new_tokens: cap on generated ids per row (rows that never stop get exactly this many).
        batch_size: prompts per micro-batch (prompts are length-sorted into micro-batches).
        device: where to put the inputs; defaults to the device of the model's parameters.
        progress: called after each micro-batch with the cumulative number of prompts done.
        forward: ``model.forward``: ``auto`` decodes through :mod:`jepa_audit.models.lean` where it applies
            (``lean`` insists, ``hf`` never): the same logits to float rounding, so the same tokens but at a
            near-tie of two logits.

    Returns:
        N lists of generated ids, in the order of ``prompts``.
    """
    trivial = _trivial_result(prompts, batch_size, max_new_tokens, progress)
    if trivial is not None:
        return trivial
    dev = torch.device(device) if device is not None else _model_device(model)
    spec = _ForwardSpec(model)
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=dev)  # [S] (may be empty)
    with _EvalMode(model):  # LoRA dropout is the identity in eval mode, where decoding runs
        lean = spec.cache_kw == "cache" and uses_lean(model, forward)
    call = LeanCall(model) if lean else model  # weights read once, inside the inference mode below

    def decode_rows(rows: list[list[int]]) -> list[list[int]]:
        return _decode_micro_batch(
            model, spec, rows, pad_id=pad_id, stop=stop, max_new_tokens=max_new_tokens, device=dev, call=call
        )

    return _map_micro_batches(model, prompts, batch_size, decode_rows, progress)


def hf_generate_reference(
    model: nn.Module,
    prompts: list[list[int]],
    *,
    pad_id: int,
    stop_ids: list[int] | set[int],
    max_new_tokens: int,
    batch_size: int,
) -> list[list[int]]:
    """Same contract as :func:`greedy_decode`, via ``model.generate(do_sample=False)``.

    Uses the same length-sorted micro-batches and left padding, then cuts each row at its first stop id
    (``generate`` fills rows that stopped early with ``pad_id``; those are dropped by the cut).
    """
    trivial = _trivial_result(prompts, batch_size, max_new_tokens)
    if trivial is not None:
        return trivial
    dev = _model_device(model)
    stops = sorted(set(stop_ids))
    # Every setting that could steer the greedy path is passed explicitly: generate() fills unset (None)
    # options from the checkpoint's generation_config, which may carry its own eos ids, repetition penalty,
    # suppressed tokens, ...  Keyword arguments win over it (eos_token_id=None really means "no eos").
    gen_kwargs: dict[str, Any] = {
        "do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens, "min_new_tokens": 0,
        "eos_token_id": stops or None, "pad_token_id": pad_id, "use_cache": True,
        "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
        "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
        "sequence_bias": None,
    }
    stop_set = set(stops)

    def generate_rows(rows: list[list[int]]) -> list[list[int]]:
        ids, mask = _left_pad(rows, pad_id, dev)
        seqs = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
        return _cut_at_stop(seqs[:, ids.shape[1] :].tolist(), stop_set)

    return _map_micro_batches(model, prompts, batch_size, generate_rows)


def _n_generated(outputs: Sequence[Sequence[int]], max_new_tokens: int) -> int:
    """Tokens the model actually produced, including each row's stop id (a row shorter than the cap stopped)."""
    return sum(len(o) + (len(o) < max_new_tokens) for o in outputs)


def decode_benchmark(
    model: nn.Module,
    prompts: list[list[int]],
    *,
    pad_id: int,
    stop_ids: list[int] | set[int],
    max_new_tokens: int,
    batch_size: int,
    repeats: int = 3,
) -> dict[str, Any]:
    """Throughput of :func:`greedy_decode` vs :func:`hf_generate_reference` at equal batch size.

    Runs are interleaved (ours, hf, ours, hf, …) so drift (thermal, other load) hits both alike, after one
    untimed warm-up of each on the first micro-batch.  Tokens/s counts generated tokens including stop ids;
    each figure is the median over ``repeats``.

    Returns:
        {"decode_tokens_per_s", "hf_tokens_per_s", "decode_speedup_vs_hf_generate", "identical"}.
    """
    kw = {"pad_id": pad_id, "stop_ids": stop_ids, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    warm = prompts[:batch_size]
    greedy_decode(model, warm, **kw)
    hf_generate_reference(model, warm, **kw)

    ours_tps: list[float] = []
    hf_tps: list[float] = []
    identical = True
    dev = _model_device(model)
    for _ in range(max(1, repeats)):
        for fn, sink in ((greedy_decode, ours_tps), (hf_generate_reference, hf_tps)):
            _sync(dev)
            t0 = time.perf_counter()
            outs = fn(model, prompts, **kw)
            _sync(dev)
            sink.append(_n_generated(outs, max_new_tokens) / (time.perf_counter() - t0))
            if fn is greedy_decode:
                ours = outs
            else:
                identical = identical and outs == ours
    ours_med, hf_med = statistics.median(ours_tps), statistics.median(hf_tps)
    return {
        "decode_tokens_per_s": ours_med,
        "hf_tokens_per_s": hf_med,
        "decode_speedup_vs_hf_generate": ours_med / hf_med,
        "identical": identical,
    }


def _sync(device: torch.device) -> None:
    """Wait for queued device work so wall-clock timings are honest on asynchronous backends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover
        torch.mps.synchronize()
