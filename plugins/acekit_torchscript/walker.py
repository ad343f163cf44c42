"""Running a ScriptModule's graphs on the example inputs while writing the IR graph.

The walker is a small TorchScript interpreter. It runs each method graph node by node
on entries (see :mod:`acekit_torchscript.entries`): what does not depend on the
model's inputs is computed in Python right away (list building, conditions on module
attributes); every op on tensors of the graph is handed to a converter, which writes
IR nodes, and is also run on the example values so that every IR value gets its dtype
and shape and control flow can be followed (:mod:`acekit_torchscript.control`).

Method calls are followed into the callee's graph, so each node knows the module that
runs it; free functions are inlined first. A node that cannot be converted is
reported, and the walk goes on with its example result so that one error lists every
unsupported op of the model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import torch

from acekit.ir import Node
from acekit_torchscript import control
from acekit_torchscript.calls import OpCall, UnsupportedError
from acekit_torchscript.context import Builder, Site
from acekit_torchscript.convert import has_op
from acekit_torchscript.entries import (
    MISSING_RESULT,
    ModuleEntry,
    TensorEntry,
    UnknownEntry,
    example_of,
    has_tensor,
    has_unknown,
    is_static,
    resolve,
)
from acekit_torchscript.entries import walk as walk_entries
from acekit_torchscript.errors import ModelRaisedError
from acekit_torchscript.evaluate import CannotEvaluateError, evaluate, results_of, structural_op
from acekit_torchscript.graphs import PLACEHOLDER_CALL, prepared_graph
from acekit_torchscript.jit import module_attr, module_has_attr
from acekit_torchscript.prims import PRIMS, Handler
from acekit_torchscript.scalars import scalar_op
from acekit_torchscript.schemas import functional_name, is_inplace, node_schema

Converter = Callable[[OpCall], list[Any]]
#: A leaf-module converter: gets the walker, the module, the call's site and arguments;
#: returns the method's result, or ``None`` to have the walker follow the module's code.
LeafConverter = Callable[["Walker", ModuleEntry, Site, list[Any]], Any]


@attrs.define(eq=False)
class Frame:
    """One method being run: its module, how it was reached, and its value bindings."""

    module: ModuleEntry
    call_sites: tuple[torch._C.Node, ...]
    env: dict[int, Any] = attrs.field(factory=dict)
    #: Constant tensors an in-place op with a computed operand turned into graph tensors
    #: (see :meth:`Walker.lift`), by identity: shared by all frames of a walk.
    lifted: dict[int, tuple[torch.Tensor, TensorEntry]] = attrs.field(factory=dict)

    def site(self, node: torch._C.Node) -> Site:
        """The site of ``node`` run in this frame."""
        return Site(node, self.module.scope, self.call_sites)

    @property
    def training(self) -> bool:
        """Whether this frame's module is in training mode."""
        return bool(module_attr(self.module.module, "training"))

    def get(self, value: torch._C.Value) -> Any:
        """The entry bound to TorchScript ``value``."""
        entry = resolve(self.env[value.unique()])
        if self.lifted and isinstance(entry, torch.Tensor):
            known = self.lifted.get(id(entry))
            if known is not None:
                return resolve(known[1])
        return entry

    def bind(self, value: torch._C.Value, entry: Any) -> None:
        """Bind TorchScript ``value`` to ``entry``."""
        self.env[value.unique()] = entry


@attrs.frozen
class ModelState:
    """Which tensors of the model are parameters and which are buffers, by state key."""

    parameters: frozenset[str]
    buffers: frozenset[str]

    @classmethod
    def of(cls, module: torch.jit.ScriptModule) -> ModelState:
        """The state of ``module``."""
        return cls(
            frozenset(name for name, _ in module.named_parameters()),
            frozenset(name for name, _ in module.named_buffers()),
        )


#: Ops that make a tensor from numbers only: with a size computed from shapes they go
#: to their converter (a ``full`` node), not to the lazy scalar ops.
FACTORIES: Final = frozenset({"aten::full", "aten::zeros", "aten::ones", "aten::empty"})


