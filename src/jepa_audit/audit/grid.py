"""The audit grid: a preset's ``audit`` section expanded into cells (benchmark × method × seed × mode).

A :class:`Cell` is frozen (HELM's ``RunSpec``): its ``key`` is the name of its folder under ``cells/``
and of its row in ``results.jsonl``; its ``hash`` is :meth:`Config.cell_hash` of the cell's resolved
config, so two runs that would compute the same thing share a hash and a changed config does not.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

from jepa_audit.config import Config, ConfigError
from jepa_audit.results_file import cell_key  # re-exported: a cell's key is its row's


@dataclass(frozen=True)
class Cell:
    """One unit of work: the same base and recipe, one (benchmark, method, seed, mode)."""

    benchmark: str
    method: str
    seed: int
    mode: str
    config: Config = field(compare=False, repr=False)
    key: str
    hash: str

    @classmethod
    def from_config(cls, cfg: Config, benchmark: str, method: str, seed: int, mode: str) -> Cell:
        c = cfg.cell(benchmark, method, seed, mode)
        return cls(benchmark, method, seed, mode, c, cell_key(benchmark, method, seed, mode), c.cell_hash())

    def ident(self) -> dict[str, object]:
        """The DESIGN.md identity fields of this cell's row."""
        return {"benchmark": self.benchmark, "method": self.method, "seed": self.seed, "mode": self.mode}


def _check_list(name: str, values: list, suggest_from: Iterable[str] | None = None) -> None:
    if not values:
        raise ConfigError(f"audit.{name} is empty: the grid needs at least one value")
    seen: set = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"audit.{name} lists {v!r} twice; each grid value must appear once")
        seen.add(v)


def expand_grid(cfg: Config, known_methods: set[str] | None = None) -> list[Cell]:
    """All cells of ``cfg.audit`` in a stable order (benchmark, method, seed, mode).

    ``known_methods``: objective ids to validate ``audit.methods`` against (from the objectives registry);
    ``None`` skips the check so the grid can be built without importing torch. An unknown id raises
    :class:`ConfigError` with the closest matches, before any compute is spent.
    """
    a = cfg.audit
    for name in ("benchmarks", "methods", "seeds", "modes"):
        _check_list(name, list(getattr(a, name)))
    if known_methods is not None:
        unknown = [m for m in a.methods if m not in known_methods]
        if unknown:
            hints = []
            for m in unknown:
                close = difflib.get_close_matches(m, sorted(known_methods), n=3)
                hints.append(f"{m!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            raise ConfigError(
                f"audit.methods: unknown objective id(s) {', '.join(hints)}; see `jepa-audit aux list`"
            )
    cells = [
        Cell.from_config(cfg, b, m, s, mode)
        for b in a.benchmarks
        for m in a.methods
        for s in a.seeds
        for mode in a.modes
    ]
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):  # two ids that slug to the same folder name
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(f"audit grid: cell keys collide after making them path-safe: {', '.join(dup)}")
    return cells
