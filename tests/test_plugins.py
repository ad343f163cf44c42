"""The plugin manager: discovery, blocklist, failures, conflicts and hook calls.

Plugins here are real installed distributions (a ``*.dist-info`` folder with
``entry_points.txt`` beside the module) written to a temporary folder, so the manager
goes through ``importlib.metadata`` exactly as for pip-installed plugins; only the
listing is narrowed to that folder so the tests do not depend on what else is installed.
"""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from acekit import cli
from acekit.ir import OPS, Graph, OpSchema, TensorType
from acekit.passes import Pass, PassResult, Pipeline
from acekit.plugin import (
    FailedPlugin,
    PluginConflictError,
    PluginInfo,
    PluginManager,
    PluginRegistrationError,
    Registry,
    get_plugin_manager,
    get_registry,
    hookimpl,
    hookspecs,
    manager,
    reset_plugins,
)

# -- helpers -----------------------------------------------------------------------------------


def _entry_points_under(root: Path) -> list[EntryPoint]:
    found = [
        ep
        for dist in distributions(path=[str(root)])
        for ep in dist.entry_points
        if ep.group == "acekit"
    ]
    return sorted(found, key=lambda ep: ep.name)


@attrs.define
class FakeSite:
    """A folder on sys.path holding plugin distributions written by a test."""

    root: Path
    modules: list[str] = attrs.field(factory=list)

    def install(
        self,
        distribution: str,
        plugins: dict[str, str],
        version: str = "1.0",
        names: dict[str, str] | None = None,
    ) -> None:
        """Write ``distribution`` with a module per plugin (``plugin_x`` is plugin ``x``)."""
        entries = []
        for module, source in plugins.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)
            name = (names or {}).get(module, module.removeprefix("plugin_"))
            entries.append(f"{name} = {module}\n")
        info = self.root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text("[acekit]\n" + "".join(entries))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    """Plugins installed for this test only, and nothing else."""
    root = tmp_path / "site"
    root.mkdir()
    fake = FakeSite(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(manager, "list_entry_points", lambda: _entry_points_under(root))
    monkeypatch.delenv("ACEKIT_DISABLE_PLUGINS", raising=False)
    reset_plugins()
    yield fake
    reset_plugins()
    for module in fake.modules:
        sys.modules.pop(module, None)


def _loaded(site: FakeSite) -> PluginManager:
    reset_plugins()
    return get_plugin_manager()


GOOD = """
    import attrs
    from typing import ClassVar
    from acekit.ir import AttrSpec, OpSchema
    from acekit.passes import Pass, PassResult
    from acekit.plugin import hookimpl

    @attrs.frozen
    class Noop(Pass):
        name: ClassVar[str] = "good-noop"
        summary: ClassVar[str] = "does nothing"
        def run(self, graph):
            return PassResult(graph, modified=False)

    class Parser:
        name = "good-parser"
        summary = "parses nothing"
        def parse(self, model, example_inputs):
            raise NotImplementedError

    class Quantizer:
        name = "good-ptq"
        summary = "quantizes nothing"

    class Target:
        name = "good-target"
        title = "Good Target"
        summary = "exports nothing"
        def export(self, graph, path, options):
            raise NotImplementedError

    @hookimpl
    def acekit_register_ops(registry):
        registry.add_op(OpSchema("good_op", ("input",), {"k": AttrSpec("int")}))

    @hookimpl
    def acekit_register_parsers(registry):
        registry.add_parser(Parser())

    @hookimpl
    def acekit_register_passes(registry):
        registry.add_pass(Noop)

    @hookimpl
    def acekit_register_quantizers(registry):
        registry.add_quantizer(Quantizer())

    @hookimpl
    def acekit_register_targets(registry):
        registry.add_target(Target())

    @hookimpl
    def acekit_register_pipeline_presets(registry):
        registry.add_preset("good-preset", "good-noop,good-noop", summary="twice nothing")
"""


def _pass_plugin(pass_name: str) -> str:
    return textwrap.dedent(f"""
        from typing import ClassVar
        from acekit.passes import Pass, PassResult
        from acekit.plugin import hookimpl

        class P(Pass):
            name: ClassVar[str] = {pass_name!r}
            def run(self, graph):
                return PassResult(graph, modified=False)

        @hookimpl
        def acekit_register_passes(registry):
            registry.add_pass(P)
    """)


def _small_graph() -> Graph:
    graph = Graph("small")
    x = graph.add_input("x", TensorType(torch.float32, (1, 4)))
    identity = graph.add_node("identity", [x])
    relu = graph.add_node("relu", [identity.output])
    graph.set_outputs([relu.output])
    return graph


@attrs.frozen
class CountNodes(Pass):
    """A pass for the tests: counts nodes, changes nothing."""

    name = "test-count-nodes"

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, modified=False, stats={"nodes": len(graph)})


