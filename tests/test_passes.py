"""Passes and pipelines: spec strings, running, verification and error reports."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import pytest

from acekit.ir import Graph, GraphError
from acekit.passes import (
    Pass,
    PassBugError,
    PassContractError,
    PassError,
    PassFailedError,
    PassResult,
    Pipeline,
    PipelineSpecError,
    UnknownPassError,
)
from tests.ir_builders import vit_like_graph


@attrs.frozen
class CountOps(Pass):
    """Counts nodes of one op; changes nothing."""

    name: ClassVar[str] = "count-ops"
    op: str = "linear"

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, False, {"count": sum(n.op == self.op for n in graph.nodes)})


@attrs.frozen
class DropDropout(Pass):
    """Removes dropout nodes (a small real pass for the tests)."""

    name: ClassVar[str] = "drop-dropout"
    limit: int = attrs.field(default=-1, validator=attrs.validators.ge(-1))
    scale: float = 1.0

    def run(self, graph: Graph) -> PassResult:
        removed = 0
        for node in graph.nodes:
            if node.op == "dropout" and removed != self.limit:
                graph.replace_all_uses(node.output, node.inputs[0])
                graph.erase(node)
                removed += 1
        return PassResult(graph, removed > 0, {"removed": removed})


@attrs.frozen
class FailOnGelu(Pass):
    """Raises on the first gelu node, naming it."""

    name: ClassVar[str] = "fail-on-gelu"

    def run(self, graph: Graph) -> PassResult:
        for node in graph.nodes:
            if node.op == "gelu":
                raise PassError("cannot handle gelu", node)
        return PassResult(graph, False)


@attrs.frozen
class BreakGraph(Pass):
    """A buggy pass: leaves an attribute of the wrong type."""

    name: ClassVar[str] = "break-graph"

    def run(self, graph: Graph) -> PassResult:
        node = next(n for n in graph.nodes if n.op == "gelu")
        node.attrs["approximate"] = 3
        return PassResult(graph, True)


@attrs.frozen
class ReturnsNothing(Pass):
    """Breaks the contract by returning None."""

    name: ClassVar[str] = "returns-nothing"

    def run(self, graph: Graph) -> PassResult:
        return None  # type: ignore[return-value]


@attrs.frozen
class NeedsLinear(Pass):
    """Requires at least one linear node."""

    name: ClassVar[str] = "needs-linear"

    def requires(self, graph: Graph) -> None:
        if not any(n.op == "linear" for n in graph.nodes):
            raise ValueError("needs a linear node")

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, False)


@attrs.frozen
class FakeRegistry:
    passes: Mapping[str, type[Pass]]
    presets: Mapping[str, str]


REGISTRY = FakeRegistry(
    {
        p.name: p
        for p in (CountOps, DropDropout, FailOnGelu, BreakGraph, ReturnsNothing, NeedsLinear)
    },
    {"tidy": "drop-dropout,count-ops{op=gelu}"},
)


class RecordingHooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def acekit_pass_start(self, pass_obj: Pass, graph: Graph) -> None:
        self.calls.append(("start", pass_obj.name))

    def acekit_pass_end(self, pass_obj: Pass, graph: Graph, result: PassResult) -> None:
        self.calls.append(("end", pass_obj.name))


def run(pipeline: Pipeline, graph: Graph, **kwargs: Any) -> Any:
    return pipeline.run(graph, hooks=RecordingHooks(), **kwargs)


@pytest.mark.parametrize(
    "spec",
    [
        "drop-dropout",
        "drop-dropout,count-ops",
        "count-ops{op=gelu},drop-dropout{limit=2,scale=1e-5}",
        "tidy,count-ops",
        'count-ops{op="add,mul"}',
    ],
)
def test_spec_strings_print_back_identically(spec: str) -> None:
    assert Pipeline.from_spec(spec, REGISTRY).spec() == spec


def test_python_pipelines_print_their_non_default_options() -> None:
    pipeline = Pipeline([DropDropout(limit=3), CountOps(), CountOps(op="add,mul")])
    assert pipeline.spec() == 'drop-dropout{limit=3},count-ops,count-ops{op="add,mul"}'
    assert Pipeline.from_spec(pipeline.spec(), REGISTRY) == pipeline


def test_spec_options_are_typed_and_validated() -> None:
    pipeline = Pipeline.from_spec("drop-dropout{limit=2,scale=3}", REGISTRY)
    (step,) = pipeline.flatten()
    assert step == DropDropout(limit=2, scale=3.0)
    with pytest.raises(PipelineSpecError, match="bad options for pass 'drop-dropout'"):
        Pipeline.from_spec("drop-dropout{limit=-5}", REGISTRY)
    with pytest.raises(PipelineSpecError, match="has no option 'lmit'.*limit, scale"):
        Pipeline.from_spec("drop-dropout{lmit=2}", REGISTRY)


def test_presets_expand_but_print_as_their_name() -> None:
    pipeline = Pipeline.from_spec("tidy", REGISTRY)
    assert [p.name for p in pipeline.flatten()] == ["drop-dropout", "count-ops"]
    assert pipeline.spec() == "tidy"


def test_unknown_pass_lists_close_matches_and_installed_passes() -> None:
    with pytest.raises(UnknownPassError) as caught:
        Pipeline.from_spec("drop-dropuot", REGISTRY)
    message = str(caught.value)
    assert "unknown pass 'drop-dropuot'" in message
    assert "Did you mean: drop-dropout" in message
    assert "installed passes and presets: break-graph, count-ops" in message


@pytest.mark.parametrize(
    ("spec", "column", "what"),
    [
        ("drop-dropout,,count-ops", 14, "expected a pass name"),
        ("drop-dropout{limit}", 19, "expected '='"),
        ("drop-dropout{limit=2", 21, "expected ',' or '}'"),
        ("drop-dropout count-ops", 14, "expected ',' between passes"),
        ("count-ops{op=a,op=b}", 16, "option 'op' given twice"),
        ("", 1, "empty pipeline spec"),
    ],
)
def test_malformed_spec_points_at_the_column(spec: str, column: int, what: str) -> None:
    with pytest.raises(PipelineSpecError) as caught:
        Pipeline.from_spec(spec, REGISTRY)
    assert caught.value.column + 1 == column
    assert what in str(caught.value)
    assert f"at column {column}" in str(caught.value)
    assert str(caught.value).splitlines()[-1] == "  " + " " * (column - 1) + "^"


def test_run_applies_passes_in_order_with_stats_hooks_and_one_log_event_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    graph = vit_like_graph(blocks=2)
    hooks = RecordingHooks()
    pipeline = Pipeline.from_spec(
        "count-ops{op=dropout},drop-dropout,count-ops{op=dropout}", REGISTRY
    )
    with caplog.at_level(logging.DEBUG, logger="acekit"):
        result = pipeline.run(graph, verify=True, hooks=hooks)
    logs = [getattr(record, "acekit_event", {}) for record in caplog.records]
    assert [stats.stats for _, stats in result.results] == [
        {"count": 10},
        {"removed": 10},
        {"count": 0},
    ]
    assert result.modified
    assert hooks.calls == [
        ("start", "count-ops"),
        ("end", "count-ops"),
        ("start", "drop-dropout"),
        ("end", "drop-dropout"),
        ("start", "count-ops"),
        ("end", "count-ops"),
    ]
    events = [e for e in logs if e.get("pass_name")]
    assert [e["pass_name"] for e in events] == ["count-ops", "drop-dropout", "count-ops"]
    assert events[1]["removed"] == 10 and events[1]["modified"] is True


def test_failing_pass_names_itself_the_node_and_what_ran_before() -> None:
    pipeline = Pipeline.from_spec("count-ops,drop-dropout,fail-on-gelu", REGISTRY)
    with pytest.raises(PassFailedError) as caught:
        run(pipeline, vit_like_graph(blocks=1))
    error = caught.value
    assert error.pass_name == "fail-on-gelu"
    assert error.ran_before == ("count-ops", "drop-dropout")
    assert error.node is not None
    assert "Subgraph: 'VisionTransformer/encoder/layers/encoder_layer_0/ln_1'" in str(error)
    assert "passes that ran before it: count-ops, drop-dropout" in str(error)


def test_graph_errors_inside_a_pass_are_reported_with_the_pass() -> None:
    @attrs.frozen
    class EraseUsed(Pass):
        name: ClassVar[str] = "erase-used"

        def run(self, graph: Graph) -> PassResult:
            graph.erase(graph.node("x"))
            return PassResult(graph, True)

    with pytest.raises(PassFailedError, match="pass 'erase-used' failed") as caught:
        run(Pipeline([EraseUsed()]), vit_like_graph(blocks=1))
    assert isinstance(caught.value.__cause__, GraphError)


def test_pass_producing_an_invalid_graph_is_reported_as_its_bug() -> None:
    with pytest.raises(PassBugError) as caught:
        run(
            Pipeline.from_spec("count-ops,break-graph", REGISTRY),
            vit_like_graph(blocks=1),
            verify=True,
        )
    message = str(caught.value)
    assert "pass 'break-graph' produced an invalid graph; this is a bug in pass" in message
    assert "attribute 'approximate' must be str" in message
    assert caught.value.node is not None and caught.value.node.op == "gelu"
    assert caught.value.ran_before == ("count-ops",)
    # Without verification the broken graph passes through unchecked.
    run(Pipeline.from_spec("break-graph", REGISTRY), vit_like_graph(blocks=1), verify=False)


def test_pass_contract_return_type_and_requires() -> None:
    with pytest.raises(PassFailedError) as caught:
        run(Pipeline([ReturnsNothing()]), vit_like_graph(blocks=1))
    assert isinstance(caught.value.__cause__, PassContractError)
    graph = Graph("empty")
    graph.set_outputs([])
    with pytest.raises(PassFailedError, match="needs a linear node"):
        run(Pipeline([NeedsLinear()]), graph)


def test_passes_keep_no_state_between_runs() -> None:
    pipeline = Pipeline([DropDropout()])
    first = run(pipeline, vit_like_graph(blocks=1))
    second = run(pipeline, vit_like_graph(blocks=1))
    assert first.results[0][1].stats == second.results[0][1].stats == {"removed": 5}


def test_pipeline_rejects_steps_that_are_not_passes() -> None:
    with pytest.raises(TypeError, match="must be a Pass or Pipeline"):
        Pipeline(["drop-dropout"])  # type: ignore[list-item]
