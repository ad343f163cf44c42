"""The walk over an FX graph: run each node on the example inputs, convert it, log it.

Every FX node is first *run* (``torch.fx.Interpreter``) so that its concrete result is
known: it types the IR values, lets nodes that depend on no input or weight fold into
constants, and lets a node that cannot be converted be skipped while the walk goes on
to find every other unsupported op in the same run.
"""

from __future__ import annotations

import itertools
import re
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

from acekit.api import ParseError
from acekit.ir import Graph, Value
from acekit.logging import get_logger
from acekit.parsing import ModelRaisedError, add_tensor_constant, free_ref
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.errors import UnsupportedOp
from acekit_fx.handlers import lookup
from acekit_fx.naming import describe_target, generic_base, sanitize, source_location
from acekit_fx.values import (
    POISON,
    ConstTensor,
    is_constant,
    is_poisoned,
    zip_concrete,
)

log = get_logger(__name__)

#: Binds a placeholder: (context, FX node, example value) -> bound value.
PlaceholderBinder = Callable[[NodeContext, torch.fx.Node, Any], Any]
#: The dotted module path an FX node belongs to (``''`` for the root module).
Scope = Callable[[torch.fx.Node], str]

# Targets whose result changes from call to call: never folded into constants.
_RANDOM_NAMES = frozenset(
    {
        "rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "randperm",
        "bernoulli", "bernoulli_", "multinomial", "normal", "normal_", "uniform_",
        "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
        "feature_alpha_dropout", "feature_dropout", "stochastic_depth", "native_dropout",
    }
)  # fmt: skip
_INPLACE_FUNCTIONS = frozenset(
    {"iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "iand", "ior"}
)


class Converter:
    """Converts FX graphs into nodes of one IR graph.

    ``prefix`` names the nodes of a graph inlined into another (a ``torch.fx.wrap``-ed
    function captured with torch.export); such a child converter shares the parent's
    names, parameters and list of unsupported ops, and does not log per node.
    """

    def __init__(
        self,
        graph: Graph,
        root_name: str,
        *,
        log_nodes: bool = True,
        prefix: str = "",
        parent: Converter | None = None,
        subgraph: str | None = None,
    ) -> None:
        self.graph = graph
        self.root_name = root_name
        self.log_nodes = log_nodes
        self.prefix = prefix
        self.fixed_subgraph = subgraph
        if parent is None:
            self.unsupported: list[UnsupportedOp] = []
            self._op_counters: dict[str, itertools.count[int]] = {}
            self._tensor_values: dict[int, Value] = {}
            #: Programs exported for opaque calls, reused for calls with the same signature.
            self.export_cache: dict[Any, Any] = {}
        else:
            self.unsupported = parent.unsupported
            self._op_counters = parent._op_counters
            self._tensor_values = parent._tensor_values
            self.export_cache = parent.export_cache
        self.owner: torch.nn.Module | None = None
        #: The state-dict keys of the user's model, when it is at hand. A ``get_attr``
        #: tensor outside them (a plain tensor attribute, or a ``_tensor_constant0`` that
        #: torch.fx made of a tensor built in ``forward``) is a constant, though the traced
        #: GraphModule registered it as a buffer.
        self.state_keys: frozenset[str] | None = None if parent is None else parent.state_keys
        #: Tensor shapes by FX node name with the free input dims at other sizes (see
        #: :func:`acekit_fx.tracing.shadow_shapes`); empty when all dims are static.
        self.shadow: dict[str, tuple[int, ...]] = {}

    # -- names -------------------------------------------------------------------------------

    def ir_name(self, fx_node: torch.fx.Node, op: str) -> str:
        """The IR name of the node standing for ``fx_node``.

        The FX name, except where FX named the node after a Python target that the IR
        calls differently: ``getattr_1`` (``x.shape``) becomes ``shape_1`` and
        ``getitem`` on a shape ``gather_1``, numbered per op from 1.
        """
        base = generic_base(fx_node)
        if base is None or sanitize(base) == op:
            return sanitize(fx_node.name)
        counter = self._op_counters.setdefault(op, itertools.count(1))
        return f"{op}_{next(counter)}"

    def prefixed(self, name: str) -> str:
        """``name`` inside an inlined graph gets the caller's name in front."""
        return f"{self.prefix}_{name}" if self.prefix else name

    # -- tensors -------------------------------------------------------------------------------

    def tensor_value(
        self,
        ref: str,
        tensor: torch.Tensor,
        *,
        owner: torch.nn.Module | None,
        leaf: str,
        subgraph: str,
        source_name: str,
        rename: str | None = None,
        kind: str | None = None,
    ) -> Value:
        """The ``parameter`` (or ``constant``) node holding a model tensor, made once.

        Parameters and persistent buffers become ``parameter`` nodes referenced by their
        state-dict key; non-persistent buffers and plain tensor attributes become
        ``constant`` nodes (they are not part of the state dict). ``kind`` (``"parameter"``,
        ``"buffer"``, ``"constant"``) says which when the owner module is not at hand. The
        tensor is copied: the user's model is never aliased.
        """
        known = self._tensor_values.get(id(tensor))
        if known is not None:
            return known
        copy = tensor.detach().clone()
        ref = self._free_ref(ref)
        is_parameter = isinstance(tensor, torch.nn.Parameter)
        buffers = getattr(owner, "_buffers", {}) if owner is not None else {}
        non_persistent: set[str] = getattr(owner, "_non_persistent_buffers_set", set())
        is_state = is_parameter or (leaf in buffers and leaf not in non_persistent)
        if kind is not None:
            is_state = kind in ("parameter", "buffer")
            is_parameter = kind == "parameter"
        if is_state:
            value = self.graph.add_parameter(
                ref,
                copy,
                subgraph=subgraph,
                trainable=is_parameter and tensor.requires_grad,
                source_name=source_name,
            )
        else:
            value = self._constant_tensor(ref, copy, subgraph, source_name, None)
        node = value.producer
        assert node is not None
        if rename and rename != node.name and not self.graph.has_node(rename):
            self.graph.rename(node, rename)
        self._tensor_values[id(tensor)] = value
        return value

    def materialise(self, const: ConstTensor, concrete: dict[int, Any]) -> Value:
        """The ``constant`` node of a constant tensor, created on first use."""
        if const.value is None:
            name = self.prefixed(const.name)
            const.value = self._constant_tensor(
                self._free_ref(sanitize(name)),
                const.tensor.detach().clone(),
                const.subgraph,
                const.name,
                const.location,
            )
        concrete[id(const.value)] = const.tensor
        return const.value

    def _constant_tensor(
        self, ref: str, tensor: torch.Tensor, subgraph: str, source: str, location: str | None
    ) -> Value:
        return add_tensor_constant(
            self.graph,
            ref,
            tensor,
            name=sanitize(ref),
            subgraph=subgraph,
            source_name=source,
            location=location,
        )

    def _free_ref(self, ref: str) -> str:
        return free_ref(self.graph, ref)

    # -- the walk ------------------------------------------------------------------------

    def run(
        self,
        gm: torch.fx.GraphModule,
        inputs: Sequence[Any],
        *,
        bind_placeholder: PlaceholderBinder,
        scope: Scope,
    ) -> Any:
        """Convert every node of ``gm``; returns what its output node is bound to.

        ``inputs`` are the example values of the placeholders, in order.
        """
        interpreter = torch.fx.Interpreter(gm, garbage_collect_values=False)
        interpreter.args_iter = iter(inputs)
        nodes = list(gm.graph.nodes)
        last_use = _last_uses(nodes)
        env: dict[torch.fx.Node, Any] = {}
        total = len(nodes)
        output: Any = None
        for index, fx_node in enumerate(nodes):
            if self.log_nodes:
                log.info(f"{index + 1}/{total}. Parsing node: '{fx_node.name}'", node=fx_node.name)
            concrete = self._run_node(interpreter, fx_node)
            if fx_node.op == "output":
                output = torch.fx.node.map_arg(fx_node.args[0], lambda n: env[n])
                break
            interpreter.env[fx_node] = concrete
            cx = self._context(fx_node, concrete, env, interpreter, scope)
            bound = self._convert(cx, fx_node, env, bind_placeholder)
            env[fx_node] = bound
            self._rebind_inplace(fx_node, bound, env)
            if self.log_nodes:
                self._log_parsed(cx, bound)
            for done in last_use.get(fx_node, ()):
                interpreter.env.pop(done, None)
        return output

    def free_dims_of(self, fx_arg: Any, example: torch.Tensor) -> dict[int, int]:
        """The dims of ``fx_arg``'s tensor that follow free input dims: dim -> other size."""
        if not isinstance(fx_arg, torch.fx.Node):
            return {}
        other = self.shadow.get(fx_arg.name)
        if other is None or len(other) != example.dim():
            return {}
        return {d: size for d, size in enumerate(other) if size != example.shape[d]}

    def _run_node(self, interpreter: torch.fx.Interpreter, fx_node: torch.fx.Node) -> Any:
        try:
            with torch.no_grad():
                return interpreter.run_node(fx_node)
        except Exception as error:
            location = source_location(fx_node.stack_trace)
            where = f" at {location}" if location else ""
            raise ModelRaisedError(
                f"the model raised while running node '{fx_node.name}'{where} on the example "
                f"inputs: {type(error).__name__}: {error}"
            ) from error

    def _context(
        self,
        fx_node: torch.fx.Node,
        concrete: Any,
        env: dict[torch.fx.Node, Any],
        interpreter: torch.fx.Interpreter,
        scope: Scope,
    ) -> NodeContext:
        local: dict[int, Any] = {}
        for arg in fx_node.all_input_nodes:
            if arg in env and arg in interpreter.env:
                zip_concrete(env[arg], interpreter.env[arg], local)
        if self.fixed_subgraph is not None:
            subgraph = self.fixed_subgraph
        else:
            path = scope(fx_node)
            subgraph = "/".join([self.root_name, *[p for p in path.split(".") if p]])
        cx = NodeContext(
            self, fx_node, subgraph, source_location(fx_node.stack_trace), concrete, local
        )
        cx.concrete_args = torch.fx.node.map_arg(fx_node.args, lambda n: interpreter.env.get(n))
        cx.concrete_kwargs = torch.fx.node.map_arg(fx_node.kwargs, lambda n: interpreter.env.get(n))
        return cx

    def _convert(
        self,
        cx: NodeContext,
        fx_node: torch.fx.Node,
        env: dict[torch.fx.Node, Any],
        bind_placeholder: PlaceholderBinder,
    ) -> Any:
        module = None
        try:
            if fx_node.op == "placeholder":
                return bind_placeholder(cx, fx_node, cx.result)
            if fx_node.op == "get_attr":
                return self._get_attr(cx, fx_node)
            if fx_node.op == "call_module":
                module = self._submodule(fx_node)
            args = torch.fx.node.map_arg(fx_node.args, lambda n: env[n])
            kwargs = torch.fx.node.map_arg(fx_node.kwargs, lambda n: env[n])
            handler = lookup(fx_node, module)
            inlinable = handler is None and _inlinable(fx_node, module)
            if is_poisoned((args, kwargs)):
                if handler is None and not inlinable:
                    raise Unsupported("")
                if inlinable:
                    from acekit_fx.inline import check_call

                    check_call(cx, fx_node, module, args, kwargs)
                return POISON
            if fx_node.op != "call_module" and is_constant((args, kwargs)) and not _random(fx_node):
                return self._fold(cx, fx_node)
            if handler is None:
                if inlinable:
                    from acekit_fx.inline import inline_call

                    return inline_call(self, cx, fx_node, module, args, kwargs)
                raise Unsupported("")
            if module is not None:
                return handler(cx, module, *args, **kwargs)
            return handler(cx, *args, **kwargs)
        except Unsupported as error:
            self._record(cx, fx_node, module, str(error))
        except ParseError:
            raise
        except Exception as error:  # a handler that could not bind or build: report, go on
            self._record(cx, fx_node, module, f"conversion failed: {type(error).__name__}: {error}")
        return POISON

    def _record(self, cx: NodeContext, fx_node: torch.fx.Node, module: Any, reason: str) -> None:
        self.unsupported.append(
            UnsupportedOp(
                describe_target(fx_node, module),
                fx_node.name,
                cx.subgraph,
                cx.location,
                reason,
            )
        )

    def _submodule(self, fx_node: torch.fx.Node) -> torch.nn.Module:
        assert self.owner is not None, "call_module nodes need the traced module"
        return self.owner.get_submodule(str(fx_node.target))

    def _get_attr(self, cx: NodeContext, fx_node: torch.fx.Node) -> Any:
        target = str(fx_node.target)
        owner_path, _, leaf = target.rpartition(".")
        assert self.owner is not None, "get_attr nodes need the traced module"
        owner = self.owner.get_submodule(owner_path) if owner_path else self.owner
        obj = getattr(owner, leaf)
        if not isinstance(obj, torch.Tensor):
            return obj
        if self.state_keys is not None:
            is_state = target in self.state_keys
        else:
            non_persistent: set[str] = getattr(owner, "_non_persistent_buffers_set", set())
            in_buffers = leaf in owner._buffers and leaf not in non_persistent
            is_state = isinstance(obj, torch.nn.Parameter) or in_buffers
        if not is_state:
            return ConstTensor(obj, sanitize(fx_node.name), cx.subgraph, cx.location)
        value = self.tensor_value(
            target,
            obj,
            owner=owner,
            leaf=leaf,
            subgraph=cx.subgraph,
            source_name=fx_node.name,
            rename=sanitize(fx_node.name),
            kind="parameter" if isinstance(obj, torch.nn.Parameter) else "buffer",
        )
        cx.final = value.producer
        return value

    def _fold(self, cx: NodeContext, fx_node: torch.fx.Node) -> Any:
        def freeze(result: Any) -> Any:
            if isinstance(result, torch.Tensor):
                return ConstTensor(result, sanitize(fx_node.name), cx.subgraph, cx.location)
            if isinstance(result, torch.Size):
                return tuple(int(d) for d in result)
            if isinstance(result, tuple | list):
                return type(result)(freeze(r) for r in result)
            return result

        return freeze(cx.result)

    def _rebind_inplace(
        self, fx_node: torch.fx.Node, bound: Any, env: dict[torch.fx.Node, Any]
    ) -> None:
        """After ``x.add_(y)`` (or ``relu(inplace=True)``) later readers of ``x`` see the result."""
        if not fx_node.args or not isinstance(fx_node.args[0], torch.fx.Node):
            return
        if bound is POISON or not _is_inplace(fx_node, self.owner):
            return
        env[fx_node.args[0]] = bound

    def _log_parsed(self, cx: NodeContext, bound: Any) -> None:
        node = cx.final
        if node is None and isinstance(bound, Value) and bound.producer is not None:
            name, subgraph = bound.name, bound.producer.subgraph
        elif node is not None:
            name, subgraph = node.name, node.subgraph
        elif bound is POISON:
            log.info(f"Not parsed: '{cx.fx_node.name}' is not supported", node=cx.fx_node.name)
            return
        else:
            log.info(
                f"Parsed to -> constant {_short(bound)} (Subgraph: '{cx.subgraph}')",
                node=cx.fx_node.name,
            )
            return
        log.info(f"Parsed to -> '{name}' (Subgraph: '{subgraph}')", node=cx.fx_node.name)


def _last_uses(nodes: Sequence[torch.fx.Node]) -> dict[torch.fx.Node, list[torch.fx.Node]]:
    """For each node, the nodes whose example values are no longer needed after it."""
    position = {node: i for i, node in enumerate(nodes)}
    freed: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for node in nodes:
        if node.op == "output":
            continue
        users = [u for u in node.users if u.op != "output"]
        if not users or any(u.op == "output" for u in node.users):
            continue
        last = max(users, key=lambda u: position[u])
        freed.setdefault(last, []).append(node)
    return freed


def _target_name(fx_node: torch.fx.Node) -> str:
    target = fx_node.target
    if isinstance(target, torch._ops.OpOverload):
        return str(target.overloadpacket.__name__)
    if isinstance(target, str):
        return target
    return str(getattr(target, "__name__", ""))


def _random(fx_node: torch.fx.Node) -> bool:
    return _target_name(fx_node) in _RANDOM_NAMES


def _is_inplace(fx_node: torch.fx.Node, owner: torch.nn.Module | None) -> bool:
    name = _target_name(fx_node)
    if fx_node.op == "call_method":
        return name.endswith("_") and not name.endswith("__")
    if fx_node.op == "call_function":
        if name in _INPLACE_FUNCTIONS or fx_node.kwargs.get("inplace") is True:
            return True
        return bool(re.fullmatch(r"[a-z][a-z0-9_]*[a-z0-9]_", name))
    if fx_node.op == "call_module" and owner is not None:
        return getattr(owner.get_submodule(str(fx_node.target)), "inplace", False) is True
    return False


def _inlinable(fx_node: torch.fx.Node, module: Any) -> bool:
    if fx_node.op == "call_module":
        return module is not None
    return fx_node.op == "call_function" and isinstance(fx_node.target, types.FunctionType)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
