"""The unit of data every other module sees: one (prompt, target) example, and the splits of a benchmark.

Nothing here reads files or generates text; each task (:mod:`jepa_audit.tasks`) produces these objects, e.g.
NL-RX through :mod:`jepa_audit.data.nlrx` (real NL-RX) and :mod:`jepa_audit.data.generator` (the embedded
corpus).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DataError", "Example", "Splits", "chat_messages"]


class DataError(ValueError):
    """A data problem. The message names the file (or setting) and says what was expected."""


@dataclass(frozen=True)
class Example:
    """One example: the two halves of its chat row.

    ``prompt`` is the user turn, the **prompt view** of the two-view objectives (NL-RX: the English
    description as written, no lowercasing, no placeholder substitution); ``target`` is the gold assistant
    turn, the **target view** (NL-RX: the gold regex in raw NL-RX form without spaces, e.g.
    ``.*(dog){2,}.*``); ``idx`` is the row index within its split (0-based), a stable id for per-item analysis.
    """

    prompt: str
    target: str
    idx: int


@dataclass
class Splits:
    """The three splits of one benchmark, plus a human description of where they came from.

    ``val`` is for tuning only (carved from train, or the policy's own validation split); ``geometry`` is
    the held-out pool the geometry batch is drawn from (never trained on, never the rows λ is chosen on);
    ``test`` is never used for any decision.
    """

    benchmark: str
    source: str
    train: list[Example] = field(default_factory=list)
    val: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    geometry: list[Example] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        """Row counts, e.g. ``{"train": 7288, "val": 200, "geometry": 512, "test": 2000}``."""
        return {"train": len(self.train), "val": len(self.val), "geometry": len(self.geometry),
                "test": len(self.test)}


def chat_messages(system: str, user: str, assistant: str | None) -> list[dict[str, str]]:
    """One example as chat: [system turn (when ``system`` is non-empty)], the user turn, [the assistant turn
    (None: left out, the generation prompt)].  The one home of the rendering: ``Task.messages`` and the
    default rendering of :mod:`jepa_audit.data.views` both go through it."""
    out = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": user})
    if assistant is not None:
        out.append({"role": "assistant", "content": assistant})
    return out
