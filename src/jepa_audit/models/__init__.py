"""Models: the tiny Llama trained here, local Hugging Face directories, LoRA or full fine-tuning."""

from jepa_audit.models.load import ModelError, build_model, load_pretrained, resolve_device

__all__ = ["ModelError", "build_model", "load_pretrained", "resolve_device"]
