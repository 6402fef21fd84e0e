"""A small Llama (transformers ``LlamaForCausalLM``) built from our config, for CPU-scale audits."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from jepa_audit.config import ModelCfg


def tiny_llama_config(cfg: ModelCfg, tok: PreTrainedTokenizerFast) -> LlamaConfig:
    """A Llama config of the sizes in ``cfg`` for the vocabulary of ``tok`` (tied embeddings, as Llama-3.2-1B)."""
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        attention_dropout=0.0,
        rope_theta=10000.0,
    )


def new_tiny_llama(cfg: ModelCfg, tok: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    import torch

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(cfg, tok))
