"""``fold-bn``: fold evaluation-mode BatchNorm into the conv or linear layer before it.

``bn(conv(x, W, b)) = conv(x, W * s, (b - mean) * s + beta)`` with
``s = gamma / sqrt(var + eps)`` per output channel. The conv keeps its name, its
subgraph path and its parameters' names; the BatchNorm node and the parameters only it
read leave the graph.
"""

from __future__ import annotations

from typing import ClassVar, Final

import attrs
import torch

from acekit.ir import Graph, Node, Value
from acekit.logging import get_logger
from acekit.passes import Pass, PassResult
from acekit.quant import qmath
from acekit_cleanup._rewrite import MISSING, Rewriter, fresh_tensor_ref, held_tensor

log = get_logger(__name__)

#: Ops whose weight's first axis is the output channel, the axis BatchNorm normalises.
FOLDABLE_OPS: Final = frozenset({"conv1d", "conv2d", "conv3d", "linear"})


def _tensor(graph: Graph, value: Value) -> torch.Tensor | None:
    held = held_tensor(graph, value)
    return held if isinstance(held, torch.Tensor) else None


def _like(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``new`` as the same kind of tensor as ``old`` (a Parameter stays a Parameter)."""
    new = new.to(old.dtype).detach()
    if isinstance(old, torch.nn.Parameter):
        return torch.nn.Parameter(new, requires_grad=old.requires_grad)
    return new


def _bias_ref(weight_ref: str) -> str:
    return (
        weight_ref[: -len("weight")] + "bias"
        if weight_ref.endswith("weight")
        else (weight_ref + ".bias")
    )


def _weight_ref(layer: Node) -> str:
    holder = layer.inputs[1].producer
    ref = holder.attrs.get("ref") if holder is not None else None
    return ref if isinstance(ref, str) else f"{layer.name}.weight"


@attrs.frozen
class _Folded:
    """The new weight and bias of a layer, computed before the graph is touched."""

    weight: torch.Tensor
    bias: torch.Tensor


@attrs.frozen
class FoldBatchNorm(Pass):
    """Fold ``batch_norm`` nodes in evaluation mode into the ``conv1d``/``conv2d``/
    ``conv3d``/``linear`` node that feeds them.

    A BatchNorm is folded only when the layer's result has that BatchNorm as its single
    reader (otherwise the unnormalised result is still needed), when the layer's weight
    and bias and the BatchNorm's statistics are tensors held by the graph, and, after a
    ``linear``, when the result has rank 2 (so BatchNorm's channel axis is the linear's
    output axis). BatchNorm nodes marked ``training=True`` normalise with batch
    statistics and stay unless ``include_training`` is set; those that follow the
    module's mode (``training`` absent) are folded, fixing them to their running
    statistics as evaluation does.

    A parameter that only this layer reads gets the folded tensor under its own name;
    a shared one is left to its other readers and the layer gets a new parameter.
    """

    name: ClassVar[str] = "fold-bn"
    summary: ClassVar[str] = "fold evaluation BatchNorm into the preceding conv/linear"

    #: Also fold BatchNorm nodes parsed in training mode (when the graph will only run
    #: in evaluation).
    include_training: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )

    def run(self, graph: Graph) -> PassResult:
        """Fold every foldable BatchNorm of ``graph``; stats: ``folded``, ``removed``."""
        rewriter = Rewriter(graph)
        folded = 0
        for node in graph.nodes:
            if node.op != "batch_norm" or not rewriter.holds(node):
                continue
            if node.attrs.get("training") and not self.include_training:
                continue
            layer = self._foldable_layer(node)
            if layer is None:
                continue
            new = self._fold(graph, layer, node)
            if new is None:
                continue
            # Names come from the original weight, before it may be replaced.
            weight_ref = _weight_ref(layer)
            self._set_tensor(graph, rewriter, layer, 1, new.weight, weight_ref)
            self._set_tensor(graph, rewriter, layer, 2, new.bias, _bias_ref(weight_ref))
            graph.replace_all_uses(node.output, layer.output)
            rewriter.erase_with_dead_inputs(node)
            folded += 1
        if folded:
            log.info(
                f"Folded {folded} BatchNorm layers",
                pass_name=self.name,
                folded=folded,
                removed=rewriter.net_removed,
            )
        stats = {"folded": folded, "removed": rewriter.net_removed}
        return PassResult(graph, folded > 0, stats)

    @staticmethod
    def _foldable_layer(bn: Node) -> Node | None:
        if len(bn.inputs) not in (5, 6) or len(bn.outputs) != 1:
            return None
        result = bn.inputs[0]
        layer = result.producer
        if layer is None or layer.op not in FOLDABLE_OPS or len(layer.outputs) != 1:
            return None
        if len(result.uses) != 1 or len(layer.inputs) < 2:
            return None
        if layer.op == "linear" and result.type.rank != 2:
            return None
        return layer

    @staticmethod
    def _fold(graph: Graph, layer: Node, bn: Node) -> _Folded | None:
        weight = _tensor(graph, layer.inputs[1])
        bias = held_tensor(graph, layer.inputs[2]) if len(layer.inputs) > 2 else None
        gamma = held_tensor(graph, bn.inputs[1])
        beta = held_tensor(graph, bn.inputs[2])
        mean = _tensor(graph, bn.inputs[3])
        var = _tensor(graph, bn.inputs[4])
        if weight is None or mean is None or var is None or weight.dim() < 2:
            return None
        if any(held is MISSING for held in (bias, gamma, beta)):
            return None
        channels = weight.shape[0]
        parts = [t for t in (bias, gamma, beta, mean, var) if isinstance(t, torch.Tensor)]
        if any(t.numel() != channels for t in parts):
            return None
        eps = float(bn.attrs.get("eps") or 1e-5)
        # Folding in float64 keeps the folded layer within rounding of conv -> bn.
        wide = torch.float64

        def as_wide(held: object, fill: float) -> torch.Tensor:
            if isinstance(held, torch.Tensor):
                return held.detach().to(wide).reshape(channels)
            return torch.full((channels,), fill, dtype=wide)

        wide_gamma, wide_var = as_wide(gamma, 1.0), var.detach().to(wide).reshape(channels)
        new_weight = qmath.fold_bn_weight(weight.detach().to(wide), wide_gamma, wide_var, eps)
        new_bias = qmath.fold_bn_bias(
            as_wide(bias, 0.0),
            wide_gamma,
            as_wide(beta, 0.0),
            mean.detach().to(wide).reshape(channels),
            wide_var,
            eps,
        )
        bias_like = bias if isinstance(bias, torch.Tensor) else weight
        return _Folded(_like(weight, new_weight), _like(bias_like, new_bias).reshape(channels))

    @staticmethod
    def _set_tensor(
        graph: Graph,
        rewriter: Rewriter,
        layer: Node,
        index: int,
        tensor: torch.Tensor,
        base: str,
    ) -> None:
        old = layer.inputs[index] if index < len(layer.inputs) else None
        holder = old.producer if old is not None else None
        ref = holder.attrs.get("ref") if holder is not None else None
        if (
            old is not None
            and holder is not None
            and isinstance(ref, str)
            and len(old.uses) == 1
            and rewriter.readers_of_ref(ref) == 1
            and ref in graph.tensors
        ):
            # Only this layer reads it: the parameter keeps its name, ref and node.
            graph.tensors[ref] = tensor
            return
        weight_node = layer.inputs[1].producer
        assert weight_node is not None
        template = holder if holder is not None and holder.op == "parameter" else weight_node
        value = graph.add_parameter(
            fresh_tensor_ref(graph, base),
            tensor,
            subgraph=template.subgraph or layer.subgraph,
            trainable=bool(template.attrs.get("trainable", False)),
        )
        assert value.producer is not None
        rewriter.note_added(value.producer)
        if old is None:
            layer.set_inputs([*layer.inputs, value])
        else:
            layer.set_input(index, value)
            if holder is not None:
                rewriter.prune([holder])
