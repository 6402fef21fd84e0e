"""Fidelity to the published code (issue #13): STP's tube path, LLM-JEPA's own views and CE labels, its
predictor rows, and the replicate-llm-jepa preset.

The references here are written from the published code's description (galilai-group/llm-jepa @ 6d7d0d1:
``stp.py``'s ``find_start_end`` / ``get_embeddings``, ``finetune.py``'s view building, ``_last_token_index``
and its collator), not imported from the package under test.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from tokenizers import processors

from conftest import LLAMA32_TEMPLATE, NLRX_PAIRS, SYSTEM_PROMPT, make_hf_llama_dir, make_tiny_llama
from jepa_audit.data.batch import Batch
from jepa_audit.data.examples import Example
from jepa_audit.data.tokenizer import ensure_pad, train_tiny_tokenizer
from jepa_audit.data.views import TEMPLATE_KWARGS, collate, encode_all
from jepa_audit.objectives import AuxContext, build_objective
from jepa_audit.objectives.curves import draw_spans

SYSTEM, PAIRS = SYSTEM_PROMPT, NLRX_PAIRS[:4]
EXAMPLES = [Example(n, r, i) for i, (n, r) in enumerate(PAIRS)]
DATE = TEMPLATE_KWARGS["date_string"]


def _tiny_tok():
    return train_tiny_tokenizer([SYSTEM] * 5 + [t for p in PAIRS for t in p] * 20, 300)


def _llama_dir(tmp_path):
    """An HF Llama directory with the real Llama-3.2 template whose tokenizer, like the real Llama-3 one, adds
    <|begin_of_text|> itself (so finetune.py's render-then-tokenise route gives two)."""
    from transformers import AutoTokenizer

    d = make_hf_llama_dir(tmp_path / "llama32", [t for p in PAIRS for t in p] * 10, template=LLAMA32_TEMPLATE)
    tok = AutoTokenizer.from_pretrained(d)
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )  # fmt: skip
    tok.save_pretrained(d)
    return d


# ---------------------------------------------------------------------------------------------------------
# 1. STP's path: each turn from the token before its content to its last content token
# ---------------------------------------------------------------------------------------------------------


def _stp_reference_loss(h, user_se, asst_se, s, e):
    """stp.py ``get_embeddings`` for one row: (user_start−1, user_last) and (assistant_start−1,
    assistant_last) from ``find_start_end``, patch offsets [s, e) over the concatenated content steps."""
    user_start, user_end = user_se[0] + 1, user_se[1] + 1
    asst_start, asst_end = asst_se[0] + 1, asst_se[1] + 1
    patch_start = user_start + s if s + user_start < user_end else asst_start + s - (user_end - user_start)
    patch_end = user_start + e if e + user_start < user_end else asst_start + e - (user_end - user_start)
    us, ue, as_, ae = h[user_start - 1], h[user_end - 1], h[asst_start - 1], h[asst_end - 1]
    ps, pe = h[patch_start - 1], h[patch_end - 1]
    if patch_start >= asst_start:
        before, patch, after = ue - us + ps - as_, pe - ps, ae - pe
    elif patch_end <= user_end:
        before, patch, after = ps - us, pe - ps, ue - pe + ae - as_
    else:
        before, patch, after = ps - us, ue - ps + pe - as_, ae - pe
    return 1.0 - F.cosine_similarity(before + after, patch, dim=0)


