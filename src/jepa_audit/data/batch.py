"""The tensors one training step sees: the full chat rows plus the indices every objective reads.

Shapes: B sequences, T tokens in the full (right-padded) chat row, Tr tokens in the regex-only view row.
The NL view of LLM-JEPA is, under causal attention, a prefix of the full row (its states are identical),
so it costs nothing: ``nl_last`` points at its last content token inside the full row.  Only the regex
view needs its own (short) row: ``regex_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Batch:
    input_ids: Tensor  # (B, T) long, right-padded full chat rows: system, user (NL), assistant (regex) + eot
    attention_mask: Tensor  # (B, T) long, 1 on real tokens
    labels: Tensor  # (B, T) long, token id on answer positions (regex tokens + end-of-turn), -100 elsewhere
    answer_mask: Tensor  # (B, T) bool, True where labels != -100 (the answer tokens 𝒜, end-of-turn included)
    prompt_mask: Tensor  # (B, T) bool, True on the NL description's content tokens 𝒫
    nl_last: Tensor  # (B,) long, index of the last NL content token in the full row (NL-view embedding e_u)
    answer_start: Tensor  # (B,) long, index a0 of the first answer token; h[a0-1] predicts it
    regex_ids: Tensor  # (B, Tr) long, right-padded regex-only view rows (assistant turn alone)
    regex_mask: Tensor  # (B, Tr) long, 1 on real tokens
    regex_last: Tensor  # (B,) long, index of the last regex content token in the view row (e_r)
    item_ids: Tensor  # (B,) long, row indices in the source split

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor; to a GPU through pinned memory, without blocking the host."""
        device = torch.device(device)
        if device.type != "cuda":
            return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
        return Batch(**{f.name: getattr(self, f.name).pin_memory().to(device, non_blocking=True) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])
