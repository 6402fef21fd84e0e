"""Plugins: objectives and tasks defined outside the package, imported before anything reads the registries.

Three ways in, one loader (lm-evaluation-harness's ``--include_path``, pytest's entry-point plugins):

* ``--include PATH`` on the command line and ``plugins: [PATH, ...]`` in a config file (relative paths resolved
  against the file's folder): a ``.py`` file, or a folder whose ``*.py`` files (not ``_*.py``) are imported
  in name order;
* installed distributions declaring entry points in the groups ``jepa_audit.objectives`` and
  ``jepa_audit.tasks`` (imported once per process, whatever the command).

A plugin registers with the public decorators (``@register_objective``, ``@register_task``).  The objective
registry is frozen once the built-in families are imported; :func:`load_plugins` opens it for the plugin's
own import only, and records where each id came from (``aux list`` / ``tasks list`` show it).  A plugin
that fails to import, registers an id that is taken, or declares an invalid spec raises one
:class:`PluginError` line naming the file, and nothing of it stays registered.

A plugin is part of what a cell computes: :class:`Plugin` records its source's sha256, which the config
carries (``plugins_loaded``) into the hash of every cell whose method or task the plugin registered.
Workers (spawned pool processes, Ray tasks) call :func:`load_for_cell` before running a cell; Ray tasks get
the files' bytes with the task (:func:`bundle`), so a node without the files runs them too.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import tempfile
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jepa_audit.objectives  # noqa: F401  (the built-in families register and freeze first)
import jepa_audit.tasks  # noqa: F401
from jepa_audit.config import ConfigError
from jepa_audit.config import load_config as _load_config
from jepa_audit.objectives import base as objectives_base
from jepa_audit.tasks import base as tasks_base

if TYPE_CHECKING:
    from jepa_audit.config import Config

__all__ = [
    "ENTRY_POINT_GROUPS",
    "Plugin",
    "PluginError",
    "bundle",
    "load_config",
    "load_for_cell",
    "load_plugins",
    "plugin_files",
]

ENTRY_POINT_GROUPS = ("jepa_audit.objectives", "jepa_audit.tasks")
_MODULE_PREFIX = "jepa_audit_plugin_"


class PluginError(ConfigError):
    """A plugin that cannot be used: one line naming its file (or entry point) and what is wrong."""


@dataclass(frozen=True)
class Plugin:
    """One imported plugin: ``source`` (absolute file path, or ``entry point NAME = VALUE``), the sha256 of
    its source file, and the ids it registered."""

    source: str
    sha256: str
    objectives: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """What the config, grid.json and the rows keep of it."""
        return {"sha256": self.sha256, "objectives": list(self.objectives), "tasks": list(self.tasks)}


_LOADED: dict[str, Plugin] = {}  # source → plugin, this process
_ENTRY_POINTS: list[Plugin] | None = None  # discovered once per process


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plugin_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ``.py`` files ``paths`` name (a file, or a folder's ``*.py`` not starting with ``_``, sorted), as
    absolute paths without duplicates; PluginError naming a path that is missing or not Python."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser().resolve()
        if p.is_dir():
            files = sorted(f for f in p.glob("*.py") if not f.name.startswith("_"))
            if not files:
                raise PluginError(f"plugin folder {p}: holds no .py file (expected plugin modules)")
        elif p.is_file():
            if p.suffix != ".py":
                raise PluginError(f"plugin {p}: expected a .py file or a folder of them")
            files = [p]
        else:
            raise PluginError(f"plugin {p}: no such file or folder (--include / plugins: expect a .py file or a folder)")
        out += [f for f in files if f not in out]
    return out


def _registries() -> tuple[Any, Any]:
    """The two registry modules (importing the packages above registered and froze the built-ins)."""
    return objectives_base, tasks_base


def _registered_by(source: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    objectives, tasks = _registries()
    return (tuple(k for k, v in objectives._ORIGIN.items() if v == source),
            tuple(k for k, v in tasks._ORIGIN.items() if v == source))  # fmt: skip


def _forget(source: str) -> None:
    objectives, tasks = _registries()
    objs, tsks = _registered_by(source)
    objectives.unregister(objs)
    tasks.unregister(tsks)
    _LOADED.pop(source, None)


def _why(e: BaseException, path: str | None) -> str:
    """``Type: message (line N)``: the exception in one line, with the plugin file's line when it is there."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    first = str(msg).strip().splitlines()[0] if str(msg).strip() else ""
    where = ""
    if path is not None:
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        if isinstance(e, SyntaxError) and e.lineno:
            lines = [e.lineno]
        if lines:
            where = f" (line {lines[-1]})"
    text = first if _from_registry(e) else f"{type(e).__name__}: {first}"  # registry messages say it all
    return f"{text}{where}"


def _from_registry(e: BaseException) -> bool:
    """The error was raised by a registry's decorator (a duplicate id, an invalid spec)."""
    names = {f.name for f in traceback.extract_tb(e.__traceback__)}
    return bool(names & {"register_objective", "register_task", "check_spec", "check_task_class"})


