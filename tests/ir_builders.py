"""Hand-built graphs shared by the IR and pass tests."""

from __future__ import annotations

import torch

from acekit.ir import Graph, TensorType

F32 = torch.float32


def vit_like_graph(blocks: int = 12, width: int = 16) -> Graph:
    """A transformer-shaped graph with subgraph paths: about 25 nodes per block."""
    graph = Graph("VisionTransformer")
    root = "VisionTransformer"
    x = graph.add_input("x", TensorType(F32, ("batch", 8, width)), subgraph=root)
    hidden = x
    for b in range(blocks):
        block = f"{root}/encoder/layers/encoder_layer_{b}"
        residual = hidden
        for part in ("ln_1", "self_attention", "ln_2", "mlp_0", "mlp_3"):
            path = f"{block}/{part}"
            ref = f"encoder.layers.encoder_layer_{b}.{part}"
            weight = graph.add_parameter(f"{ref}.weight", torch.randn(width, width), subgraph=path)
            bias = graph.add_parameter(f"{ref}.bias", torch.zeros(width), subgraph=path)
            node = graph.add_node(
                "linear",
                [hidden, weight, bias],
                name=f"encoder_layers_encoder_layer_{b}_{part}",
                subgraph=path,
                types=[TensorType(F32, ("batch", 8, width))],
            )
            hidden = graph.add_node(
                "gelu", [node.output], {"approximate": "none"}, subgraph=path
            ).output
            hidden = graph.add_node(
                "dropout", [hidden], {"p": 0.1, "training": False}, subgraph=path
            ).output
        hidden = graph.add_node("add", [hidden, residual], subgraph=block).output
    graph.set_outputs([hidden])
    return graph
