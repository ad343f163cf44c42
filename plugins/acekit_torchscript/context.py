"""Writing IR nodes: names, subgraph paths, source locations, types, parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from acekit.ir import Graph, Node, Value
from acekit.parsing import UnsupportedOp, add_tensor_constant, free_ref, type_of
from acekit_torchscript.entries import ScalarEntry, TensorEntry, resolve
from acekit_torchscript.locations import locate


@attrs.frozen(eq=False)
class Site:
    """Where an IR node comes from: a TorchScript node, its module and the calls to it."""

    node: torch._C.Node
    module_path: tuple[str, ...]
    call_sites: tuple[torch._C.Node, ...] = ()

    @property
    def source_name(self) -> str:
        """The TorchScript name of the node's first result (``input.1``), or its op."""
        if self.node.outputsSize():
            return str(self.node.outputsAt(0).debugName())
        return str(self.node.kind())

    def location(self) -> str | None:
        """``file:line`` of the user's source for this node, when known."""
        return locate(self.node, self.call_sites)


class Builder:
    """Adds nodes to the graph being built, in the conventions every acekit parser keeps.

    Nodes get the subgraph path ``RootClass/attr/path`` of the module they come from,
    the TorchScript name they had and the user's source line. Parameters and persistent
    buffers become ``parameter`` nodes named and referenced by their state-dict key,
    one per tensor however often (and under however many names) the model reads it;
    the graph holds copies, so the user's model is never aliased.
    """

    def __init__(self, graph: Graph, root_name: str) -> None:
        self.graph = graph
        self.root_name = root_name
        self.unsupported: list[UnsupportedOp] = []
        #: Every node written by :meth:`emit`, in order.
        self.emitted: list[Node] = []
        self._tensors: dict[int, TensorEntry] = {}
        self._counters: dict[str, int] = {}
        # Constant tensors written once per value: keyed by identity and version (an
        # in-place op on a constant makes a new version), holding the tensor so the
        # identity cannot be reused.
        self._constants: dict[tuple[int, int], tuple[torch.Tensor, Value]] = {}

    def subgraph(self, path: Sequence[str]) -> str:
        """``RootClass/a/b`` for the module at attribute path ``("a", "b")``."""
        return "/".join((self.root_name, *path))

    def parameter(
        self,
        path: tuple[str, ...],
        tensor: torch.Tensor,
        *,
        trainable: bool,
        scope: tuple[str, ...],
        name: str | None = None,
    ) -> TensorEntry:
        """The ``parameter`` node of the model's tensor at ``path`` (its state-dict key),
        in subgraph ``scope``; named ``name`` when given, else by the key."""
        entry = self._tensors.get(id(tensor))
        if entry is None:
            ref = self._free_ref(".".join(path))
            value = self.graph.add_parameter(
                ref,
                tensor.detach().clone(),
                subgraph=self.subgraph(scope),
                trainable=trainable,
                source_name=ref,
            )
            node = value.producer
            if name is not None and node is not None and not self.graph.has_node(name):
                self.graph.rename(node, name)
            entry = TensorEntry(value, tensor)
            self._tensors[id(tensor)] = entry
        return entry

    def model_constant(
        self, path: tuple[str, ...], tensor: torch.Tensor, scope: tuple[str, ...]
    ) -> TensorEntry:
        """The ``constant`` node of a model tensor outside the state dict."""
        entry = self._tensors.get(id(tensor))
        if entry is None:
            value = self._tensor_constant(
                self._free_ref(".".join(path)), tensor, self.subgraph(scope), path[-1], None
            )
            entry = TensorEntry(value, tensor)
            self._tensors[id(tensor)] = entry
        return entry

    def constant(self, held: Any, site: Site) -> Value:
        """A ``constant`` node holding ``held``: a tensor (by ref) or a Python value."""
        subgraph = self.subgraph(site.module_path)
        if isinstance(held, torch.Tensor):
            key = (id(held), held._version)
            known = self._constants.get(key)
            if known is not None and known[1].producer is not None:
                return known[1]
            ref = self._free_ref(f"constant_{_identifier(site.source_name)}")
            value = self._tensor_constant(ref, held, subgraph, site.source_name, site.location())
            self._constants[key] = (held, value)
            return value
        node = self.graph.add_node(
            "constant",
            attrs={"value": held},
            name="constant",
            subgraph=subgraph,
            source_name=site.source_name,
            source_location=site.location(),
            types=[type_of(held)],
        )
        return node.output

    def scalar(self, entry: ScalarEntry) -> Value:
        """The IR value of a number computed from shapes, writing its nodes on first use."""
        if entry.value is None:
            inputs = [self.value(item, entry.site) for item in entry.inputs]
            node = self.emit(entry.op, inputs, entry.attrs, entry.site, [entry.example])
            entry.value = node[0].value
        return entry.value

    def value(self, entry: Any, site: Site) -> Value:
        """The IR value of an op input: a tensor's or number's node, a ``pack`` of a list
        of numbers some of which the graph computes, or a new ``constant`` node."""
        entry = resolve(entry)
        if isinstance(entry, TensorEntry):
            return entry.value
        if isinstance(entry, ScalarEntry):
            return self.scalar(entry)
        if isinstance(entry, list | tuple) and any(
            isinstance(resolve(item), ScalarEntry) for item in entry
        ):
            return self.pack(entry, site)
        if isinstance(entry, list):
            entry = tuple(entry)
        return self.constant(entry, site)

    def pack(self, items: Sequence[Any], site: Site) -> Value:
        """A ``pack`` node: the int tuple ``items`` whose computed entries are inputs."""
        whole = _whole_shape(items)
        if whole is not None:
            return self.scalar(whole)
        template: list[int | None] = []
        inputs: list[Value] = []
        examples: list[Any] = []
        for item in (resolve(i) for i in items):
            if isinstance(item, ScalarEntry):
                template.append(None)
                inputs.append(self.scalar(item))
                examples.append(item.example)
            else:
                template.append(int(item))
                examples.append(int(item))
        node = self.emit(
            "pack", inputs, {"values": tuple(template)}, site, [tuple(examples)], helper=True
        )
        return node[0].value

    def emit(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: Mapping[str, Any] | None,
        site: Site,
        examples: Sequence[Any],
        *,
        name: str | None = None,
        helper: bool = False,
    ) -> list[TensorEntry]:
        """Add an ``op`` node whose results have the given example values.

        Its name is ``name``, else the op's (``add``, ``add_1``) when the TorchScript op
        has the IR op's name, else the op's numbered from 1 (``aten::view`` becomes
        ``reshape_1``), as the fx parser names nodes; ``helper`` nodes (packs,
        conditions) are named after their op.
        """
        node = self.graph.add_node(
            op,
            list(inputs),
            dict(attrs or {}),
            name=name or (op if helper else self._name_for(op, site)),
            subgraph=self.subgraph(site.module_path),
            source_name=site.source_name,
            source_location=site.location(),
            num_outputs=len(examples),
            types=[type_of(example) for example in examples],
        )
        self.emitted.append(node)
        return [
            TensorEntry(value, example)
            for value, example in zip(node.outputs, examples, strict=True)
        ]

    def _name_for(self, op: str, site: Site) -> str:
        source = str(site.node.kind()).partition("::")[2]
        if source.rstrip("_") == op or source.endswith(f"_{op}"):
            return op
        count = self._counters.get(op, 0) + 1
        while self.graph.has_node(f"{op}_{count}"):
            count += 1
        self._counters[op] = count
        return f"{op}_{count}"

    def report_unsupported(self, site: Site, reason: str = "", kind: str | None = None) -> None:
        """Record a node the IR cannot express; parsing goes on to find all of them."""
        self.unsupported.append(
            UnsupportedOp(
                op=kind or str(site.node.kind()),
                node=f"%{site.source_name}" if site.node.outputsSize() else site.source_name,
                subgraph=self.subgraph(site.module_path),
                location=site.location(),
                reason=reason,
            )
        )

    def _tensor_constant(
        self, ref: str, tensor: torch.Tensor, subgraph: str, source: str, location: str | None
    ) -> Value:
        return add_tensor_constant(
            self.graph,
            ref,
            tensor.detach().clone(),
            name=_identifier(ref),
            subgraph=subgraph,
            source_name=source,
            location=location,
        )

    def _free_ref(self, ref: str) -> str:
        return free_ref(self.graph, ref)


def _whole_shape(items: Sequence[Any]) -> ScalarEntry | None:
    """The shape value ``items`` reads in full, in order (``x.reshape(y.shape)``), if any."""
    entries = [resolve(item) for item in items]
    if not entries or not all(isinstance(e, ScalarEntry) and e.op == "gather" for e in entries):
        return None
    source = entries[0].inputs[0]
    if not isinstance(source, ScalarEntry) or len(source.example) != len(entries):
        return None
    for index, entry in enumerate(entries):
        if entry.inputs[0] is not source or entry.attrs.get("index") != index:
            return None
    return source


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")
    return cleaned or "constant"