def load_file(path: Path, source: str | None = None) -> Plugin:
    """Import one plugin file (once per content: an edited file replaces what its earlier version
    registered).  ``source`` names it (default: its absolute path; Ray tasks pass the driver's path)."""
    path = Path(path).resolve()
    source = source or str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PluginError(f"plugin {source}: cannot be read ({e.strerror or e})") from None
    sha = hashlib.sha256(data).hexdigest()
    prev = _LOADED.get(source)
    if prev is not None and prev.sha256 == sha:
        return prev
    if prev is not None:
        _forget(source)
    objectives, tasks = _registries()
    stem = re.sub(r"\W", "_", path.stem)
    name = f"{_MODULE_PREFIX}{stem}_{sha[:12]}"  # unique per content: dataclasses and pickling find it here
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {source}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with objectives.open_for_plugin(source), tasks.open_for_plugin(source):
            spec.loader.exec_module(module)
    except Exception as e:
        _forget(source)
        sys.modules.pop(name, None)
        what = "invalid" if _from_registry(e) else "failed to import"
        raise PluginError(f"plugin {source}: {what}: {_why(e, str(path))}") from None
    objs, tsks = _registered_by(source)
    plugin = Plugin(source, sha, objs, tsks)
    _LOADED[source] = plugin
    return plugin


def _entry_point_plugins() -> list[Plugin]:
    """Import every ``jepa_audit.objectives`` / ``jepa_audit.tasks`` entry point once per process."""
    global _ENTRY_POINTS
    if _ENTRY_POINTS is not None:
        return _ENTRY_POINTS
    eps = [ep for group in ENTRY_POINT_GROUPS for ep in importlib.metadata.entry_points(group=group)]
    found: list[Plugin] = []
    if eps:  # the registries (and torch) are imported only when there is something to register
        objectives, tasks = _registries()
    for ep in eps:
        dist = getattr(getattr(ep, "dist", None), "name", None)
        source = f"entry point {ep.name} = {ep.value}" + (f" ({dist})" if dist else "")
        if source in _LOADED:
            found.append(_LOADED[source])
            continue
        try:
            with objectives.open_for_plugin(source), tasks.open_for_plugin(source):
                obj = ep.load()
                # an entry point may name the class itself rather than a module that registers on import
                if isinstance(obj, type) and issubclass(obj, objectives.Objective) and obj not in objectives._REGISTRY.values():
                    objectives.register_objective(obj)
                if isinstance(obj, type) and issubclass(obj, tasks.Task) and obj not in tasks._REGISTRY.values():
                    tasks.register_task(obj)
        except Exception as e:
            _forget(source)
            what = "invalid" if _from_registry(e) else "failed to import"
            raise PluginError(f"plugin {source}: {what}: {_why(e, None)}") from None
        module = sys.modules.get(ep.module)
        file = getattr(module, "__file__", None)
        sha = sha256_file(Path(file)) if file else hashlib.sha256(ep.value.encode()).hexdigest()
        objs, tsks = _registered_by(source)
        _LOADED[source] = Plugin(source, sha, objs, tsks)
        found.append(_LOADED[source])
    _ENTRY_POINTS = found
    return found


def load_plugins(paths: Iterable[str | Path] = ()) -> list[Plugin]:
    """Import the installed entry points, then the plugin files ``paths`` name (files or folders); returns
    them in that order.  Idempotent per file content.  Raises :class:`PluginError` (one line, the file)."""
    out = list(_entry_point_plugins())
    out += [load_file(f) for f in plugin_files(paths)]
    return out


def records(plugins: Sequence[Plugin]) -> dict[str, dict[str, Any]]:
    """``source → {sha256, objectives, tasks}``: what ``Config.plugins_loaded`` holds."""
    return {p.source: p.record() for p in plugins}


# ----------------------------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------------------------


def bundle(cfg: Config) -> dict[str, bytes]:
    """The plugin files of ``cfg`` as ``{absolute path on this machine: bytes}``, for Ray tasks on nodes
    that may not see this file system."""
    return {str(f): f.read_bytes() for f in plugin_files(cfg.plugins)}


_MATERIALISED: Path | None = None


def load_for_cell(cfg: Config, files: dict[str, bytes] | None = None) -> list[Plugin]:
    """In a worker, before a cell: import what the driver imported (entry points, ``cfg.plugins``; from
    ``files`` when given, written to a temporary folder where this node lacks them or holds another
    version), then check every plugin's sha256 against the one recorded when the config was loaded: a
    plugin edited while the grid runs fails its cells instead of mixing two versions in one audit."""
    global _MATERIALISED
    if files is None:
        loaded = load_plugins(cfg.plugins)
    else:
        loaded = list(_entry_point_plugins())
        for source, data in files.items():
            p = Path(source)
            if not (p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()):
                if _MATERIALISED is None:
                    _MATERIALISED = Path(tempfile.mkdtemp(prefix="jepa-audit-plugins-"))
                d = _MATERIALISED / hashlib.sha256(data).hexdigest()[:16]
                d.mkdir(exist_ok=True)
                p = d / Path(source).name
                p.write_bytes(data)
            loaded.append(load_file(p, source=source))
    for p in loaded:
        want = cfg.plugins_loaded.get(p.source, {}).get("sha256")
        if want is not None and want != p.sha256:
            raise PluginError(
                f"plugin {p.source} changed since this audit's config was loaded (sha256 {p.sha256[:12]}, "
                f"recorded {want[:12]}); run the command again to start from the new version"
            )
    return loaded


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    includes: list[str | Path] | None = None,
) -> Config:
    """:func:`jepa_audit.config.load_config` with the config's plugins (``plugins:``, ``includes``) and the
    installed entry points imported before it is validated, and every method's parameters checked against
    its objective's typed model (:func:`jepa_audit.objectives.check_config_params`): what the CLI and every
    worker use.  ConfigError names the key (``aux.per_method.P1.params.layer``) and what it expected."""
    cfg = _load_config(preset, file, overrides, includes, plugin_loader=lambda paths: records(load_plugins(paths)))
    jepa_audit.objectives.check_config_params(cfg)
    return cfg
