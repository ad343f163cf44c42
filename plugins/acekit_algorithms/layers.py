"""What every algorithm of this plugin needs: the layers, their tensors, their inputs.

A *layer* is a ``conv1d``/``conv2d``/``conv3d``/``linear`` node whose weight is a
parameter held by the graph and read by no other node (changing it must not change
another layer). Algorithms change layers only through their weight and bias tensors,
so the normal export path writes whatever they decided.

Under quantization-aware training a conv followed by BatchNorm (``qat-bn``) reads the
*folded* weight ``fold_bn_weight(W, gamma, var)``, which is what is quantized and
deployed, and ``qat_batch_norm`` adds the folded bias. Such a layer is a layer too: its
:meth:`Layer.weight` and :meth:`Layer.bias` are the folded (deployed) ones, setting the
weight sets ``W = W_folded / k`` (``k = gamma / sqrt(var + eps)``), changing the bias
changes BatchNorm's ``beta`` and scaling output channels scales ``gamma`` and ``beta``,
so every algorithm works on the deployed function while BatchNorm keeps training.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from acekit.ir.graph import Graph, Node, Value
from acekit.ir.quant import QuantSpec
from acekit.quant import qmath
from acekit.quant.context import QuantContext
from acekit.runtime.codegen import to_module
from acekit.runtime.fake_quant import fake_quantize
from acekit.runtime.registry import get_kernel
from acekit.settings import Settings
from acekit_algorithms.originals import float_reference, remember

#: Ops whose weight is input 1 (output channels first) and bias input 2.
LAYER_OPS = frozenset({"conv1d", "conv2d", "conv3d", "linear"})


@attrs.frozen(eq=False)
class FoldedBatchNorm:
    """The trainable BatchNorm folded into a conv under QAT (a ``qat_batch_norm`` node)."""

    node: Node
    gamma_ref: str
    beta_ref: str
    mean_ref: str
    var_ref: str
    conv_bias_ref: str | None
    eps: float

    def scale(self, graph: Graph) -> Tensor:
        """``k = gamma / sqrt(var + eps)``, the per-channel factor folded into the weight."""
        return qmath.bn_scale(graph.tensors[self.gamma_ref], graph.tensors[self.var_ref], self.eps)

    def folded_bias(self, graph: Graph) -> Tensor:
        """The bias the pair adds in eval mode (``qmath.fold_bn_bias``)."""
        tensors = graph.tensors
        conv_bias = None if self.conv_bias_ref is None else tensors[self.conv_bias_ref]
        return qmath.fold_bn_bias(
            conv_bias,
            tensors[self.gamma_ref],
            tensors[self.beta_ref],
            tensors[self.mean_ref],
            tensors[self.var_ref],
            self.eps,
        )


@attrs.frozen(eq=False)
class Layer:
    """One conv or linear node with its parameter refs (and its QAT BatchNorm, if any)."""

    node: Node
    weight_ref: str
    bias_ref: str | None
    bn: FoldedBatchNorm | None = None

    @property
    def output_value(self) -> Value:
        """What the layer computes: the conv's output, or its QAT BatchNorm's."""
        return self.node.outputs[0] if self.bn is None else self.bn.node.outputs[0]

    @property
    def has_bias(self) -> bool:
        """Whether the layer adds a bias it can change (a QAT BatchNorm's ``beta`` counts)."""
        return self.bias_ref is not None or self.bn is not None

    @property
    def weight_value(self) -> Value:
        """The weight's edge (where its quant spec lives)."""
        return self.node.inputs[1]

    @property
    def input_value(self) -> Value:
        """The activation the layer reads."""
        return self.node.inputs[0]

    @property
    def spec(self) -> QuantSpec | None:
        """The weight's calibrated, not skipped spec; ``None`` when it stays float."""
        spec = self.weight_value.quant
        if spec is None or spec.skip or spec.scale is None:
            return None
        return spec

    @property
    def groups(self) -> int:
        """The conv's groups (1 for linear)."""
        return int(self.node.attrs.get("groups", 1))

    def weight(self, graph: Graph) -> Tensor:
        """The weight the layer computes with (folded with its QAT BatchNorm)."""
        weight = graph.tensors[self.weight_ref]
        if self.bn is None:
            return weight
        return qmath.fold_bn_weight(
            weight, graph.tensors[self.bn.gamma_ref], graph.tensors[self.bn.var_ref], self.bn.eps
        )

    def bias(self, graph: Graph) -> Tensor | None:
        """The bias the layer adds (folded from its QAT BatchNorm), or ``None``."""
        if self.bn is not None:
            return self.bn.folded_bias(graph)
        return None if self.bias_ref is None else graph.tensors[self.bias_ref]

    def set_weight(self, graph: Graph, weight: Tensor) -> None:
        """Make the layer compute with ``weight`` (unfolded into ``W`` under QAT)."""
        if self.bn is not None:
            k = self.bn.scale(graph).detach().to(weight)
            weight = weight / k.reshape(-1, *[1] * (weight.dim() - 1))
        set_tensor(graph, self.weight_ref, weight)

    def float_weight(self, context: QuantContext, graph: Graph) -> Tensor:
        """The weight of the float model, before any rounding algorithm changed it."""
        with float_reference(graph, context):
            return self.weight(graph).detach()

    def float_bias(self, context: QuantContext, graph: Graph) -> Tensor | None:
        """The bias of the float model, before bias correction changed it."""
        with float_reference(graph, context):
            bias = self.bias(graph)
        return None if bias is None else bias.detach()

    def remember_weight(self, context: QuantContext, graph: Graph) -> None:
        """Record the float weight before an algorithm changes it (see ``originals``)."""
        remember(context, self.weight_ref, graph.tensors[self.weight_ref])

    def add_to_bias(
        self, graph: Graph, delta: Tensor, context: QuantContext | None = None
    ) -> Layer:
        """Add ``delta`` to the bias (``beta`` under QAT; zeros added where it had none).

        With ``context`` the float value is recorded first. Returns the layer, with its
        new bias ref when one was added.
        """
        layer = self if self.bn is not None else ensure_bias(graph, self)
        ref = layer.bn.beta_ref if layer.bn is not None else layer.bias_ref
        assert ref is not None
        current = graph.tensors[ref]
        if context is not None:
            remember(context, ref, current)
        set_tensor(graph, ref, current.detach() + delta.to(current.device))
        return layer

    def scale_outputs(self, graph: Graph, scale: Tensor) -> None:
        """Divide output channel ``i`` of the layer by ``scale[i]`` (weight and bias)."""
        if self.bn is not None:
            for ref in (self.bn.gamma_ref, self.bn.beta_ref):
                tensor = graph.tensors[ref]
                set_tensor(graph, ref, tensor.detach() / scale.to(tensor.device))
            return
        weight = graph.tensors[self.weight_ref].detach()
        shape = [-1, *[1] * (weight.dim() - 1)]
        set_tensor(graph, self.weight_ref, weight / scale.to(weight.device).reshape(shape))
        if self.bias_ref is not None:
            bias = graph.tensors[self.bias_ref].detach()
            set_tensor(graph, self.bias_ref, bias / scale.to(bias.device))

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """The layer's op on ``x`` with the given weight and bias."""
        attributes = {k: v for k, v in self.node.attrs.items() if k != "training"}
        return get_kernel(self.node.op).fn(x, weight, bias, **attributes)

    def channel_mean(self, output: Tensor) -> Tensor:
        """Per-output-channel mean of a layer output (channels: dim 1 of conv, last of linear)."""
        if self.node.op == "linear":
            return output.reshape(-1, output.shape[-1]).mean(0)
        return output.transpose(0, 1).reshape(output.shape[1], -1).mean(1)


def _parameter_ref(value: Value, *, shared: bool = False) -> str | None:
    producer = value.producer
    if producer is None or producer.op != "parameter":
        return None
    if not shared and len(value.users) != 1:
        return None
    ref = producer.attrs.get("ref")
    return ref if isinstance(ref, str) else None


def _folded(node: Node) -> tuple[str, FoldedBatchNorm] | None:
    """``(W's ref, its BatchNorm)`` of a QAT conv reading ``fold_bn_weight(W, ...)``."""
    fold = node.inputs[1].producer
    users = node.outputs[0].users
    if fold is None or fold.op != "fold_bn_weight" or len(node.inputs[1].users) != 1:
        return None
    if len(users) != 1 or users[0].op != "qat_batch_norm" or len(node.inputs) > 2:
        return None
    bn = users[0]
    weight_ref = _parameter_ref(fold.inputs[0])
    refs = [_parameter_ref(value, shared=True) for value in bn.inputs[1:5]]
    conv_bias = _parameter_ref(bn.inputs[6], shared=True) if len(bn.inputs) > 6 else None
    if (
        weight_ref is None
        or any(ref is None for ref in refs)
        or bn.inputs[0] is not node.outputs[0]
    ):
        return None
    if len(bn.inputs) > 6 and conv_bias is None:
        return None
    gamma, beta, mean, var = (str(ref) for ref in refs)
    eps = float(bn.attrs.get("eps") or 1e-5)
    return weight_ref, FoldedBatchNorm(bn, gamma, beta, mean, var, conv_bias, eps)


def layers(graph: Graph) -> list[Layer]:
    """The graph's layers in execution order (see the module docstring)."""
    found = []
    for node in graph.nodes:
        if node.op not in LAYER_OPS or len(node.inputs) < 2:
            continue
        weight_ref = _parameter_ref(node.inputs[1])
        if weight_ref is None:
            folded = _folded(node)
            if folded is not None:
                found.append(Layer(node, folded[0], None, folded[1]))
            continue
        bias_ref = None
        if len(node.inputs) > 2:
            bias_ref = _parameter_ref(node.inputs[2])
            if bias_ref is None:  # a computed or shared bias cannot be changed here
                continue
        found.append(Layer(node, weight_ref, bias_ref))
    return found


def quantized_layers(graph: Graph) -> list[Layer]:
    """The layers whose weight is quantized with a calibrated spec."""
    return [layer for layer in layers(graph) if layer.spec is not None]


def spec_tensors(spec: QuantSpec, like: Tensor) -> tuple[Tensor, Tensor]:
    """``spec``'s scale and zero point as tensors on ``like``'s device."""
    assert spec.scale is not None and spec.zero_point is not None
    scale = torch.tensor(spec.scale, dtype=torch.float32, device=like.device)
    zero = torch.tensor(spec.zero_point, dtype=torch.int32, device=like.device)
    return scale, zero


def broadcast(values: Tensor, spec: QuantSpec, like: Tensor) -> Tensor:
    """Per-channel ``values`` shaped to broadcast against ``like`` along ``spec.axis``.

    Group-wise values (``spec.block_size``) come back with ``like``'s shape, one per element.
    """
    if spec.axis is None:
        return values.reshape(())
    if spec.block_size is not None:
        return qmath.expand_blocks(values, like.shape, spec.axis, spec.block_size)
    shape = [1] * like.dim()
    shape[spec.axis % like.dim()] = -1
    return values.reshape(shape)


def fake_quantized(tensor: Tensor, spec: QuantSpec) -> Tensor:
    """``tensor`` rounded to ``spec``'s grid and back, as the generated module does."""
    scale, zero = spec_tensors(spec, tensor)
    return fake_quantize(
        tensor,
        scale,
        zero,
        qmin=spec.qmin,
        qmax=spec.qmax,
        axis=spec.axis,
        block_size=spec.block_size,
    )


def set_tensor(graph: Graph, ref: str, new: Tensor) -> None:
    """Replace the tensor ``ref`` of ``graph``, keeping its kind (Parameter or not)."""
    old = graph.tensors[ref]
    new = new.detach().to(dtype=old.dtype, device=old.device).clone()
    graph.tensors[ref] = (
        nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
    )


def ensure_bias(graph: Graph, layer: Layer) -> Layer:
    """``layer`` with a bias parameter (zeros added when it had none)."""
    if layer.bias_ref is not None:
        return layer
    weight = layer.weight(graph)
    base = layer.weight_ref.removesuffix("weight") + "bias"
    ref = base if base != "bias" else f"{layer.node.name}.bias"
    for i in range(1, len(graph.tensors) + 2):
        if ref not in graph.tensors and not graph.has_node(ref):
            break
        ref = f"{base}_{i}"
    zeros = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
    value = graph.add_parameter(ref, zeros, subgraph=layer.node.subgraph)
    layer.node.set_inputs([*layer.node.inputs[:2], value])
    return Layer(layer.node, layer.weight_ref, ref)


class _Catch(nn.Module):
    """A tap that hands the tensor it sees to a callback and passes it on."""

    def __init__(self, callback: Callable[[Tensor], None]) -> None:
        super().__init__()
        self.callback = callback

    def forward(self, x: Tensor) -> Tensor:
        self.callback(x.detach())
        return x


def stream(
    graph: Graph,
    context: QuantContext,
    values: Sequence[Value],
    *,
    quantize: bool,
    batches: int,
) -> Iterator[dict[str, Tensor]]:
    """For each calibration batch, the tensors of ``values`` (by name) as the model sees them.

    ``quantize`` runs the quantized model (values fake-quantized where calibrated); one
    batch at a time, so memory does not grow with the data.
    """
    assert context.calibration is not None
    seen: dict[str, Tensor] = {}
    names = {v.name for v in values}

    def catch(name: str, tensor: Tensor) -> None:
        seen[name] = tensor
        if len(seen) == len(names):
            # Nodes run in graph order: the rest of the model is not needed. For the
            # early layers of a per-layer algorithm this skips most of each forward.
            raise _AllSeen

    module = to_module(
        graph,
        quantize=quantize,
        taps={n: _Catch(functools.partial(catch, n)) for n in names},
    )
    module.to(context.device)
    with torch.no_grad():
        for batch in context.calibration.batches(limit=batches):
            seen.clear()
            with contextlib.suppress(_AllSeen):
                module(*(t.to(context.device) for t in batch))
            yield dict(seen)


class _AllSeen(Exception):
    """Raised by a tap once every value a stream asked for has been seen."""


class _Mark(nn.Module):
    """A tap that marks where a value is produced (the value passes through unchanged)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return x


#: Tensors (and other results) of a generated module's nodes, by node.
_Env = dict[torch.fx.Node, object]


class Frontier:
    """The model run over calibration batches once, node by node, pausing at each value asked.

    :func:`stream` runs the model from its inputs every time; an algorithm that visits
    layers in execution order would rerun the prefix for every layer. A frontier keeps,
    per batch, only the tensors that nodes not yet run will read, and runs each node once
    over the batches kept: asking for a value runs the nodes up to where it is produced.

    Nodes that read no input (parameters, their fake quantization, BatchNorm folding) are
    evaluated when read, not kept: a weight changed in the graph and passed to
    :meth:`refresh` is what every node run afterwards computes with. Ask for values in
    execution order; one whose readers have all run is no longer held.

    ``samples`` caps the samples kept: batches are read until it is reached, and the last
    one is cut to it (its tensors whose first dimension is the batch's).
    """

    def __init__(
        self,
        graph: Graph,
        context: QuantContext,
        values: Sequence[Value],
        *,
        quantize: bool,
        batches: int,
        samples: int | None = None,
    ) -> None:
        assert context.calibration is not None
        names = {v.name for v in values}
        module = to_module(graph, quantize=quantize, taps={n: _Mark(n) for n in names})
        self.module = module.to(context.device).eval()
        self.nodes = list(module.graph.nodes)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        self.marks: dict[str, torch.fx.Node] = {}
        self.static: set[torch.fx.Node] = set()
        for node in self.nodes:
            if node.op == "call_module":
                tap = module.get_submodule(str(node.target))
                if isinstance(tap, _Mark):
                    self.marks[tap.name] = node
            if node.op == "get_attr" or (
                node.op in ("call_function", "call_method", "call_module")
                and all(n in self.static for n in node.all_input_nodes)
            ):
                self.static.add(node)
        self.last_use = {
            node: max((self.index[user] for user in node.users), default=self.index[node])
            for node in self.nodes
        }
        self.envs: list[_Env] = []
        kept = 0
        placeholders = [node for node in self.nodes if node.op == "placeholder"]
        for batch in context.calibration.batches(limit=batches):
            tensors = [t.to(context.device) for t in batch]
            size = int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1
            if samples is not None:
                left = samples - kept
                if left <= 0:
                    break
                if size > left:
                    tensors = [t[:left] if t.dim() and t.shape[0] == size else t for t in tensors]
                    size = left
            self.envs.append(dict(zip(placeholders, tensors, strict=False)))
            kept += size
        self.position = 0

    def value(self, name: str) -> list[Tensor]:
        """The tensor of value ``name`` on every batch kept, as its readers see it."""
        node = self.marks[name]
        self._advance(self.index[node] + 1)
        if any(node not in env for env in self.envs):
            raise ValueError(f"value {name!r} was asked for after its readers ran")
        return [env[node] for env in self.envs]  # type: ignore[misc]

    def refresh(self, graph: Graph, refs: Sequence[str]) -> None:
        """Make the nodes not yet run compute with the graph's current ``refs`` tensors.

        The module's tensor is replaced, not written in place: a generated module shares
        its tensors' storage with the graph, where the float originals may still live.
        """
        for ref in refs:
            owner_path, _, leaf = ref.rpartition(".")
            owner = self.module.get_submodule(owner_path)
            held = getattr(owner, leaf)
            new = graph.tensors[ref].detach().to(held.device, held.dtype).clone()
            if leaf in owner._parameters:
                owner.register_parameter(leaf, nn.Parameter(new, requires_grad=False))
            else:
                owner.register_buffer(leaf, new)

    def _advance(self, stop: int) -> None:
        if stop <= self.position:
            return
        with torch.no_grad():
            cache: _Env = {}
            for i in range(self.position, stop):
                node = self.nodes[i]
                if node in self.static or node.op in ("placeholder", "output"):
                    continue
                # Free what no later node reads as soon as it is read: a stem's outputs
                # for all samples would otherwise live until the layer asked for.
                done = [n for n in (*node.all_input_nodes, node) if self.last_use[n] <= i]
                for env in self.envs:
                    env[node] = self._run(node, env, cache)
                    for n in done:
                        env.pop(n, None)
            for env in self.envs:
                for node in [n for n in env if self.last_use[n] < stop]:
                    del env[node]
        self.position = stop

    def _read(self, node: torch.fx.Node, env: _Env, cache: _Env) -> object:
        if node not in self.static:
            return env[node]
        if node not in cache:
            cache[node] = self._run(node, env, cache)
        return cache[node]

    def _run(self, node: torch.fx.Node, env: _Env, cache: _Env) -> object:
        def read(n: torch.fx.Node) -> Any:
            return self._read(n, env, cache)

        if node.op == "get_attr":
            held: object = self.module
            for part in str(node.target).split("."):
                held = getattr(held, part)
            return held
        args = torch.fx.node.map_arg(node.args, read)
        kwargs = torch.fx.node.map_arg(node.kwargs, read)
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return self.module.get_submodule(str(node.target))(*args, **kwargs)


class CalibrationReader:
    """Mixin for an algorithm pass that reads ``batches`` calibration batches.

    ``acekit.compile`` asks each reader how many batches it needs, so that a one-shot
    source (a generator) keeps enough of them to replay for every later reader.
    """

    batches: int | None

    def calibration_batches(self, settings: Settings) -> int:
        """How many calibration batches the pass reads: ``batches``, else ``stats_steps``."""
        return self.batches if self.batches is not None else settings.training.stats_steps


def calibration_batches(context: QuantContext, wanted: int | None) -> int:
    """How many batches an algorithm reads: ``wanted``, else the settings' ``stats_steps``."""
    return wanted if wanted is not None else context.settings.training.stats_steps


def after_ptq_reason(context: QuantContext | None, targets: Sequence[Layer]) -> str | None:
    """Why an algorithm that refines calibrated layers cannot run, or ``None``."""
    reason = no_data_reason(context)
    if reason is None and not targets:
        reason = "no conv/linear layer has calibrated quantized weights (run it after ptq)"
    return reason


def no_data_reason(context: QuantContext | None) -> str | None:
    """Why an algorithm that needs calibration data cannot run, or ``None``."""
    if context is None:
        return "it runs inside acekit.compile only"
    if context.calibration is None:
        return "no calibration_inputs were given"
    return None