class Walker:
    """Runs a ScriptModule's methods on entries, writing IR through ``builder``.

    ``converters`` map TorchScript ops to converters (``fallback`` takes the others),
    ``leaf_modules`` map TorchScript class names to leaf-module converters.
    """

    def __init__(
        self,
        builder: Builder,
        state: ModelState,
        converters: Mapping[str, Converter],
        leaf_modules: Mapping[str, LeafConverter],
        fallback: Converter,
    ) -> None:
        self.builder = builder
        self.state = state
        self.converters = converters
        self.leaf_modules = leaf_modules
        self.fallback = fallback
        self._handlers: dict[str, Handler] = {
            **PRIMS,
            PLACEHOLDER_CALL: _call_method,
            "prim::If": control.run_if,
            "prim::Loop": control.run_loop,
            "prim::RaiseException": control.run_raise,
        }
        # Slices and selects of constant tensors computed in Python, by the view's
        # identity: (view, tensor viewed, IR op, its attributes). Holding the tensors
        # keeps their identities from being reused.
        self._static_views: dict[int, tuple[torch.Tensor, torch.Tensor, str, dict[str, Any]]] = {}
        self._lifted: dict[int, tuple[torch.Tensor, TensorEntry]] = {}

    # -- running ------------------------------------------------------------------------

    def call_method(
        self,
        module: ModuleEntry,
        name: str,
        args: Sequence[Any],
        call_sites: tuple[torch._C.Node, ...],
    ) -> Any:
        """Run method ``name`` of ``module`` on ``args``; returns the result entry."""
        graph = prepared_graph(module.module._get_method(name))
        frame = Frame(module, call_sites, lifted=self._lifted)
        graph_inputs = list(graph.inputs())
        if len(graph_inputs) != len(args) + 1:
            raise TypeError(
                f"{module.type_name}.{name} takes {len(graph_inputs) - 1} inputs, got {len(args)}"
            )
        frame.bind(graph_inputs[0], module)
        for value, entry in zip(graph_inputs[1:], args, strict=True):
            frame.bind(value, entry)
        self.run_nodes(graph.nodes(), frame)
        results = [frame.get(value) for value in graph.outputs()]
        return results[0] if len(results) == 1 else tuple(results)

    def run_nodes(self, nodes: Iterable[torch._C.Node], frame: Frame) -> None:
        """Run ``nodes`` in order in ``frame``."""
        for node in nodes:
            handler = self._handlers.get(str(node.kind()))
            if handler is not None:
                handler(self, node, frame)
            else:
                self._op(node, frame)

    # -- bindings -------------------------------------------------------------------------

    def inputs(self, node: torch._C.Node, frame: Frame) -> list[Any]:
        """The entries ``node`` reads."""
        return [frame.get(value) for value in node.inputs()]

    def bind_outputs(self, node: torch._C.Node, frame: Frame, entries: Sequence[Any]) -> None:
        """Bind ``node``'s results to ``entries``."""
        for value, entry in zip(node.outputs(), entries, strict=True):
            frame.bind(value, entry)

    def bind_unknown(
        self, node: torch._C.Node, frame: Frame, results: Sequence[Any] | None = None
    ) -> None:
        """Bind the results of a node that was not converted (with example values when
        known), so that the walk goes on to find the other unsupported ops."""
        outputs = list(node.outputs())
        examples = list(results) if results is not None else [None] * len(outputs)
        for value, example in zip(outputs, examples, strict=True):
            frame.bind(value, UnknownEntry(example))

    # -- model tensors -------------------------------------------------------------------

    def module_tensor(
        self,
        module: ModuleEntry,
        name: str,
        *,
        scope: tuple[str, ...] | None = None,
        named_by_path: bool = False,
    ) -> TensorEntry | None:
        """The ``parameter`` node of ``module``'s parameter or buffer ``name``, if any.

        The node belongs to ``scope`` (by default the module's own scope); with
        ``named_by_path`` it is called ``a_b_weight`` rather than by its ref.
        """
        if not module_has_attr(module.module, name):
            return None
        value = module_attr(module.module, name)
        if not isinstance(value, torch.Tensor):
            return None
        path = (*module.path, name)
        key = ".".join(path)
        if key not in self.state.parameters and key not in self.state.buffers:
            return None
        return self.builder.parameter(
            path,
            value,
            trainable=key in self.state.parameters and bool(value.requires_grad),
            scope=module.scope if scope is None else scope,
            name="_".join(path) if named_by_path else None,
        )

    # -- ops ------------------------------------------------------------------------------

    def _op(self, node: torch._C.Node, frame: Frame) -> None:
        """An op: run in Python when static, converted to IR otherwise."""
        inputs = self.inputs(node, frame)
        site = frame.site(node)
        if any(entry is MISSING_RESULT for entry in walk_entries(inputs)):
            self.builder.report_unsupported(
                site, "reads a result the IR op it comes from does not produce"
            )
            self.bind_unknown(node, frame)
            return
        kind = str(node.kind())
        structural = structural_op(kind, inputs)
        if structural is not None:
            self.bind_outputs(node, frame, results_of(node, structural(inputs)))
            return
        schema = node_schema(node)
        inplace = schema is not None and is_inplace(schema)
        unknown = any(has_unknown(entry) for entry in inputs)
        static = all(is_static(entry) for entry in inputs)
        try:
            with torch.no_grad():
                results = evaluate(
                    node,
                    schema,
                    [example_of(entry) for entry in inputs],
                    functional=inplace and not static,
                )
        except CannotEvaluateError as error:
            self.builder.report_unsupported(site, str(error))
            self.bind_unknown(node, frame)
            return
        except Exception as error:
            if unknown:  # run on results of unconverted nodes, which may be missing
                self.bind_unknown(node, frame)
                return
            where = f" at {site.location()}" if site.location() else ""
            raise ModelRaisedError(
                f"the model raised while running {kind} in "
                f"'{self.builder.subgraph(site.module_path)}'{where} on the example inputs: "
                f"{type(error).__name__}: {error}"
            ) from error
        if inplace:
            kind = functional_name(kind)
        if unknown:
            # Its inputs have no IR values: it is reported only if it could not be
            # converted whatever they were.
            missing = self._missing_conversion(kind)
            if missing is not None:
                self.builder.report_unsupported(site, missing)
            self.bind_unknown(node, frame, results)
            return
        deterministic = not node.isNondeterministic()
        if deterministic and static:
            # Runs on the walker's own copies, so in-place ops on constants are fine, and
            # a write into a slice of a constant (``mask[a:b] = 1``) writes into it.
            self._note_view(kind, inputs, results)
            self.bind_outputs(node, frame, results)
            return
        if (
            deterministic
            and not any(has_tensor(entry) for entry in inputs)
            and kind not in FACTORIES
        ):
            self.bind_outputs(node, frame, scalar_op(str(node.kind()), inputs, results, site))
            return
        if schema is None:
            self.builder.report_unsupported(site, "no operator schema")
            self.bind_unknown(node, frame)
            return
        if inplace and isinstance(inputs[0], torch.Tensor):
            # A constant written with something the graph computes (``mask[:2] = x[0]``).
            inputs[0] = self.lift(inputs[0], site)
        call = OpCall(
            self.builder,
            site,
            kind,
            schema,
            inputs,
            results,
            training=frame.training,
            lookup=lambda name: self.module_tensor(frame.module, name, scope=site.module_path),
            layer_name="_".join(frame.module.path) if frame.module.is_torch_layer else None,
        )
        try:
            entries = self.converters.get(kind, self.fallback)(call)
        except UnsupportedError as error:
            self.builder.report_unsupported(site, str(error))
            self.bind_unknown(node, frame, results)
            return
        self.bind_outputs(node, frame, entries)
        if inplace and isinstance(inputs[0], TensorEntry) and entries:
            new = entries[0]
            if isinstance(new, TensorEntry) and new is not inputs[0]:
                self._write(inputs[0], new, site)

    def _write(self, target: TensorEntry, new: TensorEntry, site: Site) -> None:
        """An in-place op gave ``target`` the value ``new``: later reads see ``new``, and a
        write into a slice (``x[2:4].zero_()``) or a select (``x[:, 0] = y``) writes into
        the tensor it views."""
        target.replaced_by = new
        if target.view_of is None:
            return
        base, bounds = target.view_of
        base = resolve(base)
        example = base.example.clone()
        dim = bounds["dim"] % example.dim()
        if "index" in bounds:  # a select: x[:, 0] = y
            op, key = "select_scatter", bounds["index"]
        else:
            op = "slice_scatter"
            key = slice(bounds.get("start"), bounds.get("end"), bounds.get("step", 1))
        example[(slice(None),) * dim + (key,)] = new.example
        (scattered,) = self.builder.emit(op, [base.value, new.value], bounds, site, [example])
        new.view_of = (scattered, bounds)
        self._write(base, scattered, site)

    def _note_view(self, kind: str, inputs: Sequence[Any], results: Sequence[Any]) -> None:
        """Remember a slice or select of a constant tensor, so that :meth:`lift` can make
        it a view of the graph tensor the constant becomes."""
        if kind not in ("aten::slice", "aten::select") or not inputs or not results:
            return
        source, view = inputs[0], results[0]
        if not isinstance(source, torch.Tensor) or not isinstance(view, torch.Tensor):
            return
        if kind == "aten::select":
            op, bounds = "select", {"dim": int(inputs[1]), "index": int(inputs[2])}
        else:
            defaults: list[Any] = [0, None, None, 1]  # slice(self, dim, start, end, step)
            dim, start, end, step = list(inputs[1:5]) + defaults[len(inputs) - 1 :]
            op, bounds = "slice", {"dim": int(dim), "step": int(step)}
            if start not in (None, 0):
                bounds["start"] = int(start)
            if end not in (None, sys.maxsize):
                bounds["end"] = int(end)
        self._static_views[id(view)] = (view, source, op, bounds)

    def lift(self, tensor: torch.Tensor, site: Site) -> TensorEntry:
        """The graph tensor standing for constant ``tensor`` from now on: a ``constant``
        node, or for a slice or select of a constant that node's ``slice`` (``select``),
        remembering the tensor it views so that a write into it reaches that tensor.

        Lifting a constant lifts the slices and selects of it known so far as well, and
        every later read of any of them (:meth:`Frame.get`) sees the graph tensor.
        """
        known = self._lifted.get(id(tensor))
        if known is not None:
            return resolve(known[1])
        view = self._static_views.get(id(tensor))
        if view is None:
            entry = TensorEntry(self.builder.constant(tensor, site), tensor)
            self._lifted[id(tensor)] = (tensor, entry)
            for other, source, _, _ in list(self._static_views.values()):
                if source is tensor:
                    self.lift(other, site)
            return entry
        _, source, op, bounds = view
        base = self.lift(source, site)
        known = self._lifted.get(id(tensor))  # lifting the base lifted its views
        if known is not None:
            return resolve(known[1])
        (entry,) = self.builder.emit(op, [base.value], bounds, site, [tensor])
        entry.view_of = (base, bounds)
        self._lifted[id(tensor)] = (tensor, entry)
        return entry

    def _missing_conversion(self, kind: str) -> str | None:
        """Why op ``kind`` cannot be converted whatever its inputs, or ``None``."""
        namespace, _, name = kind.partition("::")
        if kind in self.converters or (namespace == "aten" and has_op(name)):
            return None
        return f"the IR has no op {name!r}" if namespace == "aten" else f"no converter for {kind}"


