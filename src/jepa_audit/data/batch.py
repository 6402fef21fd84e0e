"""The tensors one training step sees: the full chat rows plus the indices every objective reads.

Shapes: B sequences, T tokens in the full (right-padded) chat row, Tr tokens in the target-only view row.
The NL view of LLM-JEPA is, under causal attention, a prefix of the full row (its states are identical),
so it costs nothing: ``nl_last`` points at its last content token inside the full row.  Only the target
view needs its own (short) row: ``target_ids``; the model reads those rows packed (``target_packed_*``, see
data/packing.py), R ≤ B rows of at most T tokens, so the extra forward skips the views' padding.

Under ``views.nl=published`` (data/views.py) the NL view is LLM-JEPA's own user-only row (``nl_ids``,
Tn tokens) and ``target_ids`` holds its assistant-only row; both views are then packed together
(``views_packed_*``: the B target views first, then the B NL views), so the two extra rows cost one forward.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_audit.data.packing import pack_rows


@dataclass
class Batch:
    input_ids: Tensor  # (B, T) long, right-padded full chat rows: system, user (NL), assistant (target) + eot
    attention_mask: Tensor  # (B, T) long, 1 on real tokens
    labels: Tensor  # (B, T) long, CE targets, -100 elsewhere (train.labels: answer + end-of-turn, or llm-jepa's)
    answer_mask: Tensor  # (B, T) bool, the answer tokens 𝒜, end-of-turn included (whatever the labels)
    prompt_mask: Tensor  # (B, T) bool, True on the NL description's content tokens 𝒫
    nl_last: Tensor  # (B,) long, index of the last NL content token in the full row (NL-view embedding e_u)
    answer_start: Tensor  # (B,) long, index a0 of the first answer token; h[a0-1] predicts it
    target_ids: Tensor  # (B, Tr) long, right-padded target-only view rows (assistant turn alone)
    target_mask: Tensor  # (B, Tr) long, 1 on real tokens
    target_last: Tensor  # (B,) long, index of the last target content token in the view row (e_t)
    item_ids: Tensor  # (B,) long, row indices in the source split
    # views.nl=published only (None otherwise): LLM-JEPA's user-only view rows
    nl_ids: Tensor | None = None  # (B, Tn) long, right-padded; predictor slots hold the pad id
    nl_mask: Tensor | None = None  # (B, Tn) long, 1 on real tokens
    nl_view_last: Tensor | None = None  # (B,) long, last_token = −2 of each view (e_u)
    nl_pred: Tensor | None = None  # (B,) long, predictor slots ending at nl_view_last (same for every row)
    # the target views packed first-fit into R ≤ B rows of ≤ max(T, Tr) tokens (filled in from target_ids/mask)
    target_packed_ids: Tensor | None = None  # (R, C) long
    target_packed_pos: Tensor | None = None  # (R, C) long, position ids restarting at 0 at each view
    target_unpack: Tensor | None = None  # (B, Tr) long, index into the flattened (R·C) packed positions
    # published views only: target views (rows 0..B−1) and NL views (rows B..2B−1) packed into R′ ≤ 2B rows
    views_packed_ids: Tensor | None = None  # (R′, C′) long
    views_packed_pos: Tensor | None = None  # (R′, C′) long
    views_unpack: Tensor | None = None  # (2B, max(Tr, Tn)) long, index into the flattened (R′·C′) positions

    def __post_init__(self) -> None:
        dev = self.target_ids.device
        if self.target_packed_ids is None:
            cap = max(self.input_ids.shape[1], self.target_ids.shape[1])
            p = pack_rows(self.target_ids.cpu(), self.target_mask.cpu(), cap)
            self.target_packed_ids, self.target_packed_pos, self.target_unpack = (
                p.ids.to(dev), p.pos.to(dev), p.unpack.to(dev)
            )
        if self.nl_ids is not None and self.views_packed_ids is None:
            if self.nl_mask is None or self.nl_view_last is None or self.nl_pred is None:
                raise ValueError("Batch: nl_ids needs nl_mask, nl_view_last and nl_pred")
            Tv = max(self.target_ids.shape[1], self.nl_ids.shape[1])
            ids = torch.cat([F.pad(self.target_ids, (0, Tv - self.target_ids.shape[1])),
                             F.pad(self.nl_ids, (0, Tv - self.nl_ids.shape[1]))]).cpu()
            mask = torch.cat([F.pad(self.target_mask, (0, Tv - self.target_mask.shape[1])),
                              F.pad(self.nl_mask, (0, Tv - self.nl_mask.shape[1]))]).cpu()
            p = pack_rows(ids, mask, max(self.input_ids.shape[1], Tv), decreasing=True)
            self.views_packed_ids, self.views_packed_pos, self.views_unpack = (
                p.ids.to(dev), p.pos.to(dev), p.unpack.to(dev)
            )

    @property
    def published(self) -> bool:
        """True when the batch carries LLM-JEPA's own NL-view rows (views.nl=published)."""
        return self.nl_ids is not None

    def answer_content_mask(self) -> Tensor:
        """(B, T) bool: the answer's content tokens, 𝒜 without its end-of-turn (the last answer position of
        each row): the assistant span of STP's ``find_start_end``."""
        pos = torch.arange(self.answer_mask.shape[1], device=self.answer_mask.device)
        last = torch.where(self.answer_mask, pos, -1).max(1).values
        return self.answer_mask & (pos[None, :] != last[:, None])

    def select(self, rows: Tensor) -> Batch:
        """The sub-batch of ``rows`` (B′,) long; its views are packed afresh."""
        packed = {"target_packed_ids", "target_packed_pos", "target_unpack", "views_packed_ids", "views_packed_pos",
                  "views_unpack"}
        return Batch(**{f.name: _take(getattr(self, f.name), rows) for f in fields(self) if f.name not in packed})

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor; to a GPU through pinned memory, without blocking the host."""
        device = torch.device(device)
        if device.type != "cuda":
            return Batch(**{f.name: _move(getattr(self, f.name), device, False) for f in fields(self)})
        return Batch(**{f.name: _move(getattr(self, f.name), device, True) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _take(t: Tensor | None, rows: Tensor) -> Tensor | None:
    return None if t is None else t[rows]


def _move(t: Tensor | None, device: torch.device, pin: bool) -> Tensor | None:
    if t is None:
        return None
    return t.pin_memory().to(device, non_blocking=True) if pin else t.to(device)
