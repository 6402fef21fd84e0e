"""The task interface and its registry (lm-evaluation-harness style: a task is one module).

A task is what the audited model learns: where its examples come from, how one is shown to the model,
how a prediction is scored.  Everything else (base, adapter, objectives, training, geometry, statistics) is
task-neutral and reads the task through this interface::

    @register_task
    class Reverse(Task):
        name = "reverse"
        description = "reverse a string"
        benchmarks = ("short",)
        sources = ("embedded",)
        system_prompt = "Reverse the string."
        metrics = (MetricSpec("exact_match", "exact"),)

        def load(self, cfg, benchmark): ...          # -> Splits (val and geometry carved from train)
        def score_item(self, ex, pred, scorer): ...  # -> {"exact": bool}

The two views the two-view objectives use are the two halves of the chat row: the **prompt view** is the
user turn (``Example.prompt``), the **target view** the assistant turn (``Example.target``); a task decides
what text goes in each when it builds its examples, and :meth:`Task.messages` renders one example as chat.
"""

from __future__ import annotations

import contextlib
import difflib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

from jepa_audit.data.carve import GEOMETRY_SEED, VAL_SEED, carve_geometry, carve_val
from jepa_audit.data.examples import DataError, Example, Splits, chat_messages
from jepa_audit.presets import presets_for_task
from jepa_audit.results import MetricSpec, metric_specs_of_row  # re-exported: the task API

__all__ = [
    "DataSettings",
    "EvalResult",
    "EvalSettings",
    "carved_splits",
    "count_lines",
    "MetricSpec",
    "Task",
    "get_task",
    "list_tasks",
    "load_benchmark",
    "metric_specs_of_row",
    "pretraining_pool",
    "register_task",
    "task_rows",
]


class DataSettings(Protocol):
    """What every task reads of the data settings it is handed: :class:`jepa_audit.config.DataCfg` (the
    ``data:`` section) is one. The config sits above the tasks (it validates ``data.task`` against this
    registry), so tasks name this protocol, not the model; a task reading its own keys (NL-RX's ``split``,
    jsonl's files) declares them in a protocol of its module. A plugin task gets the whole ``DataCfg``."""

    task: str
    source: str
    path: str | None
    val_size: int  # rows
    geometry_size: int  # rows
    max_train: int | None  # rows; None = all
    max_test: int | None  # rows; None = all


class EvalSettings(Protocol):
    """What a task may read of the evaluation settings (:class:`jepa_audit.config.EvalCfg`, the ``eval:``
    section) when it builds its scorer; a task needing more (NL-RX's DFA budget) declares it in its module."""

    batch_size: int  # sequences per decoding batch
    max_new_tokens: int


@dataclass
class EvalResult:
    """What scoring a split returns: ``metrics`` (every spec's name as a 0–1 fraction, ``n_test``, plus the
    task's counts) and ``predictions`` (one dict per item: ``item``, the texts, ``pred``, every spec's
    ``field``)."""

    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]