def _hand_batch():
    """Three hand-written rows: [bos][sys…][eot][user hdr][NL…][eot][asst hdr][regex…][eot][pad…].
    Returns the Batch and, per row, STP's (user_start_end, assistant_start_end)."""
    layouts = [(2, 3, 3), (1, 5, 2), (3, 2, 6)]  # (system, NL, regex) content lengths
    T = max(1 + s + 1 + 1 + n + 1 + 1 + r + 1 for s, n, r in layouts) + 2
    B = len(layouts)
    ids = torch.full((B, T), 0)
    att = torch.zeros((B, T), dtype=torch.long)
    pmask = torch.zeros((B, T), dtype=torch.bool)
    amask = torch.zeros((B, T), dtype=torch.bool)
    nl_last, a0, spans = [], [], []
    for b, (s, n, r) in enumerate(layouts):
        length = 1 + s + 1 + 1 + n + 1 + 1 + r + 1
        ids[b, :length] = torch.arange(1, length + 1)
        att[b, :length] = 1
        nl0 = 1 + s + 1 + 1
        pmask[b, nl0 : nl0 + n] = True
        ans0 = nl0 + n + 1 + 1
        amask[b, ans0 : ans0 + r + 1] = True  # regex and its end-of-turn
        nl_last.append(nl0 + n - 1)
        a0.append(ans0)
        spans.append(((nl0 - 1, nl0 + n - 1), (ans0 - 1, ans0 + r - 1)))  # find_start_end: (start−1, last)
    batch = Batch(
        input_ids=ids, attention_mask=att, labels=torch.where(amask, ids, -100), answer_mask=amask,
        prompt_mask=pmask, nl_last=torch.tensor(nl_last), answer_start=torch.tensor(a0),
        target_ids=ids[:, :4].clone(), target_mask=torch.ones((B, 4), dtype=torch.long),
        target_last=torch.full((B,), 2), item_ids=torch.arange(B),
    )  # fmt: skip
    return batch, spans


@pytest.mark.parametrize(("name", "max_span"), [("T3-Global", -1), ("T3-Local", 2)])
def test_tube_path_and_loss_equal_stps(name, max_span):
    batch, spans = _hand_batch()
    B, T = batch.input_ids.shape
    d, seed = 16, 82
    h = torch.randn(B, T, d, generator=torch.Generator().manual_seed(3))
    # positions: the answer segment ends at the last content token, never at the end-of-turn
    content = batch.answer_content_mask()
    for b, (_, (a_start, a_last)) in enumerate(spans):
        assert content[b].nonzero().flatten().tolist() == list(range(a_start + 1, a_last + 1))
    n = torch.tensor([(u[1] - u[0]) + (a[1] - a[0]) for u, a in spans])  # STP's full_length per row
    obj = build_objective(name, {}, d_model=d, n_layers=1, seed=seed)
    ctx = AuxContext(batch=batch, hidden=(h, h), logits=torch.zeros(B, T, 5), model=None, lm_head_weight=None)
    ours = obj(ctx).loss
    # the same spans, drawn from a generator in the objective's initial state
    s, e = draw_spans(n, max_span, 1, torch.Generator().manual_seed(10_007 * seed + 17))
    ref = torch.stack([
        _stp_reference_loss(h[b], u, a, int(s[b, 0]), int(e[b, 0])) for b, (u, a) in enumerate(spans)
    ]).mean()  # fmt: skip
    assert torch.allclose(ours, ref, atol=1e-6), (float(ours), float(ref))
    # and the old path (one step into the end-of-turn) draws over n + 1 steps: not STP's
    assert (batch.answer_mask.sum(1) - content.sum(1)).tolist() == [1] * B


# ---------------------------------------------------------------------------------------------------------
# 2. LLM-JEPA's own views, token for token
# ---------------------------------------------------------------------------------------------------------


def _finetune_py_views(tok, system, ex, k, max_length=128):
    """finetune.py's route, written from its description: add the special tokens, pad = eos when none,
    user-only view messages[1:2] + predictors, assistant-only view messages[2:3], each rendered as text and
    tokenised with tokenizer(text) padded to max_length; last_token = len(unpadded) − 2."""
    t = copy.deepcopy(tok)
    special = [f"<|predictor_{i}|>" for i in range(1, 11)] + [
        "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|perception|>"
    ]  # fmt: skip
    new = [s for s in special if s not in t.get_vocab()]
    if new:
        t.add_special_tokens({"additional_special_tokens": new})
    if t.pad_token is None:
        t.pad_token = t.eos_token
    messages = [{"role": "system", "content": system}, {"role": "user", "content": ex.prompt},
                {"role": "assistant", "content": ex.target}]  # fmt: skip
    user = copy.deepcopy(messages)[1:2]
    to_add = k
    while to_add > 0:
        user[0]["content"] += f"<|predictor_{to_add}|>"
        to_add -= 1
    out = []
    for msgs in (user, messages[2:3]):
        text = t.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False, date_string=DATE)
        enc = t(text, truncation=True, max_length=max_length, padding="max_length")
        n = sum(enc["attention_mask"])  # right padding: the unpadded length
        out.append((enc["input_ids"][:n], n - 2))
    pred_ids = {t.convert_tokens_to_ids(f"<|predictor_{i}|>") for i in range(1, 11)}
    return out, pred_ids


