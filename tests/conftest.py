"""Shared fixtures: a tiny random Llama and a synthetic, well-formed Batch (no tokenizer needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from jepa_audit.data.batch import Batch

torch.set_num_threads(1)
SHARED_DATA = Path(os.environ.get("JEPA_AUDIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


# one home: the objective battery's model and batch (jepa_audit.objectives.check, `jepa-audit aux check`)
from jepa_audit.objectives.check import tiny_llama as make_tiny_llama  # noqa: E402
from jepa_audit.objectives.check import toy_batch as make_toy_batch  # noqa: E402


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture
def toy_batch():
    return make_toy_batch()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real NL-RX data not found at {SHARED_DATA} (expected ../shared/data beside the repo)")
    return SHARED_DATA


# A few NL-RX-style (description, regex) pairs and the system prompt, shared by the view, fidelity and
# Llama-3.2 tests (the first four are the views tests' fixed rows).
SYSTEM_PROMPT = "Convert natural language to regular expression."
NLRX_PAIRS = [
    ("lines containing the word dog", ".*dog.*"),
    ("lines with a vowel at least 3 times", "(([AEIOUaeiou]){3,})"),
    ("lines not having a number", "~(.*[0-9].*)"),
    ("words starting with a capital letter", "\\b([A-Z])(.*)\\b"),
    ("lines that end with truck", ".*truck"),
    ("lines with the letter a before a number", ".*a.*[0-9].*"),
]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


from jepa_audit.models.llama_dir import LLAMA32_TEMPLATE  # noqa: E402, F401 - re-exported for the tests (one home)


def make_hf_llama_dir(path: Path, texts: list[str], d: int = 32, layers: int = 2,
                      template: str = LLAMA3_TEMPLATE, generation_eos: bool = False) -> Path:
    """A small Llama in Hugging Face format, shaped like Llama-3.2-1B-Instruct's directory.

    config.json + model.safetensors + tokenizer.json/tokenizer_config.json with Llama-3 special tokens
    (``<|begin_of_text|>``, ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>``), a Llama-3
    style chat template (``template``: the simplified ``LLAMA3_TEMPLATE`` by default, ``LLAMA32_TEMPLATE`` for
    the real Llama-3.2 one), and *no pad token* (as the real one), so every loading step is exercised.
    ``generation_eos``: write Llama-3.2-Instruct's generation_config.json (sampling defaults, and three eos ids:
    ``<|end_of_text|>``, ``<|eom_id|>``, ``<|eot_id|>``, there 128001, 128008, 128009).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
               "<|finetune_right_pad_id|>", "<|eom_id|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts + ["system", "user", "assistant"] * 5, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = template
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    if generation_eos:
        import json

        eos = [tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
        (Path(path) / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": tok.bos_token_id, "eos_token_id": eos, "do_sample": True, "temperature": 0.6,
             "top_p": 0.9}))
    return path


# ----------------------------------------------------------------------------------------------------------
# float64 equality of two ways to run the same step (train.pack, model.forward): shared by their tests
# ----------------------------------------------------------------------------------------------------------


