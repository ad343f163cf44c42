"""Generate a torch module from a Graph: one kernel call per IR op.

The module is a ``torch.fx.GraphModule`` whose code calls the kernels of
:mod:`acekit.runtime.registry` in the graph's order. Parameters and buffers live in
nested submodules that mirror their refs, so ``state_dict()`` keys are the refs (the
original model's state_dict keys); constant tensors are non-persistent buffers (they move
with ``.to(device)`` but stay out of the state_dict). Parameters share storage with
``graph.tensors``: training the module updates the graph's tensors in place (until the
module is moved to another device or dtype, which makes new tensors).

Graphs may come from files (untrusted), so no string of the graph reaches the generated
source as it is: local names and submodule keys are identifiers the generator makes
(``[A-Za-z0-9_]``, never a keyword or ``self``), keyword arguments must be plain
identifiers, and parameter refs must pass :func:`acekit.ir.file_schema.ref_problem`, which
leaves nothing torch.fx could turn into code. Everything else (attribute values,
constants) reaches the code only through ``repr``.
"""

from __future__ import annotations

import keyword
import operator
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx
from torch import nn

from acekit.ir.file_schema import ref_problem
from acekit.ir.graph import Graph, Node, Value
from acekit.quant.rules import QuantRules
from acekit.runtime.fake_quant import fake_quantize, quantize_bias
from acekit.runtime.registry import get_kernel

_IDENTIFIER_RE = re.compile(r"[^0-9A-Za-z_]")
_KEYWORD_ARG_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Names a GraphModule uses itself: a parameter there would shadow the module's machinery.
_RESERVED = frozenset({"graph", "code", "forward", "training", "meta", "_code", "_graph"})


class CodegenError(ValueError):
    """The graph cannot be turned into a module (missing kernel, bad ref, ...)."""


def to_module(
    graph: Graph,
    *,
    quantize: bool = False,
    learnable_scales: bool = False,
    taps: Mapping[str, nn.Module] | None = None,
    rules: QuantRules | None = None,
    export: bool = False,
) -> torch.fx.GraphModule:
    """A torch module that computes ``graph``.

    It runs forward and backward, moves between devices, has a ``state_dict`` keyed by
    the parameter refs, deep-copies, and follows ``train()``/``eval()`` in the ops whose
    kernels use the training flag (dropout, batch_norm, ...). It starts in eval mode, the
    mode graphs are parsed in.

    With ``quantize``, every value whose quant spec is calibrated and not skipped is
    fake-quantized where it is produced, so all its readers see the quantized tensor. The
    scales and zero points live in the submodule ``quantizers.<value>`` (state_dict keys
    ``quantizers.<value>.scale`` / ``.zero_point``); ``learnable_scales`` makes the scales
    parameters (quantization-aware training) instead of buffers.

    ``taps`` maps value names to modules called on the value where it is produced (its
    readers get what the tap returns): calibration observes tensors this way.

    ``rules`` are the target's: where they set ``bias_bits``, the bias of an op whose
    rule names a ``bias`` input is rounded to the integer grid of ``s_input *
    s_weight`` (as the runtime adds it to its accumulator), and quantized values are
    exported in the containers of ``storage_bits``. Without rules biases stay float.

    With ``export`` the module is the one ONNX exports trace: ops defined with an
    ``onnx`` lowering call it instead of their kernel (:class:`acekit.ops.OpDef`).
    """
    builder = _Builder(
        graph,
        quantize=quantize,
        learnable_scales=learnable_scales,
        taps=taps,
        rules=rules,
        export=export,
    )
    return builder.build()


#: The submodule of a generated module that holds the quantizers' scales.
QUANTIZERS = "quantizers"
#: The submodule of a generated module that holds the taps.
TAPS = "taps"


def _class_name(name: str) -> str:
    cleaned = _IDENTIFIER_RE.sub("_", name) or "Graph"
    if cleaned[0].isdigit() or keyword.iskeyword(cleaned):
        cleaned = f"Graph_{cleaned}"
    return cleaned