def _check_published(tok, k):
    rows = encode_all(tok, SYSTEM, EXAMPLES, views="published", n_pred=k)
    for ex, r in zip(EXAMPLES, rows, strict=True):
        ((u_ids, u_last), (a_ids, a_last)), pred_ids = _finetune_py_views(tok, SYSTEM, ex, k)
        want_u = [tok.pad_token_id if i in pred_ids else i for i in u_ids]  # our slots hold the pad id
        assert r.nl_view == want_u and r.nl_view_last == u_last
        assert r.target_view == a_ids and r.target_last == a_last
        assert sum(i in pred_ids for i in u_ids) == k == r.n_pred
        assert tok.decode(r.target_view[: r.target_last + 1]).endswith(ex.target)
        if k == 0:
            assert tok.decode(r.nl_view[: r.nl_view_last + 1]).endswith(ex.prompt)
        assert SYSTEM not in tok.decode(r.nl_view)  # the system turn is dropped
    return rows


@pytest.mark.parametrize("k", [0, 1, 2])
def test_published_views_equal_finetune_py_with_the_tiny_tokenizer(k):
    rows = _check_published(_tiny_tok(), k)
    assert rows[0].nl_view.count(1) == 1  # one begin-of-text (the tiny tokenizer adds none itself)


@pytest.mark.parametrize("k", [0, 1])
def test_published_views_equal_finetune_py_with_a_llama32_directory(tmp_path, k):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_llama_dir(tmp_path))
    ensure_pad(tok)  # what load_pretrained does: our pad, not eos
    rows = _check_published(tok, k)
    bos = tok.bos_token_id
    for r in rows:
        assert r.nl_view[:2] == [bos, bos] and r.target_view[:2] == [bos, bos]  # tokenizer(text) adds a second
        assert "Today Date: 26 Jul 2024" in tok.decode(r.target_view)  # the template's default system block
        assert r.full.count(bos) == 1  # the CE row keeps one


def test_published_packed_views_equal_separate_rows_with_predictors():
    """One packed forward of both views (predictor embeddings in the slots) = each view's own forward, and
    the llm-jepa loss on it = 1 − mean cos of finetune.py's two embeddings."""
    torch.manual_seed(0)
    tok = _tiny_tok()
    k = 2
    rows = encode_all(tok, SYSTEM, EXAMPLES, views="published", n_pred=k)
    batch = collate(rows, tok.pad_token_id)
    model = make_tiny_llama(vocab=len(tok), d=32, layers=2).eval()
    obj = build_objective("llm-jepa", {"k": k}, d_model=32, n_layers=2, seed=5)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    ctx = AuxContext(batch=batch, hidden=tuple(out.hidden_states), logits=out.logits, model=model,
                     lm_head_weight=model.get_output_embeddings().weight)  # fmt: skip
    loss = obj(ctx).loss
    emb = model.get_input_embeddings()
    e_u, e_t = [], []
    for r in rows:
        x = emb(torch.tensor([r.nl_view]))
        x[0, r.nl_view_last - k + 1 : r.nl_view_last + 1] = obj.pred
        e_u.append(model(inputs_embeds=x, output_hidden_states=True).hidden_states[-1][0, r.nl_view_last])
        hr = model(input_ids=torch.tensor([r.target_view]), output_hidden_states=True).hidden_states[-1]
        e_t.append(hr[0, r.target_last])
    e_u, e_t = torch.stack(e_u), torch.stack(e_t)
    assert torch.allclose(ctx.e_u(-1), e_u, atol=1e-5) and torch.allclose(ctx.e_t(-1), e_t, atol=1e-5)
    ref = 1.0 - F.cosine_similarity(e_u, e_t, dim=-1).mean()
    assert torch.allclose(loss, ref, atol=1e-6)
    loss.backward()
    assert obj.pred.grad is not None and obj.pred.grad.abs().sum() > 0
    # both views in one packed forward: fewer packed rows than 2B padded ones
    assert batch.views_packed_ids.shape[0] < 2 * len(rows)


