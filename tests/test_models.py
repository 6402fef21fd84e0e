"""Model loading: a local HF directory (as Llama-3.2-1B-Instruct would be), LoRA/full, clear errors."""

from __future__ import annotations

import pytest

from conftest import make_hf_llama_dir
from jepa_audit.config import ModelCfg, load_config
from jepa_audit.data.examples import Example
from jepa_audit.data.views import encode_example
from jepa_audit.models.load import ModelError, build_model, load_pretrained

TEXTS = ["lines containing the word dog", ".*dog.*", "lines with a number", ".*[0-9].*"] * 10


@pytest.fixture
def hf_dir(tmp_path):
    return make_hf_llama_dir(tmp_path / "llama", TEXTS)


def test_hf_dir_loads_with_template_and_pad(hf_dir):
    model, tok = load_pretrained(hf_dir, ModelCfg(kind="hf", path=str(hf_dir)))
    assert tok.pad_token == "<|finetune_right_pad_id|>"  # Llama-3 has no pad: a reserved token is used
    e = encode_example(tok, "Convert natural language to regular expression.", Example("lines with dog", ".*dog.*", 0))
    assert tok.convert_ids_to_tokens(e.full[-1]) == "<|eot_id|>"
    assert tok.decode(e.full[e.prompt_len : -1]) == ".*dog.*"
    assert tok.decode(e.full[e.nl_start : e.nl_last + 1]) == "lines with dog"


def test_lora_wraps_all_seven_targets_and_full_trains_everything(hf_dir):
    cfg = load_config(None, None, ["model.kind=hf", f"model.path={hf_dir}"])
    model, _ = load_pretrained(hf_dir, cfg.model)
    lora = build_model(model, cfg.adapter, seed=1)
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    for t in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(f"{t}.lora_A" in n for n in names), t
    model2, _ = load_pretrained(hf_dir, cfg.model)
    full = build_model(model2, cfg.adapter.model_copy(update={"mode": "full"}), seed=1)
    assert all(p.requires_grad for p in full.parameters())


def test_lora_init_is_seeded(hf_dir):
    cfg = load_config(None, None, ["model.kind=hf", f"model.path={hf_dir}"])
    a = build_model(load_pretrained(hf_dir, cfg.model)[0], cfg.adapter, seed=5)
    b = build_model(load_pretrained(hf_dir, cfg.model)[0], cfg.adapter, seed=5)
    c = build_model(load_pretrained(hf_dir, cfg.model)[0], cfg.adapter, seed=6)
    pa, pb, pc = ([p for n, p in m.named_parameters() if "lora_A" in n][0] for m in (a, b, c))
    assert (pa == pb).all() and not (pa == pc).all()


def test_clear_errors_for_bad_model_dirs(tmp_path, hf_dir):
    cfg = ModelCfg(kind="hf", path="x")
    with pytest.raises(ModelError, match="does not exist"):
        load_pretrained(tmp_path / "missing", cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_pretrained(empty, cfg)
    (hf_dir / "model.safetensors").write_bytes(b"\x00" * 64)  # truncated / corrupt weights
    with pytest.raises(ModelError, match="cannot load the weights"):
        load_pretrained(hf_dir, cfg)