class _Builder:
    def __init__(
        self,
        graph: Graph,
        *,
        quantize: bool,
        learnable_scales: bool,
        taps: Mapping[str, nn.Module] | None,
        rules: QuantRules | None,
        export: bool = False,
    ) -> None:
        self.graph = graph
        self.export = export
        self.rules = rules
        self.taps = dict(taps or {})
        self.quantize = quantize
        self.learnable_scales = learnable_scales
        self.quantizers: dict[str, str] = {}
        self.tapped: dict[str, str] = {}
        self.scales: dict[int, torch.fx.Node] = {}
        self.root = nn.Module()
        self.fx = torch.fx.Graph()
        self.env: dict[int, Any] = {}
        self.attrs_by_ref: dict[str, torch.fx.Node] = {}
        self.training: torch.fx.Node | None = None

    def build(self) -> torch.fx.GraphModule:
        for node in self.graph.input_nodes:
            placeholder = self.fx.placeholder(_local_name(node.name))
            self._bind(node.output, placeholder)
        for node in self.graph.nodes:
            if node.op == "input":
                continue
            if node.op == "output":
                self._output(node)
            elif node.op == "parameter":
                self._parameter(node)
            elif node.op == "constant":
                self._constant(node)
            else:
                self._call(node)
        self.fx.lint()
        module = torch.fx.GraphModule(self.root, self.fx, class_name=_class_name(self.graph.name))
        module.meta["acekit_graph"] = self.graph.name
        module.meta["acekit_quantizers"] = dict(self.quantizers)
        # Graphs are parsed in eval mode: the module starts there too (train() for QAT).
        return module.eval()

    # -- nodes -------------------------------------------------------------------------

    def _parameter(self, node: Node) -> None:
        ref = str(node.attrs["ref"])
        if ref not in self.attrs_by_ref:
            tensor = self._tensor(node, ref)
            trainable = bool(node.attrs.get("trainable", True))
            owner, leaf = self._owner(node, ref)
            with _holding(ref):
                if trainable and (tensor.is_floating_point() or tensor.is_complex()):
                    owner.register_parameter(leaf, nn.Parameter(tensor, requires_grad=True))
                else:
                    owner.register_buffer(leaf, tensor, persistent=True)
            self.attrs_by_ref[ref] = self.fx.get_attr(ref)
        self._bind(node.output, self.attrs_by_ref[ref])

    def _constant(self, node: Node) -> None:
        ref = node.attrs.get("ref")
        if ref is None:
            self._bind(node.output, node.attrs.get("value"))
            return
        ref = str(ref)
        if ref not in self.attrs_by_ref:
            tensor = self._tensor(node, ref)
            owner, leaf = self._owner(node, ref)
            with _holding(ref):
                owner.register_buffer(leaf, tensor, persistent=False)
            self.attrs_by_ref[ref] = self.fx.get_attr(ref)
        self._bind(node.output, self.attrs_by_ref[ref])

    def _call(self, node: Node) -> None:
        try:
            kernel = get_kernel(node.op)
        except KeyError as error:
            raise CodegenError(f"cannot generate {node.describe()}: {error}") from None
        args = tuple(self._read(value, node) for value in node.inputs)
        bias = self._bias_index(node)
        if bias is not None:
            args = self._quantized_bias(node, args, bias)
        kwargs = dict(node.attrs)
        for key in kwargs:
            if not isinstance(key, str) or not _KEYWORD_ARG_RE.match(key) or keyword.iskeyword(key):
                raise CodegenError(
                    f"cannot generate {node.describe()}: attribute key {key!r} is not an identifier"
                )
        if kernel.uses_training and kwargs.get("training") is None:
            kwargs["training"] = self._training_flag()
        fn = kernel.export_fn if self.export and kernel.export_fn is not None else kernel.fn
        call = self.fx.call_function(fn, args, kwargs, name=_local_name(node.name))
        outputs = node.outputs
        if len(outputs) == 1:
            self._bind(outputs[0], call)
            return
        for i, value in enumerate(outputs):
            item = self.fx.call_function(operator.getitem, (call, i), name=_local_name(value.name))
            self._bind(value, item)

    def _output(self, node: Node) -> None:
        results = [self._read(value, node) for value in node.inputs]
        structure = node.attrs.get("structure")
        if structure is None:
            self.fx.output(results[0] if len(results) == 1 else tuple(results))
        else:
            self.fx.output(_rebuild(structure, results))

    # -- helpers -----------------------------------------------------------------------

    def _bind(self, value: Value, fx_value: Any) -> None:
        spec = value.quant
        if self.quantize and spec is not None and not spec.skip and spec.scale is not None:
            fx_value = self._fake_quantize(value, fx_value)
        tap = self.taps.get(value.name)
        if tap is not None:
            key = _unique(_local_name(value.name), self.tapped)
            self.tapped[key] = value.name
            self._owner_of(f"{TAPS}.{key}").add_module(key, tap)
            fx_value = self.fx.create_node(
                "call_module", f"{TAPS}.{key}", (fx_value,), name=f"{key}_tap"
            )
        self.env[id(value)] = fx_value

    def _fake_quantize(self, value: Value, fx_value: Any) -> torch.fx.Node:
        spec = value.quant
        assert spec is not None and spec.scale is not None and spec.zero_point is not None
        key = _unique(_local_name(value.name), self.quantizers)
        self.quantizers[key] = value.name
        holder = self._owner_of(f"{QUANTIZERS}.{key}.scale")
        scale = torch.tensor(spec.scale, dtype=torch.float32)
        zero_point = torch.tensor(spec.zero_point, dtype=torch.int32)
        if self.learnable_scales:
            holder.register_parameter("scale", nn.Parameter(scale))
        else:
            holder.register_buffer("scale", scale)
        holder.register_buffer("zero_point", zero_point)
        scale_node = self.fx.get_attr(f"{QUANTIZERS}.{key}.scale")
        self.scales[id(value)] = scale_node
        kwargs: dict[str, Any] = {"qmin": spec.qmin, "qmax": spec.qmax, "axis": spec.axis}
        if spec.block_size is not None:
            kwargs["block_size"] = spec.block_size
        if self.rules is not None:
            kwargs["storage"] = self.rules.storage_range(spec.bits, spec.signed)
        return self.fx.call_function(
            fake_quantize,
            (
                fx_value,
                scale_node,
                self.fx.get_attr(f"{QUANTIZERS}.{key}.zero_point"),
            ),
            kwargs,
            name=f"{key}_fq",
        )

    def _bias_index(self, node: Node) -> int | None:
        """The input of ``node`` the rules call its bias, when they quantize biases."""
        if self.rules is None or self.rules.bias_bits is None:
            return None
        rule = self.rules.ops.get(node.op)
        if rule is None or rule.bias is None or rule.weight is None:
            return None
        return rule.bias if rule.bias < len(node.inputs) else None

    def _quantized_bias(self, node: Node, args: tuple[Any, ...], index: int) -> tuple[Any, ...]:
        """Round the bias to the integer grid of ``s_input * s_weight`` when both quantize.

        Integer runtimes add the bias to their accumulator; simulating that rounding
        keeps ``qm(x)`` and the deployed model in step.
        """
        assert self.rules is not None and self.rules.bias_bits is not None
        rule = self.rules.ops[node.op]
        assert rule.weight is not None
        s_input = self._scale_of(node.inputs[rule.activations[0]])
        weight = node.inputs[rule.weight]
        s_weight = self.scales.get(id(weight))
        if s_input is None or s_weight is None or args[index] is None:
            return args
        if weight.quant is not None and weight.quant.block_size is not None:
            return args  # group-wise scales: no one accumulator scale, the bias stays float
        bias = self.fx.call_function(
            quantize_bias,
            (args[index], s_input, s_weight),
            {"bits": self.rules.bias_bits},
            name=f"{_local_name(node.name)}_bias_q",
        )
        return (*args[:index], bias, *args[index + 1 :])

    def _scale_of(self, value: Value) -> torch.fx.Node | None:
        """The quantization scale ``value`` carries, looking through the rules' ops."""
        through = self.rules.bias_scale_through if self.rules is not None else frozenset()
        while id(value) not in self.scales:
            producer = value.producer
            if producer is None or producer.op not in through or not producer.inputs:
                return None
            value = producer.inputs[0]
        return self.scales[id(value)]

    def _owner_of(self, ref: str) -> nn.Module:
        owner = self.root
        for part in ref.split(".")[:-1]:
            child = owner._modules.get(part)
            if child is None:
                child = nn.Module()
                with _holding(ref):
                    owner.add_module(part, child)
            owner = child
        return owner

    def _read(self, value: Value, reader: Node) -> Any:
        try:
            return self.env[id(value)]
        except KeyError:
            raise CodegenError(
                f"{reader.describe()} reads %{value.name}, which no earlier node defines"
            ) from None

    def _training_flag(self) -> torch.fx.Node:
        if self.training is None:
            # `self.training` read once per forward: ops then follow train()/eval().
            self.training = self.fx.get_attr("training")
        return self.training

    def _tensor(self, node: Node, ref: str) -> torch.Tensor:
        try:
            return self.graph.tensors[ref]
        except KeyError:
            raise CodegenError(f"{node.describe()} refers to tensor {ref!r}, not held") from None

    def _owner(self, node: Node, ref: str) -> tuple[nn.Module, str]:
        problem = ref_problem(ref)
        if problem:
            raise CodegenError(f"{node.describe()}: {problem}")
        *path, leaf = ref.split(".")
        if not path and leaf in _RESERVED:
            raise CodegenError(f"{node.describe()}: ref {ref!r} clashes with a module attribute")
        return self._owner_of(ref), leaf