# -- discovery and registration -----------------------------------------------------------------


def test_entry_point_plugin_registers_every_kind(site: FakeSite) -> None:
    site.install("acekit-good", {"plugin_good": GOOD}, version="2.3")
    assert "good_op" not in OPS

    pm = _loaded(site)

    assert pm.failed == ()
    (info,) = pm.plugins
    assert (info.name, info.distribution, info.version, info.module) == (
        "good",
        "acekit-good",
        "2.3",
        "plugin_good",
    )
    assert info.registered == {
        "ops": ["good_op"],
        "parsers": ["good-parser"],
        "passes": ["good-noop"],
        "quantizers": ["good-ptq"],
        "targets": ["good-target"],
        "presets": ["good-preset"],
    }
    registry = get_registry()
    assert registry.passes["good-noop"].summary == "does nothing"
    assert registry.parsers["good-parser"].summary == "parses nothing"
    assert registry.quantizers["good-ptq"].name == "good-ptq"
    assert registry.targets["good-target"].title == "Good Target"
    assert registry.presets["good-preset"] == "good-noop,good-noop"
    assert registry.summary("presets", "good-preset") == "twice nothing"
    assert registry.owner("targets", "good-target") is info
    assert "good_op" in registry.ops and registry.ops is OPS
    assert [p.name for p in Pipeline.from_spec("good-preset").flatten()] == ["good-noop"] * 2

    reset_plugins()
    assert "good_op" not in OPS, "reset must take plugin ops out of the verifier's table"


def test_registry_views_are_read_only(site: FakeSite) -> None:
    site.install("acekit-good", {"plugin_good": GOOD})
    registry = _loaded(site).registry
    with pytest.raises(TypeError):
        registry.passes["x"] = CountNodes  # type: ignore[index]


@pytest.mark.parametrize("blocked", ["good", "acekit-good", " Acekit_Good ", "other,good"])
def test_disabled_plugins_are_not_loaded(
    site: FakeSite, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    site.install("acekit-good", {"plugin_good": GOOD})
    site.install("acekit-other-pass", {"plugin_kept": _pass_plugin("kept-pass")})
    monkeypatch.setenv("ACEKIT_DISABLE_PLUGINS", blocked)

    pm = _loaded(site)

    assert [d.name for d in pm.disabled] == ["good"]
    assert pm.disabled[0].distribution == "acekit-good"
    assert "plugin_good" not in sys.modules
    assert "good-noop" not in pm.registry.passes
    assert "kept-pass" in pm.registry.passes


def test_plugin_failing_to_import_is_reported_and_others_load(
    site: FakeSite, caplog: pytest.LogCaptureFixture
) -> None:
    site.install("acekit-broken", {"plugin_broken": "import acekit_no_such_module\n"}, "0.9")
    site.install("acekit-good", {"plugin_good": GOOD})

    with caplog.at_level(logging.WARNING, logger="acekit"):
        pm = _loaded(site)
    logs = [
        {
            **getattr(r, "acekit_event", {}),
            "log_level": r.levelname.lower(),
            "event": r.getMessage(),
        }
        for r in caplog.records
    ]

    assert pm.failed == (
        FailedPlugin(
            "broken",
            "acekit-broken",
            "0.9",
            "import failed: ModuleNotFoundError: No module named 'acekit_no_such_module'",
        ),
    )
    assert [p.name for p in pm.plugins] == ["good"]
    assert "good-noop" in pm.registry.passes
    (event,) = [e for e in logs if e["log_level"] == "warning"]
    assert event["plugin"] == "broken" and event["distribution"] == "acekit-broken"
    assert "failed to load" in event["event"]


def test_missing_builtin_module_is_recorded_not_fatal(
    site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What happens when a built-in such as acekit_cleanup is declared but absent.
    ep = EntryPoint("cleanup", "acekit_missing_builtin", "acekit")
    monkeypatch.setattr(manager, "list_entry_points", lambda: [ep])
    pm = _loaded(site)
    (failed,) = pm.failed
    assert failed.name == "cleanup" and "acekit_missing_builtin" in failed.reason


def test_module_without_hooks_is_reported(site: FakeSite) -> None:
    site.install("acekit-empty", {"plugin_empty": "VALUE = 1\n"})
    (failed,) = _loaded(site).failed
    assert failed.name == "empty"
    assert "defines no acekit hook implementations" in failed.reason


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            """
            from acekit.plugin import hookimpl

            @hookimpl
            def acekit_pass_stat(pass_obj, graph):
                pass
            """,
            "unknown hook 'acekit_pass_stat' (did you mean 'acekit_pass_start'?)",
        ),
        (
            # Unmarked acekit_* functions count as implementations, so typos surface.
            """
            def acekit_register_passs(registry):
                pass
            """,
            "unknown hook 'acekit_register_passs' (did you mean 'acekit_register_passes'?)",
        ),
        (
            """
            from acekit.plugin import hookimpl

            @hookimpl
            def acekit_pass_end(pass_obj, graph, result, extra):
                pass
            """,
            "Argument(s) {'extra'} are declared in the hookimpl but can not be found",
        ),
    ],
    ids=["unknown-hook", "unmarked-typo", "bad-arguments"],
)
def test_plugin_failing_validation_is_reported(site: FakeSite, source: str, expected: str) -> None:
    site.install("acekit-invalid", {"plugin_invalid": source}, "0.1")
    site.install("acekit-good", {"plugin_good": GOOD})

    pm = _loaded(site)

    (failed,) = pm.failed
    assert (failed.name, failed.distribution, failed.version) == (
        "invalid",
        "acekit-invalid",
        "0.1",
    )
    assert expected in failed.reason
    assert [p.name for p in pm.plugins] == ["good"]
    assert "invalid" not in {name for name, _ in pm.pluggy_manager.list_name_plugin()}


