"""Plugins (docs/plugins.md): an objective and a task written in a folder outside the package, loaded with
``--include`` / ``plugins:`` / entry points, run by a 2-worker pool and by a local Ray instance; their source
enters the cells' hash (an edited plugin is refused on resume); a broken plugin is one line naming its file.

The plugin files are docs/plugins.md's own code blocks, so the docs run as written.  Registration is
per process: the shared folder is session-scoped (each plugin file is imported once), and tests that need
another plugin use ids of their own.
"""

from __future__ import annotations

import io
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jepa_audit import plugins
from jepa_audit.cli import app
from jepa_audit.config import ConfigError
from jepa_audit.objectives import registry
from jepa_audit.objectives.base import origin_of
from jepa_audit.plugins import PluginError, load_config, load_for_cell, load_plugins
from jepa_audit.tasks import list_tasks

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
runner = CliRunner()

# a smoke-sized audit of the plugin task: 2 cells, seconds of training each
TINY = [
    "data.task=reverse", "audit.benchmarks=[letters]", "audit.seeds=[82]", "data.n_train=300", "data.n_test=40",
    "data.val_size=20", "data.geometry_size=32", "base.steps=40", "base.pool_size=200", "train.steps=15",
    "eval.max_new_tokens=12", "model.vocab_size=64",
]  # fmt: skip


def doc_plugins() -> dict[str, str]:
    """docs/plugins.md's plugin files: each ```python block after a ``<!-- plugin: NAME -->`` marker."""
    text = DOC.read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- plugin: (\S+) -->\n```python\n(.*?)```", text, flags=re.S))


@pytest.fixture(scope="module", autouse=True)
def _forget_this_modules_plugins():
    """Registration is per process: take this module's plugins out of the registries when it ends, so tests
    that list the built-in registry (e.g. test_objectives_registry) see the same ids whatever ran before."""
    before, entry_points = set(plugins._LOADED), plugins._ENTRY_POINTS
    yield
    for source in set(plugins._LOADED) - before:
        plugins._forget(source)
    plugins._ENTRY_POINTS = entry_points


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("myplugins")
    files = doc_plugins()
    assert set(files) == {"center.py", "reverse.py"}
    for name, code in files.items():
        assert len(code.splitlines()) <= 40, f"{name}: the docs promise about 30 lines"
        (d / name).write_text(code)
    return d


