"""Graph structure: inputs, outputs, parameters and constants (the code generator's own)."""

from __future__ import annotations

from acekit.ops.opdef import OpDef
from acekit.ops.schemas import ANY, BOOL, INTS, AttrSpec, OpSchema

#: The ops the code generator handles itself: they have no kernel.
STRUCTURAL = frozenset({"input", "output", "parameter", "constant"})

DEFINITIONS = [
    OpDef(
        OpSchema(
            "input",
            (),
            {"index": AttrSpec("int", required=True), "example_shape": INTS},
            doc="A graph input; ``example_shape``: the example's sizes where the type has symbols.",
        ),
    ),
    OpDef(
        OpSchema(
            "output",
            (),
            {
                "structure": AttrSpec(
                    "any",
                    doc="how the flat results nest into what forward returns: an int leaf "
                    "indexes the output's inputs; ('tuple'|'list', items), ('dict', ((key, "
                    "item), ...)) and ('const', value) nest. None: one result returned bare, "
                    "several as a tuple.",
                )
            },
            variadic=True,
            outputs=0,
            doc="Marks the graph's results.",
        ),
    ),
    OpDef(
        OpSchema(
            "parameter",
            (),
            {"ref": AttrSpec("str", required=True), "trainable": BOOL},
            doc="A tensor held by the graph (weight, bias, buffer), by its name in graph.tensors.",
        ),
    ),
    OpDef(
        OpSchema(
            "constant",
            (),
            {"ref": AttrSpec("str"), "value": ANY},
            doc="A constant: a tensor in graph.tensors (ref) or a python scalar/tuple (value).",
        ),
    ),
]