def test_registration_error_removes_everything_the_plugin_registered(site: FakeSite) -> None:
    source = _pass_plugin("half-pass") + textwrap.dedent(
        """
        from acekit.ir import OpSchema

        @hookimpl
        def acekit_register_ops(registry):
            registry.add_op(OpSchema("half_op", ("input",)))

        @hookimpl
        def acekit_register_targets(registry):
            registry.add_target(object())
        """
    )
    site.install("acekit-half", {"plugin_half": source})
    site.install("acekit-good", {"plugin_good": GOOD})

    pm = _loaded(site)

    (failed,) = pm.failed
    assert failed.name == "half"
    assert "acekit_register_targets failed: PluginRegistrationError" in failed.reason
    assert "half-pass" not in pm.registry.passes
    assert "half_op" not in OPS
    assert "good-target" in pm.registry.targets


def test_registration_hook_cannot_reenter_the_manager(site: FakeSite) -> None:
    source = """
        from acekit.plugin import get_registry, hookimpl

        @hookimpl
        def acekit_register_passes(registry):
            get_registry()
    """
    site.install("acekit-reentrant", {"plugin_reentrant": source})
    (failed,) = _loaded(site).failed
    assert "must use the registry it receives" in failed.reason


# -- conflicts -----------------------------------------------------------------------------------


def test_same_pass_name_from_two_distributions_is_a_conflict(site: FakeSite) -> None:
    site.install("acekit-first", {"plugin_first": _pass_plugin("dup-pass")}, "1.0")
    site.install("acekit-second", {"plugin_second": _pass_plugin("dup-pass")}, "2.0")
    ops_before = set(OPS)

    with pytest.raises(PluginConflictError) as caught:
        get_plugin_manager()

    message = str(caught.value)
    assert "pass 'dup-pass' is registered by two plugins" in message
    assert "'first' (distribution acekit-first 1.0)" in message
    assert "'second' (distribution acekit-second 2.0)" in message
    assert "ACEKIT_DISABLE_PLUGINS=second" in message
    assert caught.value.first.distribution == "acekit-first"
    assert caught.value.second.distribution == "acekit-second"
    assert set(OPS) == ops_before
    # Not cached: the configuration error is raised again until it is fixed.
    with pytest.raises(PluginConflictError):
        get_plugin_manager()