def _write(d: Path, name: str, code: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(textwrap.dedent(code))
    return p


# ----------------------------------------------------------------------------------------------------------
# Loading, listing, hashing
# ----------------------------------------------------------------------------------------------------------


def test_a_plugin_folder_registers_its_objective_and_task_and_lists_their_source(plugin_dir):
    loaded = load_plugins([plugin_dir])
    by_file = {Path(p.source).name: p for p in loaded if not p.source.startswith("entry point")}
    assert by_file["center.py"].objectives == ("my-center",) and by_file["reverse.py"].tasks == ("reverse",)
    assert load_plugins([plugin_dir]) == loaded  # idempotent: same content, nothing imported twice
    assert "my-center" in registry() and "reverse" in list_tasks()
    assert origin_of("my-center") == str(plugin_dir / "center.py")

    r = runner.invoke(app, ["aux", "list", "--json", "--include", str(plugin_dir)])
    assert r.exit_code == 0, r.output
    row = next(x for x in json.loads(r.stdout) if x["id"] == "my-center")
    assert row["origin"] == str(plugin_dir / "center.py") and row["target_geometry"] == ["anisotropy_Llast"]
    assert next(x for x in json.loads(r.stdout) if x["id"] == "T1")["origin"] == "built-in"
    r = runner.invoke(app, ["tasks", "list", "-I", str(plugin_dir / "reverse.py")])
    assert r.exit_code == 0 and f"plugin from {plugin_dir / 'reverse.py'}" in r.stdout


def test_config_plugins_resolve_against_the_config_folder_and_enter_only_their_cells_hash(plugin_dir, tmp_path):
    (tmp_path / "cfg").mkdir()
    cfg_file = tmp_path / "cfg" / "audit.yaml"
    cfg_file.write_text(f"plugins: [{plugin_dir}]\ndata: {{task: reverse}}\naudit: {{benchmarks: [letters]}}\n")
    cfg = load_config(None, cfg_file, ["data.source=embedded"])
    assert cfg.plugins == [str(plugin_dir)]
    assert set(cfg.plugins_loaded) >= {str(plugin_dir / "center.py"), str(plugin_dir / "reverse.py")}

    # a relative path is read from the config file's folder, not from the working directory
    link = tmp_path / "cfg" / "mine"
    link.symlink_to(plugin_dir)
    cfg_file.write_text("plugins: [mine/center.py]\n")
    assert load_config(None, cfg_file).plugins == [str(plugin_dir / "center.py")]

    ce = cfg.cell("letters", "ce", 82, "lora")
    mine = cfg.cell("letters", "my-center", 82, "lora")
    assert set(ce.cell_plugins()) == {str(plugin_dir / "reverse.py")}  # the task's file, not the objective's
    assert set(mine.cell_plugins()) == {str(plugin_dir / "reverse.py"), str(plugin_dir / "center.py")}
    edited = mine.model_copy(deep=True)
    edited.plugins_loaded[str(plugin_dir / "center.py")]["sha256"] = "0" * 64
    assert edited.cell_hash() != mine.cell_hash()
    moved = mine.model_copy(deep=True)  # the same content elsewhere: the same cell
    moved.plugins_loaded = {f"/elsewhere/{Path(k).name}": v for k, v in moved.plugins_loaded.items()}
    assert moved.cell_hash() == mine.cell_hash()
    plain = load_config("smoke")  # no plugin in the cell: the hash is as it was before plugins existed
    assert not plain.cell_plugins() and "plugins" not in json.dumps(plain.cell_hash())


@pytest.mark.parametrize(
    ("name", "code", "expected"),
    [
        ("bad_import.py", "import no_such_module_here\n",
         r"failed to import: ModuleNotFoundError: No module named 'no_such_module_here' \(line 1\)"),
        ("syntax.py", "x = 1\ndef broken(:\n", r"failed to import: SyntaxError: .*\(line 2\)$"),
        ("dup.py", """
            from jepa_audit.objectives import Objective, ObjectiveSpec, register_objective

            @register_objective
            class Again(Objective):
                spec = ObjectiveSpec(id="T1", family="distributional", description="taken")
            """, r"invalid: objective id 'T1' registered twice \(it is already in the built-in registry\)"),
        ("family.py", """
            from jepa_audit.objectives import Objective, ObjectiveSpec, register_objective

            @register_objective
            class Odd(Objective):
                spec = ObjectiveSpec(id="odd-one", family="vibes", description="x")
            """, r"invalid: objective odd-one: unknown family 'vibes'"),
        ("taskdup.py", """
            from jepa_audit.tasks import MetricSpec, Task, register_task

            @register_task
            class Nlrx(Task):
                name, description, benchmarks, system_prompt = "nlrx", "again", ("x",), ""
                metrics = (MetricSpec("exact_match", "exact"),)
                def load(self, cfg, benchmark): ...
                def score_item(self, ex, pred, scorer): ...
            """, r"invalid: task 'nlrx' registered twice"),
        ("nometrics.py", """
            from jepa_audit.tasks import Task, register_task

            @register_task
            class Empty(Task):
                name, description, benchmarks, system_prompt, metrics = "empty-one", "x", ("x",), "", ()
            """, r"invalid: task empty-one: metrics must name at least one MetricSpec"),
    ],
)  # fmt: skip
def test_a_broken_plugin_is_one_line_naming_its_file_and_nothing_runs(tmp_path, name, code, expected):
    before_objectives, before_tasks = set(registry()), set(list_tasks())
    # a good objective beside the broken file: it must not stay registered either
    good = """
        from jepa_audit.objectives import AuxContext, AuxOut, Objective, ObjectiveSpec, register_objective

        @register_objective
        class Fine(Objective):
            spec = ObjectiveSpec(id="fine-ID", family="distributional", description="ok")
            def forward(self, ctx: AuxContext) -> AuxOut:
                return AuxOut(loss=ctx.hidden[-1].float().pow(2).mean())
        """.replace("ID", tmp_path.name)  # fmt: skip
    bad = _write(tmp_path, name, code)
    _write(tmp_path, f"{name[:-3]}_and_good.py", textwrap.dedent(good) + textwrap.dedent(code))
    with pytest.raises(PluginError) as e:
        load_plugins([bad])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"plugin {bad}: ") and re.search(expected, msg), msg
    with pytest.raises(PluginError):
        load_plugins([tmp_path / f"{name[:-3]}_and_good.py"])
    assert set(registry()) == before_objectives and set(list_tasks()) == before_tasks

    # through the CLI: exit 2, the one line, and no audit directory
    r = runner.invoke(app, ["audit", "--preset", "smoke", "--include", str(bad), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and re.search(expected, r.output) and f"plugin {bad}" in r.output.replace("\n", "")
    assert not (tmp_path / "out").exists()


def test_a_missing_or_non_python_plugin_path_is_named(tmp_path):
    with pytest.raises(PluginError, match=r"no such file or folder"):
        load_plugins([tmp_path / "nope.py"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PluginError, match=r"notes.txt: expected a .py file"):
        load_plugins([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PluginError, match=r"holds no .py file"):
        load_plugins([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="key 'plugins': expected a list of paths"):
        load_config(None, None, ["plugins={a: 1}"])


def test_a_worker_imports_the_shipped_files_and_refuses_an_edited_one(tmp_path):
    """Ray tasks get the files' bytes: a node without the driver's path writes them to a temporary folder and
    registers them under the driver's path; a file whose sha256 is not the recorded one fails the cell."""
    code = textwrap.dedent("""
        from jepa_audit.objectives import AuxContext, AuxOut, Objective, ObjectiveSpec, register_objective

        @register_objective
        class Shipped(Objective):
            spec = ObjectiveSpec(id="shipped-one", family="distributional", description="shipped")
            def forward(self, ctx: AuxContext) -> AuxOut:
                return AuxOut(loss=ctx.hidden[-1].float().pow(2).mean())
        """)  # fmt: skip
    p = _write(tmp_path / "driver", "shipped.py", code)
    cfg = load_config(None, None, [], includes=[p])
    files = plugins.bundle(cfg)
    assert list(files) == [str(p)]
    plugins._forget(str(p))  # as on a fresh node
    p.unlink()  # this "node" does not see the driver's file
    loaded = load_for_cell(cfg, files)
    got = next(x for x in loaded if x.source == str(p))
    assert got.objectives == ("shipped-one",) and origin_of("shipped-one") == str(p)
    assert "shipped-one" in registry()

    edited = {str(p): files[str(p)] + b"\n# edited\n"}
    plugins._forget(str(p))
    with pytest.raises(PluginError, match=r"changed since this audit's config was loaded"):
        load_for_cell(cfg, edited)
    plugins._forget(str(p))


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------

EP_OBJECTIVE = """
    from jepa_audit.objectives import AuxContext, AuxOut, Objective, ObjectiveSpec, register_objective


    @register_objective
    class EpCenter(Objective):
        spec = ObjectiveSpec(id="ep-center", family="distributional", description="from an entry point",
                             default_weight=0.1, target_geometry=("anisotropy_Llast",),
                             target_direction={"anisotropy_Llast": "decrease"})

        def forward(self, ctx: AuxContext) -> AuxOut:
            z = ctx.hidden[-1][ctx.batch.answer_mask].float()
            return AuxOut(loss=z.mean(0).pow(2).sum() / z.pow(2).sum(1).mean().clamp_min(1e-8))
    """


@pytest.fixture
def installed_dist(tmp_path, monkeypatch):
    """A tiny installed distribution on sys.path (seen by spawned workers and local Ray too) whose entry
    points name a module registering the objective ``ep-center`` and one registering the task
    ``ep-reverse`` (docs/plugins.md's task under another name)."""
    import importlib

    site = tmp_path / "site"
    _write(site, "jepa_audit_ep_demo.py", EP_OBJECTIVE)
    task = doc_plugins()["reverse.py"].replace('name = "reverse"', 'name = "ep-reverse"')
    _write(site, "jepa_audit_ep_demo_task.py", task)
    info = site / "jepa_audit_ep_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jepa-audit-ep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[jepa_audit.objectives]\nep-center = jepa_audit_ep_demo\n\n"
        "[jepa_audit.tasks]\nep-reverse = jepa_audit_ep_demo_task\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{__import__('os').environ.get('PYTHONPATH', '')}")
    importlib.invalidate_caches()
    monkeypatch.setattr(plugins, "_ENTRY_POINTS", None)
    yield site
    for p in list(plugins._LOADED):
        if p.startswith(("entry point ep-center", "entry point ep-reverse")):
            plugins._forget(p)
    sys.modules.pop("jepa_audit_ep_demo", None)
    sys.modules.pop("jepa_audit_ep_demo_task", None)
    plugins._ENTRY_POINTS = None


def test_an_entry_point_registers_with_its_source_faked_through_importlib_metadata(tmp_path, monkeypatch):
    import importlib.metadata as md

    _write(tmp_path, "jepa_audit_ep_fake.py", EP_OBJECTIVE.replace("ep-center", "ep-fake"))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = md.EntryPoint(name="ep-fake", value="jepa_audit_ep_fake", group="jepa_audit.objectives")
    monkeypatch.setattr(md, "entry_points", lambda group=None: [ep] if group == "jepa_audit.objectives" else [])
    monkeypatch.setattr(plugins, "_ENTRY_POINTS", None)
    try:
        loaded = load_plugins()
        assert [p.objectives for p in loaded] == [("ep-fake",)]
        assert origin_of("ep-fake") == "entry point ep-fake = jepa_audit_ep_fake"
        cfg = load_config("smoke")
        assert cfg.plugins_loaded["entry point ep-fake = jepa_audit_ep_fake"]["sha256"] == loaded[0].sha256
        assert cfg.cell("synth", "ep-fake", 82, "lora").cell_plugins()  # in that cell's hash
    finally:
        plugins._forget("entry point ep-fake = jepa_audit_ep_fake")
        sys.modules.pop("jepa_audit_ep_fake", None)
        plugins._ENTRY_POINTS = None


def test_a_broken_entry_point_is_one_line_naming_it(monkeypatch):
    import importlib.metadata as md

    ep = md.EntryPoint(name="gone", value="no_such_dist_module_xyz", group="jepa_audit.tasks")
    monkeypatch.setattr(md, "entry_points", lambda group=None: [ep] if group == "jepa_audit.tasks" else [])
    monkeypatch.setattr(plugins, "_ENTRY_POINTS", None)
    with pytest.raises(PluginError, match=r"^plugin entry point gone = no_such_dist_module_xyz: failed to import: "
                                          r"ModuleNotFoundError"):  # fmt: skip
        load_plugins()
    plugins._ENTRY_POINTS = None


# ----------------------------------------------------------------------------------------------------------
# aux check
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_aux_check_passes_the_plugin_objective_and_fails_a_broken_one(plugin_dir, tmp_path):
    r = runner.invoke(app, ["aux", "check", "my-center", "--include", str(plugin_dir)])
    assert r.exit_code == 0, r.output
    assert r.stdout.count("PASS") == 5 and "my-center: 5/5 checks passed" in r.stdout

    broken = _write(tmp_path, "noisy.py", """
        import torch

        from jepa_audit.objectives import AuxContext, AuxOut, Objective, ObjectiveSpec, register_objective


        @register_objective
        class Noisy(Objective):
            spec = ObjectiveSpec(id="my-noisy", family="distributional", description="global RNG, NaN at λ=0")

            def forward(self, ctx: AuxContext) -> AuxOut:
                z = ctx.hidden[-1][ctx.batch.answer_mask].float()
                return AuxOut(loss=(z * torch.randn(z.shape)).mean() / 0.0)  # two bugs: global RNG, inf
        """)  # fmt: skip
    r = runner.invoke(app, ["aux", "check", "my-noisy", "--include", str(broken)])
    assert r.exit_code == 1, r.output
    assert "FAIL own-rng: the loss drew from the global RNG" in r.stdout
    assert "FAIL finite: the loss is" in r.stdout and "FAIL zero-weight" in r.stdout
    assert "checks passed; failed: finite, own-rng, zero-weight, training" in r.stdout

    r = runner.invoke(app, ["aux", "check", "no-such-objective"])
    assert r.exit_code == 2 and "unknown objective 'no-such-objective'" in r.output


# ----------------------------------------------------------------------------------------------------------
# Audits: two spawned workers, local Ray, an entry point
# ----------------------------------------------------------------------------------------------------------


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_plugin_objective_and_task_run_on_two_workers_and_an_edit_is_refused_on_resume(plugin_dir, tmp_path):
    mine = tmp_path / "mine"  # a copy of the docs' plugins, edited in place below
    mine.mkdir()
    for f in plugin_dir.iterdir():
        (mine / f.name).write_text(f.read_text())
    for f in plugin_dir.iterdir():  # this process holds my-center and reverse from the shared folder
        plugins._forget(str(f))
    out = tmp_path / "audit"
    args = ["audit", "--preset", "smoke", "--include", str(mine), "--workers", "2", "--out", str(out),
            "--set", "audit.methods=[ce, my-center]", "--set", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    for s in TINY:
        args += ["--set", s]
    try:
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        rows = _rows(out)
        assert sorted(r["method"] for r in rows) == ["ce", "my-center"] and {r["task"] for r in rows} == {"reverse"}
        row = next(r for r in rows if r["method"] == "my-center")
        sha = plugins.sha256_file(mine / "center.py")
        assert row["plugins"][str(mine / "center.py")] == sha and row["target_geometry"] == ["anisotropy_Llast"]
        grid = json.loads((out / "grid.json").read_text())
        assert grid["cells"]["letters__my-center__s82__lora"]["plugins"][str(mine / "center.py")] == sha
        assert "my-center" in (out / "report.md").read_text()  # the report names the plugin method

        with open(mine / "center.py", "a") as f:  # a comment is an edit too
            f.write("# tuned\n")
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        text = r.output.replace("\n", "")
        assert "the config changed for 1 cell(s)" in text and "letters__my-center__s82__lora" in text
        new = plugins.sha256_file(mine / "center.py")
        assert f"plugin {mine / 'center.py'} edited (sha256 {sha[:12]} → {new[:12]})" in text and "--force" in text
        assert len(_rows(out)) == 2  # nothing ran, nothing was replaced
    finally:
        for f in mine.iterdir():
            plugins._forget(str(f))
        load_plugins([plugin_dir])


@pytest.mark.slow
def test_plugin_objective_and_task_run_on_a_local_ray_instance(plugin_dir, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'jepa-audit[ray]'")
    from jepa_audit.audit import run_audit

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local instance, never someone's cluster
    if ray.is_initialized():
        ray.shutdown()
    cfg = load_config("smoke", None, [*TINY, "audit.methods=[ce, my-center]", f"cache_dir={tmp_path / 'cache'}"],
                      includes=[plugin_dir])  # fmt: skip
    out = tmp_path / "ray"
    assert run_audit(cfg, out, executor="ray", workers=2, stream=io.StringIO(), live=False) == 0
    assert not ray.is_initialized()
    rows = _rows(out)
    assert sorted(r["method"] for r in rows) == ["ce", "my-center"]
    assert all(r["plugins"][str(plugin_dir / "reverse.py")] for r in rows)
    assert "my-center" in (out / "report.md").read_text()


@pytest.mark.slow
def test_an_installed_entry_point_objective_and_task_run_on_two_workers(installed_dist, tmp_path):
    """No --include: the objective and the task come from an installed distribution's entry points, in the
    driver and in each spawned worker."""
    from jepa_audit.audit import run_audit

    cfg = load_config("smoke", None, [*TINY, "data.task=ep-reverse", "audit.methods=[ce, ep-center]",
                                      f"cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    assert not cfg.plugins
    obj = "entry point ep-center = jepa_audit_ep_demo (jepa-audit-ep-demo)"
    task = "entry point ep-reverse = jepa_audit_ep_demo_task (jepa-audit-ep-demo)"
    assert origin_of("ep-center") == obj and {obj, task} <= set(cfg.plugins_loaded)
    out = tmp_path / "ep"
    assert run_audit(cfg, out, workers=2, stream=io.StringIO(), live=False) == 0
    rows = _rows(out)
    assert {r["task"] for r in rows} == {"ep-reverse"} and all(r["metrics"]["n_test"] == 40 for r in rows)
    mine = next(r for r in rows if r["method"] == "ep-center")
    assert set(mine["plugins"]) == {obj, task}
    assert "ep-center" in (out / "report.md").read_text()


def test_report_and_the_other_commands_take_include(plugin_dir, tmp_path):
    """``report DIR --include`` (fake cells of a plugin grid: no training); a broken --include stops report,
    train, eval, data stats, aux calibrate and bench with the same one line."""
    from _fake_cells import fast_cell
    from jepa_audit.audit import run_audit

    cfg = load_config(None, None, ["audit.methods=[ce, my-center]", "audit.seeds=[82, 23, 37]"],
                      includes=[plugin_dir])  # fmt: skip
    out = tmp_path / "grid"
    assert run_audit(cfg, out, workers=1, cell_fn=fast_cell, report=False, stream=io.StringIO(), live=False) == 0
    r = runner.invoke(app, ["report", str(out), "--include", str(plugin_dir), "--no-item-logit"])
    assert r.exit_code == 0, r.output
    assert "my-center" in (out / "report.md").read_text()

    bad = _write(tmp_path / "bad", "bad.py", "raise RuntimeError('boom')\n")
    for cmd in (["report", str(out)], ["train"], ["eval", str(tmp_path)], ["data", "stats"],
                ["aux", "calibrate", "T1"], ["bench"], ["aux", "check", "T1"]):  # fmt: skip
        r = runner.invoke(app, [*cmd, "--include", str(bad)])
        assert r.exit_code == 2, (cmd, r.output)
        assert f"plugin {bad}: failed to import: RuntimeError: boom (line 1)" in r.output.replace("\n", ""), cmd