def _local_name(name: str) -> str:
    """An identifier made from ``name``: ``[A-Za-z0-9_]`` only, never a keyword or ``self``.

    It names generated locals and submodule keys; leading digits are kept (torch.fx and
    ``getattr`` paths handle them without pasting the name as code).
    """
    cleaned = _IDENTIFIER_RE.sub("_", name) or "value"
    if keyword.iskeyword(cleaned) or cleaned == "self" or cleaned.startswith("__"):
        cleaned = f"v_{cleaned}"
    return cleaned


def _unique(base: str, taken: dict[str, str]) -> str:
    """``base``, or ``base_1``, ...: free in ``taken`` and not an ``nn.Module`` attribute."""
    name, i = base, 1
    while name in taken or hasattr(nn.Module, name):
        name, i = f"{base}_{i}", i + 1
    return name


@contextmanager
def _holding(ref: str) -> Iterator[None]:
    """Turn torch's refusal to register ``ref`` (a clashing name) into a CodegenError."""
    try:
        yield
    except (KeyError, TypeError) as error:
        raise CodegenError(f"cannot hold {ref!r} in the generated module: {error}") from None


def _rebuild(structure: Any, results: list[Any]) -> Any:
    """Nest the flat ``results`` as the output node's ``structure`` describes."""
    if isinstance(structure, int) and not isinstance(structure, bool):
        if not 0 <= structure < len(results):
            raise CodegenError(f"output structure reads result {structure} of {len(results)}")
        return results[structure]
    if not isinstance(structure, tuple) or not structure:
        raise CodegenError(f"malformed output structure {structure!r}")
    kind = structure[0]
    if kind == "tuple":
        return tuple(_rebuild(item, results) for item in structure[1])
    if kind == "list":
        return [_rebuild(item, results) for item in structure[1]]
    if kind == "dict":
        return {key: _rebuild(item, results) for key, item in structure[1]}
    if kind == "const":
        return structure[1]
    raise CodegenError(f"malformed output structure {structure!r}")
