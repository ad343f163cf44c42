"""A fuzzer for acekit's file loaders: mutated valid files never run code or crash oddly.

Hypothesis takes a valid saved QuantizedModule or graph and applies one to three
mutations anywhere in it: replace a value (numbers at their edges, NaN, hostile
strings, tensors of other shapes and dtypes, nested junk), delete, add or rename a dict
key, swap a string for another name of the file (duplicates, dangling references), edit
numbers and tensors, reorder lists. Each mutated file must load and run harmlessly or
be refused with the loader's own error naming the file; no injected code may run.

CI runs a bounded number of examples per loader. For a long run::

    ACEKIT_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -p no:xdist \\
        tests/reliability/test_loader_fuzz.py --hypothesis-show-statistics
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import acekit
from acekit.ir import save_graph
from acekit.runtime.quantized import QuantizedModule
from tests.reliability.loader_files import (
    compile_tiny,
    hostile_strings,
    load_and_use,
    load_graph_file,
    save_payload,
)

#: Examples per loader; ACEKIT_FUZZ_EXAMPLES raises it for a long run.
EXAMPLES = int(os.environ.get("ACEKIT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LOADERS: dict[str, Callable[[Path], Any]] = {
    "acekit.load": acekit.load,
    "load_graph": load_graph_file,
}
Path_ = tuple[Any, ...]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def payloads(workdir: Path) -> dict[str, Any]:
    compiled: QuantizedModule = compile_tiny(workdir / "logs")
    model = compiled.save(workdir / "model.acekit")
    graph = save_graph(compiled.graph, workdir / "graph.acekit")
    return {
        "acekit.load": torch.load(model, weights_only=True),
        "load_graph": torch.load(graph, weights_only=True),
    }


# -- what a mutation may put into a file ----------------------------------------------------

EDGE_INTS = [0, 1, -1, 2, 7, 255, 256, -129, 1 << 31, -(1 << 31), 1 << 63, 1 << 80]
EDGE_FLOATS = [0.0, -0.0, -1.0, 1e-45, 1e38, float("nan"), float("inf"), float("-inf")]
DTYPES = [torch.float32, torch.float16, torch.int8, torch.int64, torch.bool, torch.uint8]


def _tensors() -> st.SearchStrategy[torch.Tensor]:
    shapes = st.lists(st.integers(0, 4), max_size=4)
    dense = st.builds(
        lambda shape, dtype: torch.zeros(shape).to(dtype), shapes, st.sampled_from(DTYPES)
    )
    expanded = st.sampled_from([torch.zeros(1).expand(1 << 23, 4), torch.zeros(2, 3).t()])
    return st.one_of(dense, expanded)


def _texts(sentinel: Path) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(hostile_strings(sentinel)),
        st.sampled_from(["", ".", "..", "../x", "a.b", "f32", "per_channel", "tuple", "ref"]),
        st.text(max_size=12),
    )


def _junk(sentinel: Path) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(EDGE_INTS),
        st.integers(-300, 300),
        st.sampled_from(EDGE_FLOATS),
        st.floats(),
        _texts(sentinel),
        _tensors(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(_texts(sentinel), inner, max_size=3),
        ),
        max_leaves=6,
    )


# -- walking and changing a payload ---------------------------------------------------------


def _places(data: Any, at: Path_ = ()) -> list[Path_]:
    """The path of every item of ``data`` (containers and leaves, not tensor contents)."""
    found = [at]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _places(value, (*at, key))
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            found += _places(value, (*at, i))
    return found


def _strings(data: Any) -> list[str]:
    return sorted({v for path in _places(data) if isinstance(v := _get(data, path), str)})


def _get(data: Any, path: Path_) -> Any:
    for key in path:
        data = data[key]
    return data


def _put(data: Any, path: Path_, change: Callable[[Any], Any]) -> Any:
    """``data`` with the item at ``path`` replaced by ``change(item)`` (tuples rebuilt)."""
    if not path:
        return change(data)
    head, rest = path[0], path[1:]
    if isinstance(data, tuple):
        items = list(data)
        items[head] = _put(items[head], rest, change)
        return tuple(items)
    data[head] = _put(data[head], rest, change)
    return data


_DELETE = object()


def _mutate(data: Any, draw: Callable[..., Any], sentinel: Path) -> Any:
    places = _places(data)
    path = draw(st.sampled_from(places[1:]), label="path")
    value = _get(data, path)
    kinds = ["replace", "delete"]
    if isinstance(value, dict):
        kinds += ["add key", "rename key"] if value else ["add key"]
    if isinstance(value, list | tuple) and len(value) > 1:
        kinds += ["reorder", "duplicate"]
    if isinstance(value, str):
        kinds += ["other name", "extend"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        kinds += ["nudge"]
    if isinstance(value, torch.Tensor):
        kinds += ["retype", "reshape"]
    kind = draw(st.sampled_from(kinds), label="mutation")
    event(f"mutation: {kind}")
    new: Any
    if kind == "replace":
        new = draw(_junk(sentinel), label="replacement")
    elif kind == "delete":
        new = _DELETE
    elif kind == "add key":
        key = draw(_texts(sentinel), label="key")
        new = {**value, key: draw(_junk(sentinel), label="value")}
    elif kind == "rename key":
        old = draw(st.sampled_from(sorted(value, key=repr)), label="old key")
        renamed = draw(st.one_of(_texts(sentinel), st.sampled_from(sorted(value, key=repr))))
        new = {
            (renamed if k == old else k): v for k, v in value.items() if k != renamed or k == old
        }
    elif kind == "reorder":
        new = type(value)(draw(st.permutations(list(value)), label="order"))
    elif kind == "duplicate":
        item = draw(st.sampled_from(list(value)), label="item")
        new = type(value)([*value, item])
    elif kind == "other name":
        new = draw(st.sampled_from(_strings(data)), label="name")
    elif kind == "extend":
        new = value + draw(_texts(sentinel), label="suffix")
    elif kind == "nudge":
        new = draw(
            st.sampled_from([value + 1, value - 1, -value, value * 1000, value / 2]), label="nudge"
        )
    elif kind == "retype":
        new = value.to(draw(st.sampled_from(DTYPES), label="dtype"))
    else:
        new = value.reshape(-1) if value.dim() != 1 else value.reshape(1, -1)
    return _apply(data, path, new)


def _apply(data: Any, path: Path_, new: Any) -> Any:
    if new is not _DELETE:
        return _put(data, path, lambda _: new)

    def remove(container: Any) -> Any:
        if isinstance(container, dict):
            return {k: v for k, v in container.items() if k != path[-1]}
        items = list(container)
        del items[path[-1]]
        return type(container)(items)

    return _put(data, path[:-1], remove)


# -- the fuzzers ----------------------------------------------------------------------------


@pytest.mark.parametrize("loader_name", list(LOADERS))
def test_mutated_files_are_refused_or_harmless(
    loader_name: str, payloads: dict[str, Any], workdir: Path
) -> None:
    loader = LOADERS[loader_name]
    sentinel = workdir / "code-ran"
    path = workdir / f"fuzzed-{loader_name}.acekit"

    @FUZZ
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        payload = copy.deepcopy(payloads[loader_name])
        for _ in range(data.draw(st.integers(1, 3), label="mutations")):
            payload = _mutate(payload, data.draw, sentinel)
        save_payload(payload, path)
        event(f"outcome: {load_and_use(loader, path, sentinel)}")

    fuzz()