def test_same_plugin_name_from_two_distributions_is_a_conflict(site: FakeSite) -> None:
    site.install("acekit-one", {"plugin_one": _pass_plugin("one-pass")}, names={"plugin_one": "x"})
    site.install("acekit-two", {"plugin_two": _pass_plugin("two-pass")}, names={"plugin_two": "x"})
    with pytest.raises(PluginConflictError) as caught:
        get_plugin_manager()
    assert "two plugins are called 'x'" in str(caught.value)
    assert "distribution acekit-one 1.0" in str(caught.value)
    assert "distribution acekit-two 1.0" in str(caught.value)


def test_conflict_goes_away_when_one_plugin_is_disabled(
    site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.install("acekit-first", {"plugin_first": _pass_plugin("dup-pass")})
    site.install("acekit-second", {"plugin_second": _pass_plugin("dup-pass")})
    monkeypatch.setenv("ACEKIT_DISABLE_PLUGINS", "acekit-second")
    assert get_registry().owner("passes", "dup-pass").distribution == "acekit-first"


def test_preset_named_like_another_plugins_pass_is_a_conflict(site: FakeSite) -> None:
    preset = """
        from acekit.plugin import hookimpl

        @hookimpl
        def acekit_register_pipeline_presets(registry):
            registry.add_preset("dup-pass", "other-pass")
    """
    site.install("acekit-passes", {"plugin_passes": _pass_plugin("dup-pass")})
    site.install("acekit-presets", {"plugin_presets": preset})
    with pytest.raises(PluginConflictError, match="has the name of a pass of plugin 'passes'"):
        get_plugin_manager()


def test_cli_reports_a_conflict(site: FakeSite, capsys: pytest.CaptureFixture[str]) -> None:
    site.install("acekit-first", {"plugin_first": _pass_plugin("dup-pass")})
    site.install("acekit-second", {"plugin_second": _pass_plugin("dup-pass")})
    assert cli.main(["plugins"]) == 1
    err = capsys.readouterr().err
    assert "distribution acekit-first" in err and "distribution acekit-second" in err


# -- in-process plugins and the registrar ---------------------------------------------------


def test_register_plugin_in_process_and_unregister() -> None:
    pm = PluginManager(Registry())

    class Plugin:
        @hookimpl
        def acekit_register_passes(self, registry: Any) -> None:
            registry.add_pass(CountNodes)

    info = pm.register_plugin(Plugin(), "mine")
    assert info.distribution is None and info.registered == {"passes": ["test-count-nodes"]}
    assert pm.registry.owner("passes", "test-count-nodes") is info
    result = Pipeline.from_spec("test-count-nodes", pm.registry).run(_small_graph(), hooks=pm.hook)
    assert result.results[0][1].stats == {"nodes": 4}

    pm.unregister_plugin("mine")
    assert "test-count-nodes" not in pm.registry.passes
    assert not pm.pluggy_manager.has_plugin("mine")


def test_register_plugin_raises_and_leaves_nothing_behind() -> None:
    pm = PluginManager(Registry())

    class Bad:
        @hookimpl
        def acekit_register_passes(self, registry: Any) -> None:
            registry.add_pass(CountNodes)
            registry.add_pass(int)

    with pytest.raises(PluginRegistrationError, match="subclass of acekit.passes.Pass"):
        pm.register_plugin(Bad(), "bad")
    assert pm.plugins == () and "test-count-nodes" not in pm.registry.passes
    assert not pm.pluggy_manager.has_plugin("bad")


def test_in_process_conflict_names_both_plugins() -> None:
    pm = PluginManager(Registry())

    class Plugin:
        @hookimpl
        def acekit_register_passes(self, registry: Any) -> None:
            registry.add_pass(CountNodes)

    pm.register_plugin(Plugin(), "one", distribution="dist-one", version="1")
    with pytest.raises(PluginConflictError, match="registered in-process"):
        pm.register_plugin(Plugin(), "two")
    assert [p.name for p in pm.plugins] == ["one"]


@attrs.frozen
class _Thing:
    name: Any = "thing"
    title: Any = "Thing"
    summary: Any = ""

    def parse(self, model: Any, example_inputs: Any) -> Graph:
        raise NotImplementedError

    def export(self, graph: Graph, path: Any, options: Any) -> Path:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (lambda r: r.add_pass(Pass), "needs a non-empty string 'name'"),
        (lambda r: r.add_pass(CountNodes()), "takes a subclass of acekit.passes.Pass"),
        (lambda r: r.add_target(_Thing(title="")), "needs a non-empty 'title'"),
        (lambda r: r.add_target(_Thing(name="two words")), "is not valid"),
        (lambda r: r.add_target(_Thing(summary=None)), "needs a string 'summary'"),
        (lambda r: r.add_parser(object()), "needs a non-empty string 'name'"),
        (lambda r: r.add_quantizer(_Thing(name="")), "needs a non-empty string 'name'"),
        (lambda r: r.add_preset("p", "a,,b"), "pipeline preset 'p': expected a pass name"),
        (lambda r: r.add_preset("p", "a,p"), "names itself"),
        (lambda r: r.add_op("relu"), "takes an OpDef"),
        (lambda r: r.add_op(OpSchema("relu", ("input",))), "already in the kernel's op table"),
        (lambda r: [r.add_pass(CountNodes), r.add_pass(CountNodes)], "twice"),
        (
            lambda r: [r.add_pass(CountNodes), r.add_preset("test-count-nodes", "x")],
            "both as a pass and as a pipeline preset",
        ),
    ],
)
def test_registrar_validates(register: Callable[[Any], Any], message: str) -> None:
    pm = PluginManager(Registry())

    class Plugin:
        @hookimpl
        def acekit_register_pipeline_presets(self, registry: Any) -> None:
            register(registry)

    with pytest.raises(PluginRegistrationError, match=message):
        pm.register_plugin(Plugin(), "p")


