"""The presets: ``<name>.yaml`` files beside this module (package data, so an installed wheel carries them).

The one place presets are named: :data:`PRESETS` is read from the files, and ``config`` (loading), the CLI's
help and ``tasks list`` (:func:`presets_for_task`) all take it from here. At the bottom of the import
layers (YAML only), so the task registry can name its presets without importing ``config``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["PRESET_DIR", "PRESETS", "presets_for_task"]

PRESET_DIR = Path(__file__).resolve().parent
PRESETS: tuple[str, ...] = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))


def presets_for_task(task: str) -> list[str]:
    """The presets whose ``data.task`` is ``task`` (unset: nlrx, the default). The files are the package's own;
    one that does not parse is a packaging bug, and raises."""
    out = []
    for name in PRESETS:
        data = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8")) or {}
        if (data.get("data") or {}).get("task", "nlrx") == task:
            out.append(name)
    return out