def lora64(mode: str = "lora", kv_heads: int = 4, seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    """A float64 tiny Llama in training mode, LoRA-wrapped with non-zero adapters (LoRA B starts at 0, which
    would zero A's gradient) or fully trainable (``mode="full"``); ``kv_heads`` < 4: grouped-query attention."""
    from jepa_audit.config import AdapterCfg
    from jepa_audit.models.load import build_model

    base = make_tiny_llama()
    if kv_heads != base.config.num_key_value_heads:
        from transformers import LlamaForCausalLM

        base.config.num_key_value_heads = kv_heads
        torch.manual_seed(0)
        base = LlamaForCausalLM(base.config).eval()
    model = build_model(base, AdapterCfg(mode=mode, rank=4, dropout=dropout), seed=0).double()
    g = torch.Generator().manual_seed(7 + seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    model.train()
    return model


def step_loss_and_grads(batch: Batch, method: str | None, packed=None, lean: bool = False):
    """CE + 0.5·aux of ``method`` (None: CE alone) on a fresh :func:`lora64`, with the CE rows ``packed``
    (train.pack) and/or through the lean forward (its extra rows too); returns (loss, trainable gradients)."""
    from jepa_audit.models.lean import LeanCall, read_weights
    from jepa_audit.models.load import lm_head_weight
    from jepa_audit.objectives import AuxContext, build_objective
    from jepa_audit.train import answer_ce, forward_rows

    model = lora64()
    run = LeanCall(model, read_weights(model)) if lean else model
    hidden, logits = forward_rows(run, batch, packed)
    loss = answer_ce(logits, batch.labels)
    if method is not None:
        mc = model.config
        obj = build_objective(method, {}, mc.hidden_size, mc.num_hidden_layers, seed=3)
        ctx = AuxContext(batch, hidden, logits, model, lm_head_weight(model), step=1, total_steps=4, forward=run)
        loss = loss + 0.5 * obj(ctx).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad and p.grad is not None]


def assert_same_loss_and_grads(got, want, method: str | None) -> None:
    """float64 equality of two :func:`step_loss_and_grads` results; the objectives keep their own maths in
    fp32 (they cast the states), so fp32 rounding bounds their part."""
    (l_got, g_got), (l_want, g_want) = got, want
    tol = {"atol": 1e-10, "rtol": 1e-9} if method is None else {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(l_got, l_want.to(l_got.dtype), **tol)
    assert len(g_got) == len(g_want) and any(g.abs().sum() > 0 for g in g_want)
    for a, c in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, c, **tol)


def ragged_rows(n: int = 12, seed: int = 11) -> list:
    """``n`` encoded rows of varied prompt and answer lengths (ids 3..96) for a few real training steps."""
    from jepa_audit.data.views import Encoded

    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        p, a = 6 + i % 4, 3 + (i * 7) % 5
        full = torch.randint(3, 97, (p + a,), generator=g).tolist()
        rows.append(Encoded(full=full, prompt_len=p, nl_start=2, nl_last=p - 2, target_view=[1, *full[p:]],
                            target_last=a - 1, idx=i))
    return rows


def train_four_steps(rows: list, method: str | None, **cfg_kw):
    """Four real ``train.train`` steps of a fresh :func:`lora64` (CE + 0.5·aux); ``cfg_kw``: TrainCfg fields,
    and ``forward`` for train's own argument. Returns (logged losses, weights after the steps, the result)."""
    from jepa_audit.config import TrainCfg
    from jepa_audit.objectives import build_objective
    from jepa_audit.train import train

    forward = cfg_kw.pop("forward", "auto")
    model = lora64()
    obj = None
    if method is not None:
        obj = build_objective(method, {}, model.config.hidden_size, model.config.num_hidden_layers, seed=3)
    cfg = TrainCfg(steps=4, batch_size=4, lr=1e-2, warmup_steps=0, log_every=1, **cfg_kw)
    res = train(model, rows, pad_id=0, cfg=cfg, seed=5, objective=obj, weight=0.5 if obj else 0.0, forward=forward)
    return [r["loss"] for r in res.log], [p.detach().clone() for p in model.parameters()], res


# Modules whose module-scoped fixture is expensive (an audit through the CLI, a pre-trained base, a model, a
# compiled Java helper, a generated corpus, a built summary or report): under pytest-xdist every worker that
# runs one of their tests builds the fixture again, so each of these modules runs whole on one worker
# (`--dist loadgroup`, the README's test command).
ONE_WORKER_MODULES = frozenset({
    "test_e2e_smoke", "test_train_cell", "test_report", "test_llama32", "test_data_generator", "test_regex_brics",
    "test_stats_summary", "test_stats_manipulation", "test_decode", "test_views",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.module.__name__.rpartition(".")[2] if item.module is not None else ""
        if name in ONE_WORKER_MODULES and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(name))
