"""The ``qat-bn`` pass: conv + BatchNorm pairs that keep training, folded at every step.

For quantization-aware training the BatchNorm after a conv is not folded away once
(``fold-bn``); instead the conv reads ``fold_bn_weight(weight, gamma, running_var)``,
the weight that will be deployed, which the quantizer then quantizes, and the BatchNorm
becomes ``qat_batch_norm``, which divides the scale back out and normalises with batch
statistics while it learns (the first ``freeze_after`` training steps), with the running
statistics afterwards. In eval mode the pair computes exactly the folded conv the target
deploys (Krishnamoorthi, *Quantizing deep convolutional networks for efficient
inference*, 2018, section 3.2).

Run it before ``cleanup`` (whose ``fold-bn`` would otherwise fold the pairs away).
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch

from acekit.ir.graph import Graph, Node
from acekit.logging import get_logger
from acekit.passes import Pass, PassResult

log = get_logger(__name__)

_CONVS = frozenset({"conv1d", "conv2d", "conv3d"})


@attrs.frozen
class QatBatchNorm(Pass):
    """Keep conv + BatchNorm pairs trainable with the deployed (folded) weight quantized."""

    name: ClassVar[str] = "qat-bn"
    summary: ClassVar[str] = "conv + BatchNorm folded at every step, statistics frozen later"

    freeze_after: int = attrs.field(default=1000, validator=attrs.validators.ge(0))

    def run(self, graph: Graph) -> PassResult:
        """Rewrite every conv -> batch_norm pair whose conv weight is a parameter."""
        rewritten = 0
        for node in list(graph.nodes):
            conv = _pair(node)
            if conv is not None:
                self._rewrite(graph, conv, node)
                rewritten += 1
        if rewritten:
            log.info(
                f"BatchNorm kept trainable after {rewritten} convs (folded at every step, "
                f"statistics frozen after {self.freeze_after} training steps)"
            )
        return PassResult(graph, rewritten > 0, {"rewritten": rewritten})

    def _rewrite(self, graph: Graph, conv: Node, bn: Node) -> None:
        x, weight = conv.inputs[:2]
        conv_bias = conv.inputs[2] if len(conv.inputs) > 2 else None
        gamma, beta, mean, var = bn.inputs[1:5]
        eps = float(bn.attrs.get("eps") or 1e-5)
        folded = graph.add_node(
            "fold_bn_weight",
            [weight, gamma, var],
            {"eps": eps},
            name=f"{conv.name}_folded_weight",
            subgraph=conv.subgraph,
            source_name=conv.source_name,
            source_location=conv.source_location,
            before=conv,
        )
        conv.set_inputs([x, folded.output])
        steps = graph.add_parameter(
            f"{_owner_ref(graph, mean)}.qat_steps",
            torch.zeros((), dtype=torch.int64),
            subgraph=bn.subgraph,
            trainable=False,
        )
        inputs = [conv.output, gamma, beta, mean, var, steps]
        if conv_bias is not None:
            inputs.append(conv_bias)
        momentum = bn.attrs.get("momentum")
        qat_bn = graph.add_node(
            "qat_batch_norm",
            inputs,
            {
                "eps": eps,
                "momentum": 0.1 if momentum is None else float(momentum),
                "freeze_after": self.freeze_after,
            },
            name=f"{bn.name}_qat",
            subgraph=bn.subgraph,
            source_name=bn.source_name,
            source_location=bn.source_location,
            types=[bn.output.type],
            after=bn,
        )
        graph.replace_all_uses(bn.output, qat_bn.output)
        graph.erase(bn)


def _pair(bn: Node) -> Node | None:
    """The conv whose only reader is BatchNorm ``bn``, when the pair can train folded."""
    if bn.op != "batch_norm" or len(bn.inputs) not in (5, 6):
        return None
    if any(v.producer is None or v.producer.op != "parameter" for v in bn.inputs[1:5]):
        return None  # an affine-less or functional BatchNorm
    conv = bn.inputs[0].producer
    if conv is None or conv.op not in _CONVS or len(bn.inputs[0].uses) != 1:
        return None
    weight = conv.inputs[1]
    if weight.producer is None or weight.producer.op != "parameter":
        return None
    return conv


def _owner_ref(graph: Graph, running_mean: object) -> str:
    producer = getattr(running_mean, "producer", None)
    ref = str(producer.attrs["ref"]) if producer is not None else "bn"
    owner = ref.rpartition(".")[0] or ref
    candidate, i = owner, 1
    while f"{candidate}.qat_steps" in graph.tensors:
        candidate, i = f"{owner}_{i}", i + 1
    return candidate
