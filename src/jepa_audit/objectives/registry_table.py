"""The registry table of docs/objectives.md, generated from the registry (one source: the specs).

``python -m jepa_audit.objectives.registry_table docs/objectives.md`` rewrites the table between the
``<!-- registry table: ... -->`` marker and the first line after it that is not a table row; a test fails
when the file's table is not the generated one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jepa_audit.objectives.base import spec_rows

MARKER = "<!-- registry table: generated from the registry by `python -m jepa_audit.objectives.registry_table docs/objectives.md` (a test checks it) -->"
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


def replace_table(text: str) -> str:
    """``text`` (docs/objectives.md) with the table after :data:`MARKER` replaced by :func:`registry_table`;
    ValueError when the marker is missing."""
    lines = text.split("\n")
    if MARKER not in lines:
        raise ValueError(f"docs/objectives.md: the line {MARKER!r} is missing (the table goes right after it)")
    start = lines.index(MARKER) + 1
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join([*lines[:start], *registry_table(), *lines[end:]])


def main(argv: list[str]) -> None:
    for name in argv or ["docs/objectives.md"]:
        path = Path(name)
        path.write_text(replace_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote the registry table of {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
