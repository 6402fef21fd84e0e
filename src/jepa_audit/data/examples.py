"""The unit of data every other module sees: one (description, regex) pair, and the splits of a benchmark.

Nothing here reads files or generates text; :mod:`jepa_audit.data.nlrx` (real NL-RX) and
:mod:`jepa_audit.data.generator` (the embedded corpus) produce these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BENCHMARKS", "DataError", "Example", "Splits"]

#: The benchmark names :func:`jepa_audit.data.load_benchmark` accepts (NL-RX-Synth and NL-RX-Turk wording).
BENCHMARKS: tuple[str, ...] = ("synth", "turk")


class DataError(ValueError):
    """A data problem. The message names the file (or setting) and says what was expected."""


@dataclass(frozen=True)
class Example:
    """One pair.

    ``nl`` is the English description as written (no lowercasing, no placeholder substitution);
    ``regex`` is the gold regex in raw NL-RX form without spaces (e.g. ``.*(dog){2,}.*``);
    ``idx`` is the row index within its split (0-based), a stable id for per-item analysis.
    """

    nl: str
    regex: str
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
