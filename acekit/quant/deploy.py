"""From the graph that trains to the graph that deploys.

Quantization-aware training keeps a conv's BatchNorm alive (``fold_bn_weight`` feeding
the conv, ``qat_batch_norm`` after it) so that its statistics can still adapt while the
forward pass quantizes the folded weight. For deployment the pair becomes one conv with
the folded weight and bias, computed from the current weights and running statistics:
the same function the trained module computes in eval mode.
"""

from __future__ import annotations

import torch

from acekit.ir.graph import Graph, Node, Value
from acekit.ir.serialize import graph_from_dict, graph_to_dict
from acekit.quant import qmath

#: Ops that disappear into the op producing their input when the graph is deployed.
FOLDED_AT_DEPLOYMENT = frozenset({"qat_batch_norm"})


def is_weight(value: Value) -> bool:
    """Whether ``value`` is a weight: a parameter, or computed from parameters only."""
    producer = value.producer
    if producer is None or producer.op == "constant":
        return False
    if producer.op == "parameter":
        return True
    return bool(producer.inputs) and all(
        is_weight(v) or (v.producer is not None and v.producer.op == "constant")
        for v in producer.inputs
    )


def deployment_graph(graph: Graph) -> Graph:
    """``graph`` as it deploys: a copy with every QAT BatchNorm folded into its conv.

    Returns ``graph`` itself when there is nothing to fold.
    """
    if not any(node.op in FOLDED_AT_DEPLOYMENT for node in graph.nodes):
        return graph
    copy = graph_from_dict(graph_to_dict(graph))
    for node in list(copy.nodes):
        if node.op == "qat_batch_norm":
            _fold(copy, node)
    return copy


def _fold(graph: Graph, bn: Node) -> None:
    conv = bn.inputs[0].producer
    assert conv is not None, f"{bn.describe()} reads no conv"
    folded_weight = conv.inputs[1]
    fold_node = folded_weight.producer
    assert fold_node is not None and fold_node.op == "fold_bn_weight"
    gamma, beta, mean, var = (_tensor(graph, v) for v in bn.inputs[1:5])
    conv_bias = _tensor(graph, bn.inputs[6]) if len(bn.inputs) > 6 else None
    eps = float(bn.attrs.get("eps", 1e-5))
    weight = _tensor(graph, fold_node.inputs[0])
    with torch.no_grad():
        new_weight = qmath.fold_bn_weight(weight, gamma, var, eps)
        new_bias = qmath.fold_bn_bias(conv_bias, gamma, beta, mean, var, eps)
    name = conv.name
    weight_value = graph.add_parameter(
        f"{name}.deployed_weight", new_weight.contiguous(), subgraph=conv.subgraph
    )
    bias_value = graph.add_parameter(f"{name}.deployed_bias", new_bias, subgraph=conv.subgraph)
    weight_value.quant = folded_weight.quant
    conv.set_inputs([conv.inputs[0], weight_value, bias_value])
    if bn.output.quant is not None:
        conv.output.quant = bn.output.quant
    graph.replace_all_uses(bn.output, conv.output)
    _erase_unused(graph, bn)
    _erase_unused(graph, fold_node)


def _erase_unused(graph: Graph, node: Node) -> None:
    """Erase ``node`` if nothing reads it, then the parameters only it read."""
    if any(value.uses for value in node.outputs):
        return
    inputs = {id(v.producer): v.producer for v in node.inputs if v.producer is not None}
    graph.erase(node)
    for producer in inputs.values():
        if producer.op in ("parameter", "constant"):
            _erase_unused(graph, producer)


def _tensor(graph: Graph, value: Value) -> torch.Tensor:
    producer = value.producer
    assert producer is not None and producer.op == "parameter", f"{value} is no parameter"
    return graph.tensors[str(producer.attrs["ref"])].detach()
