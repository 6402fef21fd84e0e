"""The tensors one training step sees: the full chat rows plus the indices every objective reads.

Shapes: B sequences, T tokens in the full (right-padded) chat row, Tr tokens in the regex-only view row.
The NL view of LLM-JEPA is, under causal attention, a prefix of the full row (its states are identical),
so it costs nothing: ``nl_last`` points at its last content token inside the full row.  Only the regex
view needs its own (short) row: ``regex_ids``; the model reads those rows packed (``regex_packed_*``, see
data/packing.py), R ≤ B rows of at most T tokens, so the extra forward skips the views' padding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from jepa_audit.data.packing import pack_rows


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
    # the regex views packed first-fit into R ≤ B rows of ≤ max(T, Tr) tokens (filled in from regex_ids/mask)
    regex_packed_ids: Tensor | None = None  # (R, C) long
    regex_packed_pos: Tensor | None = None  # (R, C) long, position ids restarting at 0 at each view
    regex_unpack: Tensor | None = None  # (B, Tr) long, index into the flattened (R·C) packed positions

    def __post_init__(self) -> None:
        if self.regex_packed_ids is None:
            cap = max(self.input_ids.shape[1], self.regex_ids.shape[1])
            p = pack_rows(self.regex_ids.cpu(), self.regex_mask.cpu(), cap)
            dev = self.regex_ids.device
            self.regex_packed_ids, self.regex_packed_pos, self.regex_unpack = (
                p.ids.to(dev), p.pos.to(dev), p.unpack.to(dev)
            )

    def select(self, rows: Tensor) -> Batch:
        """The sub-batch of ``rows`` (B′,) long; its regex views are packed afresh."""
        packed = {"regex_packed_ids", "regex_packed_pos", "regex_unpack"}
        return Batch(**{f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name not in packed})

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor; to a GPU through pinned memory, without blocking the host."""
        device = torch.device(device)
        if device.type != "cuda":
            return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
        return Batch(**{f.name: getattr(self, f.name).pin_memory().to(device, non_blocking=True) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])