def _call_method(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """A method call: a leaf module's converter, or the callee's code."""
    target = frame.get(node.inputsAt(0))
    name = node.s("name")
    args = walker.inputs(node, frame)[1:]
    site = frame.site(node)
    if isinstance(target, UnknownEntry):
        walker.bind_unknown(node, frame)
        return
    if not isinstance(target, ModuleEntry):
        walker.builder.report_unsupported(
            site, f"method {name!r} of a {type(target).__name__} object", kind="prim::CallMethod"
        )
        walker.bind_unknown(node, frame)
        return
    result = None
    first = len(walker.builder.emitted)
    # A traced module called twice has methods forward, forward1, ...
    is_forward = name.startswith("forward")
    leaf = walker.leaf_modules.get(target.qualified_type) if is_forward else None
    if leaf is not None and not any(has_unknown(arg) for arg in args):
        result = leaf(walker, target, site, args)
    if result is None:
        result = walker.call_method(target, name, args, (*frame.call_sites, node))
    if is_forward and target.is_torch_layer:
        _name_after_module(walker.builder, target, walker.builder.emitted[first:])
    outputs = list(node.outputs())
    if len(outputs) == 1:
        frame.bind(outputs[0], result)
    else:
        for value, entry in zip(outputs, result, strict=True):
            frame.bind(value, entry)


def _name_after_module(builder: Builder, module: ModuleEntry, nodes: Sequence[Node]) -> None:
    # A torch.nn layer that became one IR node gives it its name, as the fx parser
    # names call_module nodes (``layers_0_conv``).
    ops = [node for node in nodes if node.op != "constant" and node.graph is not None]
    if len(ops) != 1 or not module.path or len(ops[0].outputs) != 1:
        return  # renaming keeps the names of a multi-output node's values: named at birth
    wanted = "_".join(module.path)
    if ops[0].name != wanted:
        builder.graph.rename(ops[0], builder.graph.unique_name(wanted))
