"""Loading a causal LM from a local directory (HF format, safetensors) and wrapping it for fine-tuning.

The tiny base is saved in exactly the format of a real Hugging Face checkpoint (config.json,
model.safetensors, tokenizer.json, chat template), so one function loads both.  Nothing is downloaded:
``local_files_only=True`` always.  LoRA vs full fine-tuning is decided here, once; the training loop is
the same for both.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from jepa_audit.config import AdapterCfg, ModelCfg
from jepa_audit.data.tokenizer import ensure_pad

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(ValueError):
    """A model directory or checkpoint that cannot be used, with what was expected."""


@contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Silence transformers' own tqdm bars ("Loading weights", "Writing model shards") inside the block.

    Always, not only off a TTY: every cell loads (and ``train`` saves) a model, so the bars repeat once per
    cell, interleave with our rich display on a terminal and fill pool/Ray logs with carriage-return lines
    off one; jepa-audit reports its own progress. Uses transformers' public switch and restores its previous
    state afterwards, so a notebook that imports jepa-audit keeps its bars elsewhere (the
    ``HF_HUB_DISABLE_PROGRESS_BARS`` variable is read once at import and would be global)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def last_logits_only() -> torch.Tensor:
    """``logits_to_keep`` meaning "the last position only", as an index tensor rather than the int 1.

    For an int, transformers (and :func:`jepa_audit.models.lean.lean_forward`) project ``hidden[:, -1:, :]``, a
    strided view; on the CPU a bf16 ``F.linear`` on a strided 3-D input takes a slow path (torch 2.13, measured:
    7.6 s for a (16, 1, 2,048) input against a 4,096 × 2,048 weight, minutes against Llama-3.2's 128,256-row LM
    head, where a contiguous input takes 0.6 s). An index tensor makes transformers gather a contiguous copy
    (its documented 1-D ``logits_to_keep``). Same logits either way."""
    return torch.tensor([-1])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"model.device={name!r} but no CUDA device is available; use model.device=cpu")
    return torch.device(name)


def check_model_dir(path: Path) -> None:
    """One clear error for the usual ways a local model directory is wrong."""
    if not path.is_dir():
        raise ModelError(
            f"model directory {path} does not exist: model.path must be a local Hugging Face directory "
            "(config.json, *.safetensors, tokenizer files); nothing is downloaded"
        )
    if not (path / "config.json").is_file():
        raise ModelError(f"model directory {path} has no config.json (expected a Hugging Face model directory)")
    if not list(path.glob("*.safetensors")):
        raise ModelError(f"model directory {path} has no *.safetensors weights (only safetensors are loaded)")
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()):
        raise ModelError(f"model directory {path} has no tokenizer.json or tokenizer.model")


def load_pretrained(path: str | Path, cfg: ModelCfg) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load model and tokenizer from a local directory; raise ModelError naming the path on failure."""
    path = Path(path)
    check_model_dir(path)
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; we name the input instead
        raise ModelError(f"cannot load the tokenizer in {path}: {type(e).__name__}: {e}") from None
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"tokenizer in {path} has no chat template (expected an instruct model's template)")
    ensure_pad(tok)
    device = resolve_device(cfg.device)
    try:
        with quiet_hf_progress():
            model = AutoModelForCausalLM.from_pretrained(
                path,
                local_files_only=True,
                dtype=DTYPES[cfg.dtype],
                attn_implementation=cfg.attn_implementation,
                use_safetensors=True,
            )
    except Exception as e:  # noqa: BLE001
        raise ModelError(
            f"cannot load the weights in {path}: {type(e).__name__}: {str(e)[:300]} "
            "(a truncated or corrupt safetensors file? delete it and rebuild/re-copy it)"
        ) from None
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.to(device), tok


def build_model(model: nn.Module, adapter: AdapterCfg, seed: int) -> nn.Module:
    """Wrap ``model`` for fine-tuning: LoRA adapters (PEFT) or every weight trainable.

    The adapter init is seeded by the cell seed, so each seed has its own init and the same one for every
    method.
    """
    torch.manual_seed(seed)
    if adapter.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in adapter.targets if t in names]
    if not targets:
        raise ModelError(f"adapter.targets {adapter.targets} match no module of the model")
    lcfg = LoraConfig(
        r=adapter.rank,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=targets,
        modules_to_save=["embed_tokens", "lm_head"] if adapter.train_embeddings else None,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # PEFT reads transformers' deprecated `is_gradient_checkpointing` alias: a version-skew FutureWarning
        # printed once per worker into every audit log, about code that is not ours
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lcfg)


def trainable_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def lm_head_weight(model: nn.Module) -> torch.Tensor:
    """(V, d) unembedding (LM head weight) of a plain or PEFT-wrapped model (PEFT forwards the call);
    ModelError when the model has none."""
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ModelError(f"{type(model).__name__} has no output embeddings (LM head) to read its weight W from")
    return head.weight


@torch.no_grad()
def init_embedding_rows(objective: nn.Module, model: nn.Module, generator: torch.Generator) -> None:
    """Treat an objective's new token rows (``objective.embedding_rows``: LLM-JEPA's predictor tokens) as
    finetune.py does: new rows of the input embedding matrix.

    Init as ``resize_token_embeddings`` (``mean_resizing``): each row ~ N(μ, 10⁻⁹·Σ), μ and Σ the mean and
    covariance of the existing rows, i.e. the mean row up to noise of ~3e-5 of its spread (drawn from
    ``generator``, CPU).  Trainable only when the embedding matrix trains: frozen under LoRA (the original's
    ``--lora`` keeps the whole matrix, new rows included, frozen), trained under full fine-tuning or LoRA
    with ``adapter.train_embeddings``.
    """
    names = getattr(objective, "embedding_rows", ())
    emb = model.get_input_embeddings()
    trains = any(p.requires_grad for p in emb.parameters())
    W = emb.weight.detach().float()  # (V, d), on the model's device
    mu = W.mean(0)
    centred = W - mu
    for name in names:
        p = getattr(objective, name, None)
        if p is None:
            continue
        k = p.shape[0]
        z = torch.randn(k, W.shape[0], generator=generator).to(W.device)  # (z·Xc)/√V has covariance Σ
        noise = (z @ centred) * (1e-9 / W.shape[0]) ** 0.5
        p.copy_((mu + noise).to(device=p.device, dtype=p.dtype))
        p.requires_grad_(trains)
