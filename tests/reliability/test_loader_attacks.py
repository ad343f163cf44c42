"""Hand-crafted attacks on acekit's file loaders: refused with acekit's own error, never run.

Each attack damages a valid file (a saved QuantizedModule for ``acekit.load``, a saved
graph for ``acekit.ir.load_graph``) in one field and checks :func:`load_and_use`: the
loader's own error naming the file (and the field), or a model that loads and runs, and
in every case no sentinel file written by injected code.
"""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

import acekit
from acekit.errors import AcekitError, CorruptFileError
from acekit.ir import Graph, GraphFileError, QuantSpec, TensorType, save_graph
from acekit.runtime import CodegenError, to_module
from acekit.runtime.quantized import QuantizedModule, QuantizedModuleFileError
from tests.reliability.loader_files import (
    INPUT_SHAPE,
    compile_tiny,
    hostile_strings,
    load_and_use,
    load_graph_file,
    replaced,
    save_payload,
    string_places,
)

Payload = dict[str, Any]
LOADERS = {"acekit.load": acekit.load, "load_graph": load_graph_file}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> QuantizedModule:
    return compile_tiny(tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="module")
def payloads(compiled: QuantizedModule, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The valid payload of each loader, as ``torch.load`` reads it back."""
    folder = tmp_path_factory.mktemp("valid")
    model = compiled.save(folder / "model.acekit")
    graph = save_graph(compiled.graph, folder / "graph.acekit")
    return {
        "acekit.load": torch.load(model, weights_only=True),
        "load_graph": torch.load(graph, weights_only=True),
    }


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


def _graph(payload: Payload) -> Payload:
    """The graph part of either payload."""
    return payload.get("graph", payload)


def _node(payload: Payload, op: str) -> Payload:
    return next(n for n in _graph(payload)["nodes"] if n["op"] == op)


# -- the valid files ------------------------------------------------------------------------


def test_the_valid_files_load_and_compute_the_same(
    compiled: QuantizedModule, payloads: Any, tmp_path: Path
) -> None:
    x = torch.randn(*INPUT_SHAPE)
    model = acekit.load(save_payload(payloads["acekit.load"], tmp_path / "m.acekit"))
    graph = load_graph_file(save_payload(payloads["load_graph"], tmp_path / "g.acekit"))
    with torch.no_grad():
        expected = compiled(x)
        assert all(torch.equal(a, b) for a, b in zip(model(x), expected, strict=True))
        plain = to_module(compiled.graph)(x)
        assert all(torch.equal(a, b) for a, b in zip(to_module(graph)(x), plain, strict=True))


def test_errors_are_acekit_errors() -> None:
    assert issubclass(QuantizedModuleFileError, CorruptFileError)
    assert issubclass(GraphFileError, CorruptFileError)
    assert issubclass(CorruptFileError, AcekitError)


# -- code in every string field -------------------------------------------------------------


@pytest.mark.parametrize("loader_name", list(LOADERS))
@pytest.mark.parametrize(
    "every_context", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["two", "all"]
)
def test_code_in_any_string_field_never_runs(
    loader_name: str, every_context: bool, payloads: Any, tmp_path: Path, sentinel: Path
) -> None:
    """Every string of the file (values and dict keys), replaced by injected code.

    Each string gets two of the six source contexts (rotating, so each context meets
    every part of the file); the slow variant tries all six everywhere.
    """
    loader, payload = LOADERS[loader_name], payloads[loader_name]
    outcomes: dict[str, int] = {"refused": 0, "loaded": 0}
    loaded_at: set[tuple[Any, ...]] = set()
    places = list(string_places(payload))
    assert len(places) > 50
    texts = hostile_strings(sentinel)
    for i, (where, kind) in enumerate(places):
        chosen = texts if every_context else [texts[i % 6], texts[(i + 3) % 6]]
        for text in chosen:
            damaged = replaced(payload, where, text, key=kind == "key")
            path = save_payload(damaged, tmp_path / "attack.acekit")
            outcome = load_and_use(loader, path, sentinel)
            outcomes[outcome] += 1
            if outcome == "loaded":
                loaded_at.add(tuple(p for p in where if isinstance(p, str)))
    # Only free text (names of the model's source, quant reasons) may hold such strings.
    free_text = {
        ("name",),
        ("nodes", "subgraph"),
        ("nodes", "source_name"),
        ("nodes", "source_location"),
        ("nodes", "outputs", "quant", "reason"),
    }
    allowed = free_text | {("graph", *place) for place in free_text}
    assert loaded_at <= allowed, sorted(loaded_at - allowed)
    assert outcomes["refused"] > outcomes["loaded"]


def test_hostile_free_text_loads_runs_and_exports_harmlessly(
    payloads: Any, tmp_path: Path, sentinel: Path
) -> None:
    text = hostile_strings(sentinel)[2]

    def damage(payload: Payload) -> Payload:
        graph = payload["graph"]
        graph["name"] = text
        for node in graph["nodes"]:
            node["subgraph"] = node["source_name"] = node["source_location"] = text
            for output in node["outputs"]:
                if output["quant"] is not None:
                    output["quant"]["reason"] = text
        return payload

    path = save_payload(damage(dict(payloads["acekit.load"])), tmp_path / "text.acekit")
    model = acekit.load(path)
    with torch.no_grad():
        model(torch.randn(*INPUT_SHAPE))
    exported = model.export(tmp_path / "model.onnx")
    onnx.checker.check_model(str(exported))
    assert not sentinel.exists()


# -- hand-crafted damage --------------------------------------------------------------------


def _set_node(op: str, key: str, value: Any) -> Callable[[Payload], Payload]:
    def damage(payload: Payload) -> Payload:
        _node(payload, op)[key] = value
        return payload

    return damage


def _set_attr(op: str, key: str, value: Any) -> Callable[[Payload], Payload]:
    def damage(payload: Payload) -> Payload:
        _node(payload, op)["attrs"][key] = value
        return payload

    return damage


def _set_quant(op: str, key: str, value: Any) -> Callable[[Payload], Payload]:
    def damage(payload: Payload) -> Payload:
        quant = next(
            o["quant"]
            for n in payload["graph"]["nodes"]
            if n["op"] == op
            for o in n["outputs"]
            if o["quant"] is not None
        )
        quant[key] = value
        return payload

    return damage


def _set_type(op: str, key: str, value: Any) -> Callable[[Payload], Payload]:
    def damage(payload: Payload) -> Payload:
        _node(payload, op)["outputs"][0]["type"][key] = value
        return payload

    return damage


def _rename_tensor(new: str) -> Callable[[Payload], Payload]:
    def damage(payload: Payload) -> Payload:
        graph = payload["graph"]
        node = _node(payload, "parameter")
        graph["tensors"][new] = graph["tensors"].pop(node["attrs"]["ref"])
        node["attrs"]["ref"] = new
        return payload

    return damage


def _set_tensor(tensor: Any) -> Callable[[Payload], Payload]:
    def damage(payload: Payload) -> Payload:
        payload["graph"]["tensors"]["conv.weight"] = tensor
        return payload

    return damage


def _drop(*path: str) -> Callable[[Payload], Payload]:
    def damage(payload: Payload) -> Payload:
        container: Any = payload
        for key in path[:-1]:
            container = container[key]
        del container[path[-1]]
        return payload

    return damage


def _nested(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth):
        value = [value]
    return value


def _shared(width: int, depth: int) -> list[Any]:
    """A list whose pickle is small but whose walk is ``width ** depth`` items long."""
    value: list[Any] = [0] * width
    for _ in range(depth - 1):
        value = [value] * width
    return value


def _first_output(nodes: list[Payload]) -> Payload:
    return nodes[0]["outputs"][0]


def _mutate_graph(fn: Callable[[Payload], None]) -> Callable[[Payload], Payload]:
    def damage(payload: Payload) -> Payload:
        fn(payload["graph"])
        return payload

    return damage


def _nodes(fn: Callable[[list[Payload]], None]) -> Callable[[Payload], Payload]:
    return _mutate_graph(lambda graph: fn(graph["nodes"]))


ATTACKS: dict[str, tuple[Callable[[Payload], Any], str]] = {
    # path traversal and unsafe names
    "ref with ../": (_rename_tensor("../../etc/passwd"), "tensors"),
    "ref with /": (_rename_tensor("conv/weight"), "tensors"),
    "ref with empty part": (_rename_tensor("conv..weight"), "tensors"),
    "ref that is a keyword": (_rename_tensor("conv.class"), "keyword"),
    "ref inside another tensor": (_rename_tensor("fc.weight.x"), "lies inside"),
    "node name with ../": (_set_node("relu", "name", "../relu"), "nodes[6].name"),
    "node name with quote": (_set_node("relu", "name", 'relu"'), "nodes[6].name"),
    "subgraph with ..": (_set_node("relu", "subgraph", "TinyNet/../../etc"), "subgraph"),
    "subgraph with backslash": (_set_node("relu", "subgraph", "a\\b"), "subgraph"),
    "control characters": (_set_node("relu", "source_name", "a\x1b[2Jb"), "control"),
    "symbolic dim not a name": (_set_type("relu", "shape", [1, "a b", 16, 16]), "shape"),
    "dtype name of a torch attribute": (_set_type("relu", "dtype", "Tensor"), "dtype"),
    "dtype name of a lazy module": (_set_type("relu", "dtype", "_dynamo"), "dtype"),
    # huge sizes
    "huge shape": (_set_type("relu", "shape", [1 << 40, 4]), "shape"),
    "huge total shape": (_set_type("relu", "shape", [1 << 20, 1 << 20]), "elements"),
    "deep rank": (_set_type("relu", "shape", [1] * 100), "shape"),
    "expanded tensor": (_set_tensor(torch.zeros(1).expand(1 << 24, 4)), "expands"),
    "tensor shape disagrees": (_set_tensor(torch.zeros(4, 3, 3, 4)), "disagrees"),
    "tensor dtype disagrees": (_set_tensor(torch.zeros(4, 3, 3, 3, dtype=torch.int8)), "int8"),
    "tensor that is sparse": (_set_tensor(torch.zeros(4, 3).to_sparse()), "dense"),
    "long text": (_set_node("relu", "source_name", "x" * 100_000), "characters"),
    "deeply nested attribute": (
        _set_attr("mean", "dim", _nested(40)),
        "nested",
    ),
    "attribute repeating one list": (_set_attr("mean", "dim", _shared(1000, 3)), "in all"),
    # quantization parameters
    "NaN scale": (_set_quant("relu", "scale", [float("nan")]), "finite"),
    "infinite scale": (_set_quant("relu", "scale", [float("inf")]), "finite"),
    "zero scale": (_set_quant("relu", "scale", [0.0]), "positive"),
    "negative scale": (_set_quant("relu", "scale", [-0.1]), "positive"),
    "scale not a number": (_set_quant("relu", "scale", ["0.1"]), "numbers"),
    "too many scales": (_set_quant("relu", "scale", [0.1, 0.2]), "scales"),
    "zero point above range": (_set_quant("relu", "zero_point", [256]), "zero_point"),
    "zero point below range": (_set_quant("relu", "zero_point", [-1]), "zero_point"),
    "zero point huge": (_set_quant("relu", "zero_point", [1 << 80]), "numbers"),
    "bits out of range": (_set_quant("relu", "bits", 64), "bits"),
    "bits a bool": (_set_quant("relu", "bits", True), "bits"),
    "unknown granularity": (_set_quant("relu", "granularity", "per_row"), "granularity"),
    "axis out of range": (_set_quant("parameter", "axis", 7), "axis"),
    # missing and unexpected keys
    "no graph": (_drop("graph"), "missing key 'graph'"),
    "no settings": (_drop("settings"), "missing key 'settings'"),
    "no nodes": (_drop("graph", "nodes"), "missing key 'nodes'"),
    "no tensors": (_drop("graph", "tensors"), "missing key 'tensors'"),
    "node without op": (_nodes(lambda nodes: nodes[5].pop("op")), "missing key 'op'"),
    "output without type": (
        _nodes(lambda nodes: _first_output(nodes).pop("type")),
        "missing key 'type'",
    ),
    "quant without scale": (
        _nodes(lambda nodes: _first_output(nodes)["quant"].pop("scale")),
        "missing key 'scale'",
    ),
    "unexpected top-level key": (lambda p: {**p, "code": "x"}, "unexpected key"),
    "unexpected node key": (_set_node("relu", "code", "x"), "unexpected key"),
    "required attribute missing": (
        _nodes(lambda nodes: nodes[0]["attrs"].pop("index")),
        "required attribute",
    ),
    # wrong types
    "nodes a dict": (_mutate_graph(lambda g: g.update(nodes={})), "expected a list"),
    "inputs a string": (_set_node("relu", "inputs", "conv"), "expected a list"),
    "attrs a list": (_set_node("relu", "attrs", []), "expected a dict"),
    "op not a string": (_set_node("relu", "op", 3), "expected a string"),
    "shape a string": (_set_type("relu", "shape", "1,4"), "shape"),
    "tensor a list": (_set_tensor([1.0, 2.0]), "expected a tensor"),
    "settings a list": (lambda p: {**p, "settings": []}, "settings"),
    "learnable_scales a string": (lambda p: {**p, "learnable_scales": "yes"}, "learnable"),
    "attribute of the wrong kind": (_set_attr("conv2d", "groups", "1"), "groups"),
    "attribute value a tensor": (_set_attr("mean", "dim", torch.zeros(2)), "Tensor"),
    "unknown attribute": (_set_attr("relu", "stride", (1, 1)), "no attribute"),
    "unknown op": (_set_node("relu", "op", "relu6x"), "not in the op schema table"),
    "unknown settings key": (
        lambda p: {**p, "settings": {**p["settings"], "code": {}}},
        "settings",
    ),
    "settings value of the wrong type": (
        lambda p: {**p, "settings": {**p["settings"], "training": {"stats_steps": "many"}}},
        "settings.training.stats_steps",
    ),
    # dangling and inconsistent references
    "input reads a missing value": (_set_node("relu", "inputs", ["nowhere"]), "no earlier"),
    "input reads a later value": (_set_node("relu", "inputs", ["fc"]), "no earlier"),
    "parameter reads a missing tensor": (_set_attr("parameter", "ref", "gone"), "not in tensors"),
    "too few inputs": (_set_node("conv2d", "inputs", []), "inputs"),
    "output structure out of range": (_set_attr("output", "structure", ("tuple", (0, 5))), "5"),
    "output structure malformed": (_set_attr("output", "structure", ("set", (0,))), "malformed"),
    "duplicate node name": (_set_node("relu", "name", "conv"), "used twice"),
    "two outputs for a one-output op": (
        _nodes(lambda nodes: nodes[6]["outputs"].append(dict(nodes[6]["outputs"][0]))),
        "outputs",
    ),
    "output node not last": (
        _nodes(lambda nodes: nodes.append({**nodes[-1], "name": "output2"})),
        "last",
    ),
    "duplicate input index": (
        _nodes(
            lambda nodes: nodes.insert(
                1, {**nodes[0], "name": "y", "outputs": [{**_first_output(nodes), "name": "y"}]}
            )
        ),
        "both input 0",
    ),
    "format version from the future": (_mutate_graph(lambda g: g.update(version=2)), "version"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_crafted_file_is_refused_naming_the_field(
    name: str, payloads: Any, tmp_path: Path, sentinel: Path
) -> None:
    damage, mention = ATTACKS[name]
    payload = copy.deepcopy(payloads["acekit.load"])
    path = save_payload(damage(payload), tmp_path / "attack.acekit")
    with pytest.raises(QuantizedModuleFileError) as caught:
        acekit.load(path)
    message = str(caught.value)
    assert str(path) in message and mention in message, message
    assert "\n" not in message
    assert not sentinel.exists()


@pytest.mark.parametrize("name", ["ref with ../", "NaN scale", "unknown op", "huge shape"])
def test_graph_loader_refuses_the_same_damage(
    name: str, payloads: Any, tmp_path: Path, sentinel: Path
) -> None:
    damage, mention = ATTACKS[name]
    graph = damage({"graph": copy.deepcopy(payloads["load_graph"])})["graph"]
    path = save_payload(graph, tmp_path / "graph.acekit")
    with pytest.raises(GraphFileError, match=mention):
        load_graph_file(path)


# -- files that are not plain data ----------------------------------------------------------


class _Exploit:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.mkdir, (str(self.sentinel),))


@pytest.mark.parametrize("loader_name", list(LOADERS))
def test_pickles_that_call_functions_are_refused(
    loader_name: str, tmp_path: Path, sentinel: Path
) -> None:
    path = tmp_path / "pickle.acekit"
    torch.save({"format": "acekit-graph", "x": _Exploit(sentinel)}, path)
    assert load_and_use(LOADERS[loader_name], path, sentinel) == "refused"
    path.write_bytes(pickle.dumps(_Exploit(sentinel), protocol=2))
    assert load_and_use(LOADERS[loader_name], path, sentinel) == "refused"


@pytest.mark.parametrize("loader_name", list(LOADERS))
def test_truncated_empty_and_random_files_are_refused(
    loader_name: str, payloads: Any, tmp_path: Path, sentinel: Path
) -> None:
    good = save_payload(payloads[loader_name], tmp_path / "good.acekit").read_bytes()
    path = tmp_path / "bad.acekit"
    for content in (good[: len(good) // 2], b"", bytes(range(256)) * 4, good[:-10]):
        path.write_bytes(content)
        assert load_and_use(LOADERS[loader_name], path, sentinel) == "refused"


def test_a_missing_file_is_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        acekit.load(tmp_path / "nothing.acekit")


# -- graphs built in memory -----------------------------------------------------------------


def _chain(names: list[str]) -> Graph:
    graph = Graph("hostile")
    value = graph.add_input("x", TensorType(torch.float32, (2, 3)))
    for name in names:
        node = graph.add_node("relu", [value])
        graph.rename(node, name)
        value = node.output
    graph.set_outputs([value])
    return graph


def test_generated_code_uses_only_names_the_generator_made(sentinel: Path) -> None:
    names = [*hostile_strings(sentinel), "self", "class", "__builtins__", "to", "eval", ""]
    graph = _chain([n for n in names if n])
    for value in graph.nodes:
        if value.op == "relu":
            value.output.quant = None
    module = to_module(graph)
    x = torch.randn(2, 3)
    assert torch.equal(module(x), torch.relu(x))
    assert not sentinel.exists()
    for text in hostile_strings(sentinel):
        assert text not in module.code


def test_output_keys_and_constants_reach_the_code_only_as_literals(sentinel: Path) -> None:
    texts = hostile_strings(sentinel)
    graph = _chain(["a"])
    entries = tuple((text, ("const", text)) for text in texts)
    assert graph.output_node is not None
    graph.output_node.attrs["structure"] = ("dict", (*entries, ("out", 0)))
    result = to_module(graph)(torch.randn(2, 3))
    assert list(result) == [*texts, "out"] and all(result[t] == t for t in texts)
    assert not sentinel.exists()


def test_quantizer_keys_are_generated_names(sentinel: Path) -> None:
    graph = _chain(["to", "class", hostile_strings(sentinel)[2]])
    for node in graph.nodes:
        if node.op == "relu":
            node.output.quant = QuantSpec(
                signed=False, symmetric=False, scale=(0.1,), zero_point=(0,)
            )
    module = to_module(graph, quantize=True)
    keys = set(module.meta["acekit_quantizers"])
    assert {"to_1", "v_class"} <= keys and len(keys) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", key) for key in keys)
    x = torch.randn(2, 3)
    assert torch.allclose(module(x), torch.relu(x), atol=0.05)
    assert not sentinel.exists()


@pytest.mark.parametrize("index", range(6))
def test_hostile_attribute_keys_and_refs_are_refused_by_the_generator(
    index: int, sentinel: Path
) -> None:
    text = hostile_strings(sentinel)[index]
    graph = _chain(["a"])
    graph.node("a").attrs[text] = 1
    with pytest.raises(CodegenError, match="not an identifier"):
        to_module(graph)
    graph = Graph("hostile")
    x = graph.add_input("x", TensorType(torch.float32, (2, 3)))
    weight = graph.add_parameter(text, torch.zeros(2, 3))
    graph.set_outputs([graph.add_node("add", [x, weight]).output])
    with pytest.raises(CodegenError, match="tensor ref"):
        to_module(graph)
    assert not sentinel.exists()


def test_refs_that_clash_with_module_attributes_are_codegen_errors() -> None:
    for ref in ("training", "cuda", "fc.forward"):
        graph = Graph("clash")
        x = graph.add_input("x", TensorType(torch.float32, (2, 3)))
        weight = graph.add_parameter(ref, torch.zeros(2, 3))
        graph.set_outputs([graph.add_node("add", [x, weight]).output])
        with pytest.raises(CodegenError):
            to_module(graph)
