"""The registry tables of docs/objectives.md, generated from the registry (one source: the specs).

``python -m jepa_audit.objectives.registry_table docs/objectives.md`` rewrites each table between its
marker (``<!-- registry table: ... -->``, ``<!-- parameter table: ... -->``) and the first line after it
that is not a table row; a test fails when the file's tables are not the generated ones.  The parameter
table lists each objective body's typed parameters once (``Params`` of objectives/params.py), with the ids
that share it and their values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jepa_audit.objectives.base import registry, spec_rows
from jepa_audit.objectives.params import describe_type

MARKER = "<!-- registry table: generated from the registry by `python -m jepa_audit.objectives.registry_table docs/objectives.md` (a test checks it) -->"
PARAM_MARKER = "<!-- parameter table: generated from the registry by `python -m jepa_audit.objectives.registry_table docs/objectives.md` (a test checks it) -->"
PARAM_HEADER = ("| parameter model | ids | parameter | type | meaning |", "|---|---|---|---|---|")
HEADER = (
    "| id | family | core | formula / description | default params | λ | source | +rows | grad mode |",
    "|---|---|---|---|---|---|---|---|---|",
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bar inside a cell would end it


def _value(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, str) else repr(v)


def _params(params: dict[str, Any]) -> str:
    """``layer="last", k=0``: strings as JSON strings, everything else as Python writes it; "—" for none."""
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items()) or "—"


def registry_table() -> list[str]:
    """The table's lines: one row per registered objective, in registry order (references first)."""
    rows = [
        f"| {r['id']} | {r['family']} | {'★' if r['core'] else ''} | {_cell(r['description'])} | "
        f"{_cell(_params(r['params']))} | {r['default_weight']:g} | {_cell(r['source'])} | {r['extra_forward']} | "
        f"{r['grad_mode']} |"
        for r in spec_rows()
    ]
    return [*HEADER, *rows]


def parameter_table() -> list[str]:
    """One row per parameter of each parameter model, models in registry order, with the ids using it."""
    users: dict[type, list[str]] = {}
    for oid, cls in registry().items():
        users.setdefault(cls.params_model(), []).append(oid)
    rows = [
        f"| {model.__name__} | {', '.join(ids)} | {name} | {_cell(describe_type(model, name))} | "
        f"{_cell(info.description or '')} |"
        for model, ids in users.items()
        for name, info in model.model_fields.items()
    ]
    return [*PARAM_HEADER, *rows]


def _replace(lines: list[str], marker: str, table: list[str]) -> list[str]:
    if marker not in lines:
        raise ValueError(f"docs/objectives.md: the line {marker!r} is missing (the table goes right after it)")
    start = lines.index(marker) + 1
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return [*lines[:start], *table, *lines[end:]]


def replace_table(text: str) -> str:
    """``text`` (docs/objectives.md) with the tables after :data:`MARKER` and :data:`PARAM_MARKER` replaced
    by :func:`registry_table` and :func:`parameter_table`; ValueError when a marker is missing."""
    lines = _replace(text.split("\n"), MARKER, registry_table())
    return "\n".join(_replace(lines, PARAM_MARKER, parameter_table()))


def main(argv: list[str]) -> None:
    for name in argv or ["docs/objectives.md"]:
        path = Path(name)
        path.write_text(replace_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote the registry table of {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
