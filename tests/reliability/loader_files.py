"""Valid saved files, hostile strings and the check every loader attack ends with.

A loader attack takes a valid payload (a saved QuantizedModule or graph), damages it,
writes it with ``torch.save`` (plain data and tensors: it passes ``weights_only=True``)
and loads it. The attack must end in the loader's own error naming the file, or in a
model that loads and runs; either way the sentinel file that every injected string
would create must not exist.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import acekit
from acekit.errors import CorruptFileError
from acekit.ir import Graph, GraphFileError, load_graph
from acekit.runtime import CodegenError, to_module
from acekit.runtime.quantized import QuantizedModule, QuantizedModuleFileError

INPUT_SHAPE = (1, 3, 16, 16)


class TinyNet(nn.Module):
    """Conv, ReLU, pooling and a linear head; returns (logits, features) to nest outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(features), features


def compile_tiny(logs: Path) -> QuantizedModule:
    """TinyNet quantized with two calibration batches."""
    torch.manual_seed(0)
    batches = [torch.randn(*INPUT_SHAPE) for _ in range(2)]
    return acekit.compile(
        TinyNet().eval(),
        example_inputs=(batches[0],),
        calibration_inputs=batches,
        logs_dir=str(logs),
    )


def hostile_strings(sentinel: Path) -> list[str]:
    """Strings that create ``sentinel`` if pasted into Python source in common contexts.

    The code uses no ``.`` (refs split on dots) and builds the path from its bytes, so
    the same payload works inside names, dotted paths, quoted strings and kwargs.
    """
    codes = ",".join(str(b) for b in str(sentinel).encode())
    code = f"getattr(__import__('os'),'mkdir')(getattr(bytes(({codes},)),'decode')())"
    return [
        code,
        f"x=({code}), y",
        f'",({code}),"',
        f"'),({code}),('",
        f"a\n{code}\n",
        f"a;{code}#",
    ]


def expected_error(loader: Callable[[Path], Any]) -> type[CorruptFileError]:
    """The error type each loader promises for a bad file."""
    return QuantizedModuleFileError if loader is acekit.load else GraphFileError


def load_and_use(loader: Callable[[Path], Any], path: Path, sentinel: Path) -> str:
    """Load ``path``; run what loads. ``"refused"`` or ``"loaded"``; no code may have run.

    Anything but the loader's own error naming the file fails the test, as does the
    sentinel existing. A file that loads is called (and its graph generated again): it
    may fail at run time if it describes a broken model, but nothing from it may run.
    """
    try:
        try:
            loaded = loader(path)
        except expected_error(loader) as error:
            assert str(path) in str(error), f"the error does not name the file: {error}"
            return "refused"
        _use(loaded)
        return "loaded"
    finally:
        assert not sentinel.exists(), f"code from {path} ran"


def _use(loaded: Any) -> None:
    graph: Graph = loaded.graph if isinstance(loaded, QuantizedModule) else loaded
    try:
        module = loaded if isinstance(loaded, QuantizedModule) else to_module(graph)
    except CodegenError:
        return
    inputs = [torch.randn(*INPUT_SHAPE) for _ in graph.inputs]
    # A loaded file may describe a model that torch cannot run (a changed stride, a
    # wrong shape): torch then raises its own error, which is harmless. What matters
    # is that nothing from the file ran, which the caller checks.
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception:
        return


def load_graph_file(path: Path) -> Graph:
    """The graph loader, with the signature the attacks use."""
    return load_graph(path)


def save_payload(payload: Any, path: Path) -> Path:
    """Write ``payload`` as torch.save does for acekit's files."""
    torch.save(payload, path)
    return path


def string_places(data: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every string of ``data``: ``(path, "value")`` for values, ``(path, "key")`` for keys."""
    if isinstance(data, str):
        yield at, "value"
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str):
                yield (*at, key), "key"
            yield from string_places(value, (*at, key))
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            yield from string_places(value, (*at, i))


def replaced(data: Any, path: tuple[Any, ...], new: Any, *, key: bool = False) -> Any:
    """A deep copy of ``data`` with the item at ``path`` (or its dict key) set to ``new``."""
    result = copy.deepcopy(data)
    return _set(result, path, new, key)


def _set(data: Any, path: tuple[Any, ...], new: Any, key: bool) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(data, tuple):
        items = list(data)
        items[head] = _set(items[head], rest, new, key) if rest else new
        return tuple(items)
    if rest:
        data[head] = _set(data[head], rest, new, key)
    elif key:
        data[new] = data.pop(head)
    else:
        data[head] = new
    return data