def test_two_view_objectives_read_the_published_views():
    """P1 (and every e_u reader) takes e_u from the NL-view row, not the CE row, under views.nl=published."""
    tok = _tiny_tok()
    model = make_tiny_llama(vocab=len(tok), d=32, layers=2).eval()
    for views in ("prefix", "published"):
        batch = collate(encode_all(tok, SYSTEM, EXAMPLES, views=views), tok.pad_token_id)
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        ctx = AuxContext(batch=batch, hidden=tuple(out.hidden_states), logits=out.logits, model=model,
                         lm_head_weight=model.get_output_embeddings().weight)  # fmt: skip
        for m in ("P1", "P7", "D4", "F4", "V1"):
            loss = build_objective(m, {}, d_model=32, n_layers=2, seed=1)(ctx).loss
            assert torch.isfinite(loss), (m, views)
        if views == "published":
            row = batch.nl_ids[0, : int(batch.nl_mask[0].sum())]
            h = model(input_ids=row[None], output_hidden_states=True).hidden_states[-1][0, batch.nl_view_last[0]]
            assert torch.allclose(ctx.e_u(-1)[0], h, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# 3. LLM-JEPA's CE labels: DataCollatorForLanguageModeling(mlm=False)
# ---------------------------------------------------------------------------------------------------------


def _collator_labels(tok_for_collator, rows):
    from transformers import DataCollatorForLanguageModeling

    coll = DataCollatorForLanguageModeling(tokenizer=tok_for_collator, mlm=False)
    return coll([{"input_ids": r.full} for r in rows])["labels"]


def test_llm_jepa_labels_equal_the_collators_with_a_llama32_directory(tmp_path):
    from transformers import AutoTokenizer

    d = _llama_dir(tmp_path)
    tok = AutoTokenizer.from_pretrained(d)
    ensure_pad(tok)
    rows = encode_all(tok, SYSTEM, EXAMPLES)
    ours = collate(rows, tok.pad_token_id, labels="llm-jepa")
    ref_tok = AutoTokenizer.from_pretrained(d)
    ref_tok.pad_token = ref_tok.eos_token  # finetune.py: pad = eos when the tokenizer has none
    assert torch.equal(ours.labels, _collator_labels(ref_tok, rows))
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert not (ours.labels == eot).any()  # no end-of-turn is trained
    assert (ours.labels[:, 1 : int(ours.answer_start.min())] != -100).any()  # the prompt is
    assert torch.equal(ours.answer_mask, collate(rows, tok.pad_token_id).answer_mask)  # objectives unmoved


def test_llm_jepa_labels_equal_the_collators_with_the_tiny_tokenizer():
    tok = _tiny_tok()  # has its own pad token: the collator masks only that, so the end-of-turn is trained
    rows = encode_all(tok, SYSTEM, EXAMPLES)
    ours = collate(rows, tok.pad_token_id, labels="llm-jepa")
    assert torch.equal(ours.labels, _collator_labels(tok, rows))


# ---------------------------------------------------------------------------------------------------------
# 4. predictor rows: new rows of the embedding matrix (frozen under LoRA)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_predictor_rows_train_only_when_the_embeddings_do(mode):
    from jepa_audit.config import AdapterCfg
    from jepa_audit.models.load import build_model, init_embedding_rows

    model = build_model(make_tiny_llama(vocab=97, d=32, layers=2), AdapterCfg(mode=mode, targets=["q_proj"]), 0)
    obj = build_objective("llm-jepa", {"k": 2}, d_model=32, n_layers=2, seed=0)
    init_embedding_rows(obj, model, obj.generator)
    assert obj.pred.requires_grad == (mode == "full")
    mean_row = model.get_input_embeddings().weight.detach().mean(0)
    spread = model.get_input_embeddings().weight.detach().std(0).mean()
    assert (obj.pred.detach() - mean_row).abs().max() < 1e-3 * spread  # resize_token_embeddings' mean row


def test_predictor_rows_stay_put_under_lora_training():
    from jepa_audit.config import AdapterCfg, TrainCfg
    from jepa_audit.models.load import build_model, init_embedding_rows
    from jepa_audit.train import train

    tok = _tiny_tok()
    rows = encode_all(tok, SYSTEM, EXAMPLES, views="published", n_pred=1)
    model = build_model(make_tiny_llama(vocab=len(tok), d=32, layers=2), AdapterCfg(mode="lora"), 0)
    obj = build_objective("llm-jepa", {"k": 1}, d_model=32, n_layers=2, seed=0)
    init_embedding_rows(obj, model, obj.generator)
    before = obj.pred.detach().clone()
    train(model, rows, pad_id=tok.pad_token_id, cfg=TrainCfg(steps=2, batch_size=4, warmup_steps=0), seed=0,
          objective=obj, weight=1.0)  # fmt: skip
    assert torch.equal(obj.pred.detach(), before)


# ---------------------------------------------------------------------------------------------------------
# 5. config and the replication preset
# ---------------------------------------------------------------------------------------------------------


def test_view_and_label_keys_leave_default_hashes_alone():
    from jepa_audit.config import load_config

    base = load_config("quick")
    assert base.views.nl == "prefix" and base.train.labels == "answer"
    d = base.model_dump(
        mode="json",
        exclude={"audit", "calibration", "cache_dir", "preset", "tracking", "stats", "plugins", "plugins_loaded"},
    )
    for key in ("views",):
        d.pop(key)
    d["train"].pop("labels")
    d["train"].pop("pack")  # train.pack at its default (none)
    d["model"].pop("forward")  # model.forward at its default (auto)
    for key in ("per_method", "dose", "calibrated_dose"):
        d["aux"].pop(key)
    d["data"].pop("task")  # the task selector, at its default (nlrx)
    for key in ("name", "train_file", "test_file", "validation_file", "prompt_field", "target_field", "match"):
        d["data"].pop(key)  # the jsonl task's keys, at their defaults
    d["data"]["system_prompt"] = "Convert natural language to regular expression."  # None resolves to nlrx's
    from jepa_audit.config import stable_hash

    assert base.cell_hash() == stable_hash(d)  # as before these keys existed
    assert load_config("quick", None, ["views.nl=published"]).cell_hash() != base.cell_hash()
    assert load_config("paper").views.nl == "published" and load_config("paper-full-ft").views.nl == "published"


def test_replication_preset_says_what_it_replicates():
    from jepa_audit.config import load_config

    c = load_config("replicate-llm-jepa")
    assert c.adapter.mode == "full" and c.train.lr == 2e-5 and c.views.nl == "published"
    assert c.train.labels == "llm-jepa" and c.audit.seeds == [82, 23, 37, 84, 4]
    assert c.audit.methods == ["ce", "llm-jepa"] and c.audit.modes == ["full"]
    assert c.train.batch_size * c.train.grad_accum == 128
    llm = c.cell("synth", "llm-jepa", 82, "full").aux.resolved(0.5)
    assert llm == (1.0, {"k": 1})
    assert c.cell("synth", "ce", 82, "full").aux.resolved(0.0) == (0.0, {})


@pytest.mark.slow
def test_replication_preset_runs_end_to_end_at_smoke_scale(tmp_path):
    """The replicate-llm-jepa preset on a tiny Llama-3.2-templated directory, shrunk with --set overrides."""
    from jepa_audit.cell import run_cell
    from jepa_audit.config import load_config

    d = _llama_dir(tmp_path)
    small = [f"model.path={d}", "model.device=cpu", "model.autocast=none", "data.source=embedded",
             "data.n_train=120", "data.n_test=12", "data.val_size=16", "train.steps=3", "train.batch_size=4",
             "train.grad_accum=2", "geometry.n_sequences=8", "eval.max_new_tokens=24", "probe.every=2"]
    cfg = load_config("replicate-llm-jepa", None, small)
    for method in ("ce", "llm-jepa"):
        row = run_cell(cfg.cell("synth", method, 82, "full"), tmp_path / "cells" / method)
        assert row["status"] == "done" and row["views"] == "published" and row["labels"] == "llm-jepa"
        assert row["weight"] == (1.0 if method == "llm-jepa" else 0.0)
        assert row["metrics"]["n_test"] == 12 and json.dumps(row)
        assert row["geometry"]["jepa_cos"] is not None