class Task(ABC):
    """One task: its benchmarks, data, prompt, metrics and scoring.  Subclass, fill the class attributes,
    implement :meth:`load` and :meth:`score_item`, decorate with :func:`register_task`."""

    name: ClassVar[str]
    description: ClassVar[str]
    benchmarks: ClassVar[tuple[str, ...]]  # the values data.task's benchmarks may take (audit.benchmarks)
    sources: ClassVar[tuple[str, ...]] = ("local",)  # values of data.source; the first is the task's default
    system_prompt: ClassVar[str]  # data.system_prompt when that is left unset
    metrics: ClassVar[tuple[MetricSpec, ...]]  # the primary metric first (calibration scores it)
    presets: ClassVar[tuple[str, ...]] = ()  # presets of a plugin task kept outside the package; the packaged ones
    # are found from their files' data.task (presets.presets_for_task)

    # ---------------------------------------------------------------------------------------- data

    @abstractmethod
    def load(self, cfg: DataSettings, benchmark: str) -> Splits:
        """The splits of ``benchmark`` under ``cfg``: train, val (carved from train unless the data has its own),
        geometry (carved from the rest of train), test; cut to ``cfg.max_train`` / ``cfg.max_test``.
        Raises :class:`DataError` naming the file or setting."""

    def pretraining_pool(self, cfg: DataSettings, n: int, seed: int) -> list[Example] | None:
        """``n`` examples (seed ``seed``) to pre-train the tiny base on, disjoint from every benchmark
        example; None when the task has none (the tiny base then starts from its random init)."""
        return None

    def stats(self, splits: Splits) -> dict[str, Any]:
        """``data stats`` of one benchmark: sizes and text lengths (a task may add its own)."""
        rows = splits.train + splits.val + splits.test
        return {
            "source": splits.source, **{f"n_{k}": v for k, v in splits.sizes().items()},
            "prompt_words": _summary([len(e.prompt.split()) for e in rows]),
            "target_words": _summary([len(e.target.split()) for e in rows]),
            "distinct_targets": len({e.target for e in rows}),
        }  # fmt: skip

    def local_root(self, cfg: DataSettings) -> Path:
        """``data.path`` as a Path; DataError naming the setting when it is unset."""
        if not cfg.path:
            raise DataError(f"data.task={self.name} needs data.path: a local copy of its data (nothing is downloaded)")
        return Path(cfg.path)

    def benchmark_names(self, cfg: DataSettings) -> tuple[str, ...]:
        """The benchmarks this task offers under ``cfg`` (default: :attr:`benchmarks`; the ``jsonl`` task
        names its one benchmark after ``data.name``)."""
        return self.benchmarks

    def stand_in_data(self, path: Path) -> Path | None:
        """Write, under ``path``, a small data directory in this task's on-disk format holding none of the real
        data's content, and return it: what ``jepa-audit rehearse`` runs a preset on when the task has no
        ``embedded`` source and the real data are absent. None (the default): the task has none."""
        return None

    def test_rows(self, cfg: DataSettings, benchmark: str) -> int | None:
        """How many test rows :meth:`load` gives for ``benchmark`` under ``cfg`` before ``cfg.max_test``, found
        cheaply (a known size, or a line count of the test file; never a parse): the dry run's time estimate
        uses it. None (the default) when unknown, e.g. the data are not there yet."""
        return None

    def check_benchmark(self, benchmark: str) -> None:
        if benchmark not in self.benchmarks:
            raise DataError(
                f"unknown benchmark {benchmark!r}; expected one of: {', '.join(self.benchmarks)} (task {self.name})"
            )

    # ------------------------------------------------------------------------------ rendering and views

    def prompt_view(self, ex: Example) -> str:
        """The user turn's text: the prompt view of the two-view objectives (default: ``ex.prompt``)."""
        return ex.prompt

    def target_view(self, ex: Example) -> str:
        """The assistant turn's text, what CE trains and decoding must produce: the target view (default:
        ``ex.target``).  :meth:`score_item` receives the decoded assistant turn, so a task that overrides this
        scores against its own rendering."""
        return ex.target

    def messages(self, ex: Example, system: str, answer: bool = True) -> list[dict[str, str]]:
        """The chat rendering of one example: [system], user = :meth:`prompt_view`, assistant =
        :meth:`target_view` (left out with ``answer=False``: the generation prompt).  data/views.py renders
        every row through this, then through the model's chat template."""
        return chat_messages(system, self.prompt_view(ex), self.target_view(ex) if answer else None)

    # ------------------------------------------------------------------------------------------ scoring

    def scorer(self, cfg: EvalSettings) -> Any:
        """Whatever :meth:`score_item` needs that is worth building once per split (None by default)."""
        return None

    @abstractmethod
    def score_item(self, ex: Example, pred: str, scorer: Any) -> dict[str, Any]:
        """The per-item fields of one prediction: every metric spec's ``field`` (a bool) and any detail."""

    def item_record(self, ex: Example, pred: str) -> dict[str, Any]:
        """The texts of one predictions-file line, before the scored fields."""
        return {"item": ex.idx, "prompt": ex.prompt, "gold": ex.target, "pred": pred}

    def counts(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Extra counts for the metrics dict (e.g. parse errors); none by default."""
        return {}

    def score(self, examples: Sequence[Example], preds: Sequence[str], cfg: EvalSettings) -> EvalResult:
        """Score ``preds`` against ``examples`` (same order): per-item records and the metric fractions."""
        scorer = self.scorer(cfg)
        items = []
        for ex, pred in zip(examples, preds, strict=True):
            items.append({**self.item_record(ex, pred), **self.score_item(ex, pred, scorer)})
        n = max(1, len(items))
        metrics: dict[str, Any] = {m.name: sum(it[m.field] is True for it in items) / n for m in self.metrics}
        metrics["n_test"] = len(items)
        metrics.update(self.counts(items))
        return EvalResult(metrics, items)

    @classmethod
    def info(cls) -> dict[str, Any]:
        """One row of ``jepa-audit tasks list --json``."""
        return {
            "name": cls.name, "description": cls.description, "benchmarks": list(cls.benchmarks),
            "sources": list(cls.sources), "system_prompt": cls.system_prompt,
            "metrics": [m.as_dict() for m in cls.metrics], "presets": _presets(cls.name, cls.presets),
            "pretraining_pool": cls.pretraining_pool is not Task.pretraining_pool,
            "origin": _ORIGIN.get(cls.name, "built-in"),
        }  # fmt: skip


def _presets(task: str, extra: Sequence[str]) -> list[str]:
    return [*presets_for_task(task), *(p for p in extra if p not in presets_for_task(task))]


def count_lines(path: Path) -> int | None:
    """Non-empty lines of ``path`` (one example each in the line-based formats), None when it cannot be read:
    what :meth:`Task.test_rows` answers for a task whose test file is on disk."""
    try:
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def carved_splits(
    cfg: DataSettings, benchmark: str, train: list[Example], test: list[Example], source: str,
    *, val_size: int | None = None,
) -> Splits:
    """The splits of a task whose data has train and test only: ``cfg.val_size`` validation rows carved from
    train (fixed seed, never a cell seed), then ``cfg.geometry_size`` geometry rows from the rest (another
    fixed seed), then train and test cut to ``cfg.max_train`` / ``cfg.max_test``; every part indexed from 0.
    ``source`` says where the rows came from (a sentence on the carving is appended). ``val_size``: carve
    that many validation rows instead of ``cfg.val_size`` (0 for data with its own validation file)."""
    n_val = cfg.val_size if val_size is None else val_size
    rest, val = carve_val(train, n_val, what=f"the {benchmark} train split")
    rest, geometry = carve_geometry(rest, cfg.geometry_size, what=f"the {benchmark} train split less data.val_size")
    if cfg.max_train is not None:
        rest = rest[: cfg.max_train]
    test = [replace(e, idx=i) for i, e in enumerate(test[: cfg.max_test])]  # replace: keeps a subclass's fields
    note = (f"{source}; val {len(val)} rows carved from train (seed {VAL_SEED}), geometry pool {len(geometry)} "
            f"rows carved from the rest (seed {GEOMETRY_SEED})")
    return Splits(benchmark=benchmark, source=note, train=rest, val=val, test=test, geometry=geometry)


def _summary(xs: Sequence[float]) -> dict[str, float] | None:
    if not xs:
        return None
    s = sorted(xs)
    return {"mean": sum(s) / len(s), "median": s[len(s) // 2], "min": s[0], "max": s[-1]}


# -------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Task]] = {}
_INSTANCES: dict[str, Task] = {}
_ORIGIN: dict[str, str] = {}  # name → the plugin file or entry point it came from; built-ins absent
_LOADING: str | None = None  # the plugin being imported now (:func:`open_for_plugin`)


def check_task_class(cls: type) -> None:
    """TypeError naming what a task class lacks: the class attributes, a Task subclass, metric specs."""
    if not isinstance(cls, type) or not issubclass(cls, Task):
        raise TypeError(f"{getattr(cls, '__name__', cls)!r} must subclass jepa_audit.tasks.Task")
    for attr in ("name", "description", "benchmarks", "system_prompt", "metrics"):
        if not hasattr(cls, attr):
            raise TypeError(f"task class {cls.__name__} has no {attr!r}")
    if not isinstance(cls.name, str) or not cls.name.strip():
        raise TypeError(f"task class {cls.__name__}: name must be a non-empty string, got {cls.name!r}")
    if not cls.metrics:
        raise TypeError(f"task {cls.name}: metrics must name at least one MetricSpec (the primary first)")
    if not all(isinstance(m, MetricSpec) for m in cls.metrics):
        raise TypeError(f"task {cls.name}: metrics must be a tuple of MetricSpec (the primary first)")
    b = cls.benchmarks
    if not isinstance(b, tuple) or not b or not all(isinstance(x, str) and x for x in b):
        raise TypeError(f"task {cls.name}: benchmarks must be a non-empty tuple of names, got {b!r}")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: add ``cls`` under ``cls.name``.  In a module, re-registering a name replaces it; while
    a plugin is imported (:func:`open_for_plugin`) a name that is already taken raises KeyError."""
    check_task_class(cls)
    if _LOADING is not None:
        if cls.name in _REGISTRY:
            where = _ORIGIN.get(cls.name, "the built-in tasks")
            raise KeyError(f"task {cls.name!r} registered twice (it is already in {where})")
        _ORIGIN[cls.name] = _LOADING
    _REGISTRY[cls.name] = cls
    _INSTANCES.pop(cls.name, None)
    return cls


@contextlib.contextmanager
def open_for_plugin(origin: str) -> Iterator[None]:
    """Mark ``origin`` (a plugin file or entry point) as the source of the tasks registered meanwhile."""
    global _LOADING
    _LOADING = origin
    try:
        yield
    finally:
        _LOADING = None


def unregister(names: Iterable[str]) -> None:
    """Drop plugin tasks (a plugin file re-imported after an edit registers its classes anew)."""
    for n in names:
        if n in _ORIGIN:
            _REGISTRY.pop(n, None)
            _INSTANCES.pop(n, None)
            _ORIGIN.pop(n, None)


def get_task(name: str) -> Task:
    """The (shared, stateless) instance of task ``name``; KeyError naming the known tasks otherwise. (The
    built-in tasks are registered by then: importing this module imports the package, which imports them.)"""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown task {name!r}{hint}; expected one of: {', '.join(sorted(_REGISTRY))}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _REGISTRY[name]()
    return _INSTANCES[name]


def list_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_REGISTRY)


def task_rows() -> list[dict[str, Any]]:
    """``jepa-audit tasks list --json``: one :meth:`Task.info` per task, sorted by name."""
    return [_REGISTRY[n].info() for n in list_tasks()]


def load_benchmark(cfg: DataSettings, benchmark: str) -> Splits:
    """The splits of ``benchmark`` of task ``cfg.task`` under ``cfg`` (see the task's ``load``).

    Raises :class:`DataError` on an unknown benchmark or any data problem."""
    return get_task(cfg.task).load(cfg, benchmark)


def pretraining_pool(cfg: DataSettings, n: int, seed: int) -> list[Example] | None:
    """``n`` examples (seed ``seed``) of task ``cfg.task`` to pre-train the tiny base on, disjoint from its
    benchmarks; None when the task has no pool (the base then keeps its random init)."""
    return get_task(cfg.task).pretraining_pool(cfg, n, seed)