def test_registrar_accepts_duck_typed_objects() -> None:
    registry = Registry()
    registrar = registry.registrar(PluginInfo("p", None, None, "m"))
    assert registrar.add_target(_Thing()) == _Thing()
    assert registrar.add_parser(_Thing(name="parser")).name == "parser"
    assert registry.owner("targets", "thing").name == "p"
    with pytest.raises(KeyError, match="no plugin registered a parser called 'nope'"):
        registry.owner("parsers", "nope")


# -- hooks -----------------------------------------------------------------------------------------


def test_lifecycle_hooks_fire_during_pipeline_run(
    site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, int, bool | None]] = []

    class Recorder:
        @hookimpl
        def acekit_pass_start(self, pass_obj: Pass, graph: Graph) -> None:
            calls.append(("start", pass_obj.name, len(graph), None))

        @hookimpl
        def acekit_pass_end(self, pass_obj: Pass, graph: Graph, result: PassResult) -> None:
            assert result.graph is graph
            calls.append(("end", pass_obj.name, len(graph), result.modified))

    site.install("acekit-good", {"plugin_good": GOOD})
    pm = get_plugin_manager()
    pm.register_plugin(Recorder(), "recorder")

    Pipeline([CountNodes(), Pipeline.from_spec("good-preset")]).run(_small_graph(), verify=True)

    assert calls == [
        ("start", "test-count-nodes", 4, None),
        ("end", "test-count-nodes", 4, False),
        ("start", "good-noop", 4, None),
        ("end", "good-noop", 4, False),
        ("start", "good-noop", 4, None),
        ("end", "good-noop", 4, False),
    ]


def test_typed_facade_fires_pass_hooks() -> None:
    pm = PluginManager(Registry())
    seen: list[str] = []

    class Recorder:
        @hookimpl
        def acekit_pass_start(self, pass_obj: Pass) -> None:
            seen.append(f"start {pass_obj.name}")

        @hookimpl
        def acekit_pass_end(self, result: PassResult) -> None:
            seen.append(f"end {result.stats['nodes']}")

    pm.register_plugin(Recorder(), "recorder")
    graph = _small_graph()
    pm.pass_start(pass_obj=CountNodes(), graph=graph)
    pm.pass_end(pass_obj=CountNodes(), graph=graph, result=CountNodes()(graph))
    assert seen == ["start test-count-nodes", "end 4"]


def test_choose_parser_is_firstresult() -> None:
    pm = PluginManager(Registry())
    asked: list[str] = []

    class Declines:
        @hookimpl(tryfirst=True)
        def acekit_choose_parser(self, model: Any, example_inputs: Any) -> None:
            asked.append("declines")

    class Answers:
        @hookimpl
        def acekit_choose_parser(self, model: Any) -> str:
            asked.append("answers")
            return "fx"

    class NeverAsked:
        @hookimpl(trylast=True)
        def acekit_choose_parser(self, model: Any) -> str:
            asked.append("never")
            return "torchscript"

    for plugin in (Declines(), Answers(), NeverAsked()):
        pm.register_plugin(plugin, type(plugin).__name__)

    assert pm.choose_parser(torch.nn.ReLU(), (torch.zeros(1),)) == "fx"
    assert asked == ["declines", "answers"]
    assert vars(hookspecs.acekit_choose_parser)["acekit_spec"]["firstresult"] is True


