"""The layering contracts of pyproject.toml ([tool.importlinter]) hold: `lint-imports` passes on src/.

A wrong-way import (function-level ones included) fails here with the chain of importing modules and the
line of each import, as `lint-imports` prints it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.is_file(), f"{exe} not found: install the dev extra (pip install -e '.[dev]'), which has import-linter"
    # the checkout's own source first, whatever copy of the package the environment has installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([str(exe), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 broken" in p.stdout, p.stdout


def test_a_wrong_way_import_is_reported_with_its_line(tmp_path):
    """The check can fail: a copy of the package whose regex imports config breaks the regex contract, and the
    message names the importing module and the line."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "jepa_audit", src / "jepa_audit", ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "jepa_audit" / "regex" / "__init__.py"
    lines = init.read_text().splitlines()
    lines.append("from jepa_audit.config import Config  # noqa: E402,F401  (a wrong-way import)")
    init.write_text("\n".join(lines) + "\n")
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(src)}
    p = subprocess.run([str(exe), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"jepa_audit.regex -> jepa_audit.config (l.{len(lines)})" in p.stdout, p.stdout


@pytest.mark.parametrize(
    ("module", "added", "expected"),
    [
        # an annotation-only wrong-way import is still one (tasks once named config's DataCfg that way)
        ("tasks/base.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from jepa_audit.config import DataCfg",
         "jepa_audit.tasks.base -> jepa_audit.config"),
        # a function-level import that closes a cycle inside one package
        ("tasks/base.py", "def _hidden():\n    from jepa_audit.tasks import nlrx", "No cycles are allowed in jepa_audit.tasks"),
    ],
)
def test_hidden_cycles_are_reported(tmp_path, module, added, expected):
    """What once hid a cycle from the check fails it now: an import under TYPE_CHECKING against the layers, and a
    function-level import making two modules of one package import each other."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "jepa_audit", src / "jepa_audit", ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "jepa_audit" / module
    path.write_text(path.read_text() + "\n\n" + added + "  # noqa\n")
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(src)}
    p = subprocess.run([str(exe), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert expected in p.stdout, p.stdout

def test_no_contract_has_exceptions():
    """Every contract holds without `ignore_imports`: an exception is a cycle or a wrong-way import kept."""
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert [c["name"] for c in conf["contracts"] if c.get("ignore_imports")] == []


def test_stats_and_report_run_without_the_torch_side():
    """Importing the statistics and the report, and summarising rows that predate `target_geometry` (which once
    asked the objectives registry from inside stats), loads neither torch nor the torch side of the package."""
    code = (
        "import sys\n"
        "import jepa_audit.report, jepa_audit.stats\n"
        "from jepa_audit.stats import build_summary\n"
        "rows = [{'benchmark': 'b', 'mode': 'lora', 'method': m, 'seed': s, 'status': 'done',\n"
        "         'metrics': {'exact_match': 0.5 + 0.01 * s * (m == 'T1'), 'dfa_accuracy': 0.5},\n"
        "         'geometry': {'curvature_answer_L2': 60.0 + s + (m == 'T1')}} for m in ('ce', 'T1') for s in (1, 2, 3)]\n"
        "s = build_summary(rows, conditional_logit_metrics=())\n"
        "assert any('T1: no target_geometry in its rows' in w for w in s['warnings']), s['warnings']\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')\n"
        "             or m.startswith(('jepa_audit.objectives', 'jepa_audit.models', 'jepa_audit.tasks',\n"
        "                              'jepa_audit.data', 'jepa_audit.train', 'jepa_audit.cell')))\n"
        "print(bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "[]", p.stdout
