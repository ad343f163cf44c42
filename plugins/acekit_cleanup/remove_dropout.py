"""``remove-dropout``: drop dropout layers, which do nothing once the model is deployed."""

from __future__ import annotations

from typing import ClassVar, Final

import attrs

from acekit.ir import Graph
from acekit.logging import get_logger
from acekit.passes import Pass, PassResult
from acekit_cleanup._rewrite import Rewriter

log = get_logger(__name__)

#: Dropout-like ops: random in training, the identity in evaluation (stochastic depth,
#: torchvision's DropPath, included).
DROPOUT_OPS: Final = frozenset(
    {
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "stochastic_depth",
    }
)

#: Attention ops and the attribute that holds their built-in dropout probability.
ATTENTION_DROPOUT_ATTRS: Final = {
    "multihead_attention": "dropout",
    "scaled_dot_product_attention": "dropout_p",
}


@attrs.frozen
class RemoveDropout(Pass):
    """Replace every dropout node by its input, whatever its ``training`` flag says.

    The cleaned graph is meant for calibration and deployment, where dropout is the
    identity; as in the reference product, dropout is also gone for quantization-aware
    fine-tuning. With ``attention_dropout`` (default) the dropout probability built
    into attention ops is set to 0 as well, which changes nothing in evaluation.
    """

    name: ClassVar[str] = "remove-dropout"
    summary: ClassVar[str] = "remove dropout layers (the identity in evaluation)"

    #: Also zero the dropout probability of attention ops.
    attention_dropout: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )

    def run(self, graph: Graph) -> PassResult:
        """Remove the dropout nodes of ``graph``; stats: ``removed``, ``attention_zeroed``."""
        rewriter = Rewriter(graph)
        zeroed = 0
        for node in graph.nodes:
            if node.op in DROPOUT_OPS and node.inputs and len(node.outputs) == 1:
                # Plain erase, not bypass: what fed a dead dropout is remove-unused's
                # business, so that ``removed`` counts dropout layers only.
                graph.replace_all_uses(node.output, node.inputs[0])
                rewriter.erase(node)
            elif self.attention_dropout and node.op in ATTENTION_DROPOUT_ATTRS:
                key = ATTENTION_DROPOUT_ATTRS[node.op]
                if node.attrs.get(key):
                    node.attrs[key] = 0.0
                    zeroed += 1
        removed = rewriter.removed
        if removed > 0:
            log.info(f"Removed {removed} Dropout layers", pass_name=self.name, removed=removed)
        stats = {"removed": removed, "attention_zeroed": zeroed}
        return PassResult(graph, removed > 0 or zeroed > 0, stats)
