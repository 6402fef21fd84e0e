"""transformers' own progress bars ("Loading weights", "Writing model shards") stay out of cell logs."""

from __future__ import annotations

from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from conftest import make_hf_llama_dir
from jepa_audit.cell import save_hf
from jepa_audit.config import ModelCfg
from jepa_audit.models.load import load_pretrained

BARS = ("Loading weights", "Writing model shards")


def test_loading_and_saving_a_model_print_no_transformers_progress_bar(tmp_path, capfd):
    src = make_hf_llama_dir(tmp_path / "src", ["match a line", "[a-z]+"])
    capfd.readouterr()
    AutoModelForCausalLM.from_pretrained(src, local_files_only=True)  # the control: transformers' default
    assert "Loading weights" in capfd.readouterr().err  # (the bar this test is about, off a TTY too)

    was_on = hf_logging.is_progress_bar_enabled()
    model, tok = load_pretrained(src, ModelCfg(kind="hf", path=str(src)))
    save_hf(model, tok, tmp_path / "out")
    err = capfd.readouterr().err
    assert not [b for b in BARS if b in err], err
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert hf_logging.is_progress_bar_enabled() == was_on  # the switch is scoped, not left off globally
