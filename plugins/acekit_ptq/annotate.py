"""The ``quantize`` pass: mark the tensors to quantize with the target's rules.

For every op the target runs quantized (its :class:`~acekit.quant.QuantRules`), the
activation inputs get the target's activation spec, the weight its per-channel weight
spec and, where the target fuses ``DQ -> op -> Q``, the output an activation spec.
Skips and bit widths come from the settings. Scales are left empty: ``calibrate``
measures them.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs

from acekit.ir.graph import Graph, Node, Value
from acekit.ir.quant import QuantSpec
from acekit.logging import get_logger
from acekit.ops import OPDEFS
from acekit.passes import Pass, PassResult
from acekit.quant.context import current_context
from acekit.quant.deploy import FOLDED_AT_DEPLOYMENT, is_weight
from acekit.quant.rules import OpRule, QuantRules
from acekit.settings import Settings
from acekit_ptq.float_readers import split_float_readers
from acekit_ptq.selection import Selection, select

log = get_logger(__name__)


@attrs.frozen
class Quantize(Pass):
    """Annotate the graph with quantization specs (no scales yet)."""

    name: ClassVar[str] = "quantize"
    summary: ClassVar[str] = "mark the tensors to quantize with the target's rules and the skips"

    def run(self, graph: Graph) -> PassResult:
        """Set ``Value.quant`` on the inputs, weights and outputs of quantizable ops."""
        context = current_context(self.name)
        rules, settings = context.rules, context.settings
        selection = select(graph, settings, rules)
        for node in graph.nodes:
            for value in node.outputs:
                value.quant = None
        quantized = skipped = 0
        marks = _Marks()
        unsupported: dict[str, list[str]] = {}
        for node in list(graph.nodes):
            rule = rules.ops.get(node.op)
            if rule is None:
                if any(is_weight(value) for value in node.inputs):
                    unsupported.setdefault(node.op, []).append(node.name)
                continue
            reason = selection.skipped.get(node.name)
            if reason is None:
                reason = _unsupported_bits(node, rules, selection, settings)
            if reason is not None:
                _mark_skipped(node, rule, reason)
                log.info(f"Quantization: Keeping node '{node.name}' in float ({reason})")
                skipped += 1
                continue
            activation_bits = selection.activation_bits.get(
                node.name, settings.quantization.activations_num_bits
            )
            weight_bits = selection.weight_bits.get(
                node.name, settings.quantization.weights_num_bits
            )
            _annotate(node, rule, rules, activation_bits, weight_bits, marks)
            quantized += 1
        split = split_float_readers(graph, marks.uses, marks.produced)
        if split:
            log.info(
                f"Quantization: {split} tensors are quantized only for their integer readers; "
                "their float readers (residual adds, ...) read them unrounded"
            )
        _log_unsupported(unsupported)
        context.notes["quantized"] = quantized
        context.notes["skipped"] = skipped
        return PassResult(graph, quantized > 0, {"quantized": quantized, "skipped": skipped})


def _log_unsupported(unsupported: dict[str, list[str]]) -> None:
    """One line per op type with weights that the target's rules do not run quantized."""
    for op, names in unsupported.items():
        shown = ", ".join(f"'{name}'" for name in names[:3]) + (", ..." if len(names) > 3 else "")
        log.info(
            f"Quantization: Keeping {len(names)} '{op}' node(s) in float "
            f"(the target has no quantized '{op}'): {shown}"
        )


def _unsupported_bits(
    node: Node, rules: QuantRules, selection: Selection, settings: Settings
) -> str | None:
    abits = selection.activation_bits.get(node.name, settings.quantization.activations_num_bits)
    wbits = selection.weight_bits.get(node.name, settings.quantization.weights_num_bits)
    if abits not in rules.activation_bits:
        return f"the target runs {abits}-bit activations in float only"
    if wbits not in rules.weight_bits:
        return f"the target runs {wbits}-bit weights in float only"
    return None


@attrs.define
class _Marks:
    """The reads that take a quantized tensor, and the tensors quantized as an output."""

    uses: set[tuple[int, int]] = attrs.Factory(set)
    produced: set[int] = attrs.Factory(set)

    def read(self, node: Node, index: int, rules: QuantRules) -> None:
        """``node.inputs[index]`` is read quantized, and so are the pass-through ops
        above it (the tensor is quantized at their input, see :func:`_upstream`)."""
        self.uses.add((id(node), index))
        value = node.inputs[index]
        while _passes_through(value, rules):
            assert value.producer is not None
            self.uses.add((id(value.producer), 0))
            value = value.producer.inputs[0]