def test_choose_parser_without_answer_is_none() -> None:
    assert PluginManager(Registry()).choose_parser(torch.nn.ReLU(), ()) is None


def test_calibration_step_hook() -> None:
    spec = hookspecs.acekit_calibration_step
    assert list(inspect.signature(spec).parameters) == ["step", "total", "graph"]
    assert vars(spec)["acekit_spec"]["firstresult"] is False
    pm = PluginManager(Registry())
    steps: list[tuple[int, int | None, str]] = []

    class Progress:
        @hookimpl
        def acekit_calibration_step(self, step: int, total: int | None, graph: Graph) -> None:
            steps.append((step, total, graph.name))

    pm.register_plugin(Progress(), "progress")
    graph = _small_graph()
    for step in (1, 2):
        pm.calibration_step(step=step, total=2, graph=graph)
    pm.calibration_step(step=3, total=None, graph=graph)
    assert steps == [(1, 2, "small"), (2, 2, "small"), (3, None, "small")]


def test_export_done_hook(tmp_path: Path) -> None:
    spec = hookspecs.acekit_export_done
    assert list(inspect.signature(spec).parameters) == ["path", "target", "graph"]
    assert vars(spec)["acekit_spec"]["firstresult"] is False
    pm = PluginManager(Registry())
    done: list[tuple[Path, str, str]] = []

    class Tracker:
        @hookimpl
        def acekit_export_done(self, path: Path, target: Any, graph: Graph) -> None:
            done.append((path, target.name, graph.name))

    pm.register_plugin(Tracker(), "tracker")
    pm.export_done(path=tmp_path / "model.onnx", target=_Thing(), graph=_small_graph())
    assert done == [(tmp_path / "model.onnx", "thing", "small")]


# -- built-ins, import hygiene, CLI --------------------------------------------------------------


def test_builtin_onnxruntime_target_comes_through_the_entry_point_group() -> None:
    builtin = [ep for ep in manager.list_entry_points() if ep.name == "onnxruntime"]
    assert [(ep.value, ep.dist.name if ep.dist else None) for ep in builtin] == [
        ("acekit_onnxruntime", "acekit")
    ], "acekit must be installed (pip install -e .) for its built-in plugins to be found"
    pm = PluginManager(Registry())
    try:
        pm.load_entry_points(builtin)
        target = pm.registry.targets["onnxruntime"]
        assert target.title == "ONNX Runtime (CPU)" and target.summary
        assert pm.registry.owner("targets", "onnxruntime").distribution == "acekit"
        assert target.quantization_rules({}).activation.signed is False
    finally:
        pm.close()


def test_importing_acekit_loads_no_plugin() -> None:
    code = (
        "import sys, acekit, acekit.plugin, acekit.passes, acekit.cli\n"
        "from acekit.plugin import manager\n"
        "assert manager._manager is None\n"
        "assert not [m for m in sys.modules if m.startswith('acekit_')], sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("acekit ") and f"torch {torch.__version__.split('+')[0]}" in out
    assert "Python 3." in out


def test_cli_plugins_lists_plugins_and_failures(
    site: FakeSite, capsys: pytest.CaptureFixture[str]
) -> None:
    site.install("acekit-good", {"plugin_good": GOOD}, "2.3")
    site.install("acekit-broken", {"plugin_broken": "raise RuntimeError('boom')\n"}, "0.9")

    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "good    acekit-good   2.3      parsers: good-parser\n" in out
    for kind in ("passes: good-noop", "presets: good-preset", "targets: good-target"):
        assert f"\n{' ' * 31}{kind}\n" in out
    assert "quantizers: good-ptq" in out and "ops: good_op" in out
    assert "Failed to load:\n  broken (distribution acekit-broken 0.9): " in out
    assert "RuntimeError: boom" in out

    assert cli.main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plugins"][0]["registers"]["passes"] == ["good-noop"]
    assert data["failed"][0]["name"] == "broken"
    assert data["failed"][0]["distribution"] == "acekit-broken"