def _annotate(
    node: Node,
    rule: OpRule,
    rules: QuantRules,
    activation_bits: int,
    weight_bits: int,
    marks: _Marks,
) -> None:
    activation = rules.input_spec(rule, activation_bits)
    inputs = node.inputs
    activations = rule.activations
    if rule.epilogue_of:
        activations = _residual_inputs(node, rule, rules)
    for index in activations:
        if index < len(inputs) and index != rule.weight:
            value = inputs[index]
            if is_weight(value):
                _mark(value, rules.weight_spec(None, weight_bits))
            elif not _is_constant(value):
                source = _upstream(value, rules)
                spec = rules.input_spec(rule, activation_bits, nonnegative=_nonnegative(source))
                _mark(source, spec)
                marks.read(node, index, rules)
    if rule.weight is not None and rule.weight < len(inputs):
        weight = inputs[rule.weight]
        if is_weight(weight):
            dims = [d for d in weight.type.shape or () if isinstance(d, int)]
            per_channel = None
            if dims and len(dims) == len(weight.type.shape or ()):
                per_channel = math.prod(dims) // max(dims[rule.weight_axis], 1)
            spec = rules.weight_spec(rule.weight_axis, weight_bits, per_channel=per_channel)
            _mark(weight, spec)
        elif not _is_constant(weight):
            _mark(weight, activation)
            marks.read(node, rule.weight, rules)
    if rule.output and node.outputs:
        output = node.outputs[0]
        while len(output.users) == 1 and (
            output.users[0].op in rules.absorbed or output.users[0].op in FOLDED_AT_DEPLOYMENT
        ):
            output = output.users[0].outputs[0]
        _mark(output, rules.activation_spec(activation_bits))
        marks.produced.add(id(output))


def _residual_inputs(node: Node, rule: OpRule, rules: QuantRules) -> tuple[int, ...]:
    """The inputs of a residual op (``rule.epilogue_of``) to quantize: all but the fused one.

    The input an epilogue op (a conv) produces stays float so that the runtime fuses this
    op into that conv; when several do, the deepest (longest path from the graph's
    inputs, as NVIDIA ModelOpt picks it) is the fused one. No such input: not a residual,
    nothing is quantized.
    """
    fused = [
        i
        for i in rule.activations
        if i < len(node.inputs) and _epilogue(node.inputs[i], rule, rules)
    ]
    if not fused:
        return ()
    keep = max(fused, key=lambda i: _depth(node.inputs[i], {}))
    return tuple(i for i in rule.activations if i != keep)


def _epilogue(value: Value, rule: OpRule, rules: QuantRules) -> bool:
    """Whether ``value`` comes from an ``epilogue_of`` op whose only reader leads here."""
    while value.producer is not None and len(value.users) == 1:
        producer = value.producer
        if producer.op in rule.epilogue_of:
            return True
        if producer.op not in rules.absorbed or not producer.inputs:
            return False
        value = producer.inputs[0]
    return False


def _depth(value: Value, memo: dict[int, int]) -> int:
    """The number of ops on the longest path from a graph input to ``value``."""
    stack = [value]
    while stack:
        current = stack[-1]
        producer = current.producer
        if producer is None or id(producer) in memo:
            stack.pop()
            continue
        pending = [
            v for v in producer.inputs if v.producer is not None and id(v.producer) not in memo
        ]
        if pending:
            stack.extend(pending)
            continue
        memo[id(producer)] = 1 + max(
            (memo[id(v.producer)] for v in producer.inputs if v.producer is not None), default=0
        )
        stack.pop()
    return 0 if value.producer is None else memo[id(value.producer)]


def _upstream(value: Value, rules: QuantRules) -> Value:
    """Where to quantize ``value``: above the pass-through ops that produce it.

    A pass-through op with several outputs (``unbind`` splitting attention's packed q,
    k, v) is passed too: its input, quantized once, gives every output the same scale.
    """
    while _passes_through(value, rules):
        assert value.producer is not None
        value = value.producer.inputs[0]
    return value


def _passes_through(value: Value, rules: QuantRules) -> bool:
    """Whether ``value`` comes from a pass-through op (quantized at that op's input)."""
    producer = value.producer
    return producer is not None and producer.op in rules.passthrough and bool(producer.inputs)


def _nonnegative(value: Value) -> bool:
    """Whether ``value`` is never negative: its producer's op definition says so."""
    producer = value.producer
    if producer is None:
        return False
    opdef = OPDEFS.get(producer.op)
    return opdef is not None and opdef.nonnegative


def _mark_skipped(node: Node, rule: OpRule, reason: str) -> None:
    skipped = QuantSpec.skipped(reason)
    if rule.weight is not None and rule.weight < len(node.inputs):
        weight = node.inputs[rule.weight]
        if is_weight(weight) and weight.quant is None:
            weight.quant = skipped
    for value in node.outputs:
        if value.quant is None:
            value.quant = skipped


def _mark(value: Value, spec: QuantSpec) -> None:
    if not _is_float(value):
        return
    current = value.quant
    if current is None or current.skip:
        value.quant = spec
        return
    if spec.symmetric and not current.symmetric:
        # A reader that needs zero point 0 (an op rule's own spec) gets it; affine
        # readers run on a symmetric tensor too.
        current = attrs.evolve(spec, bits=max(spec.bits, current.bits))
    if current.bits < spec.bits:
        # Two readers want different widths: the wider one serves both.
        current = attrs.evolve(current, bits=spec.bits)
    value.quant = current


def _is_float(value: Value) -> bool:
    dtype = value.type.dtype
    return dtype is None or dtype.is_floating_point


def _is_constant(value: Value) -> bool:
    return value.producer is not None and value.producer.op == "constant"
