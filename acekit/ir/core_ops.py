"""The op schemas the kernel ships: graph structure plus the common tensor ops.

Op names follow PyTorch's functional names so that parsers map onto them directly.
Plugins extend the table through the ``acekit_register_ops`` hook.
"""

from __future__ import annotations

from acekit.ir.schema import AttrSpec, OpSchema, OpTable

INT = AttrSpec("int")
FLOAT = AttrSpec("float")
BOOL = AttrSpec("bool")
STR = AttrSpec("str")
INTS = AttrSpec("ints")
ANY = AttrSpec("any")


def _unary(name: str, **attributes: AttrSpec) -> OpSchema:
    return OpSchema(name, ("input",), attributes)


def _binary(name: str) -> OpSchema:
    return OpSchema(name, ("input", "other"))


_STRUCTURE = [
    OpSchema("input", (), {"index": AttrSpec("int", required=True)}, doc="A graph input."),
    OpSchema("output", (), variadic=True, outputs=0, doc="Marks the graph's results."),
    OpSchema(
        "parameter",
        (),
        {"ref": AttrSpec("str", required=True), "trainable": BOOL},
        doc="A tensor held by the graph (weight, bias, buffer), by its name in graph.tensors.",
    ),
    OpSchema(
        "constant",
        (),
        {"ref": AttrSpec("str"), "value": ANY},
        doc="A constant: a tensor in graph.tensors (ref) or a python scalar/tuple (value).",
    ),
]

_CONV = {
    "stride": INTS,
    "padding": ANY,
    "dilation": INTS,
    "groups": INT,
}

_COMPUTE = [
    OpSchema("conv1d", ("input", "weight", "bias"), _CONV, optional_inputs=1),
    OpSchema("conv2d", ("input", "weight", "bias"), _CONV, optional_inputs=1),
    OpSchema("linear", ("input", "weight", "bias"), optional_inputs=1),
    OpSchema("matmul", ("input", "other")),
    OpSchema(
        "batch_norm",
        ("input", "weight", "bias", "running_mean", "running_var"),
        {"eps": FLOAT, "momentum": FLOAT, "training": BOOL},
    ),
    OpSchema(
        "layer_norm",
        ("input", "weight", "bias"),
        {"normalized_shape": INTS, "eps": FLOAT},
        optional_inputs=2,
    ),
    _unary("dropout", p=FLOAT, training=BOOL, inplace=BOOL),
    _unary("identity"),
    _unary("relu"),
    _unary("relu6"),
    _unary("gelu", approximate=STR),
    _unary("silu"),
    _unary("sigmoid"),
    _unary("tanh"),
    _unary("hardswish"),
    _unary("hardsigmoid"),
    _unary("softmax", dim=INT),
    _unary("flatten", start_dim=INT, end_dim=INT),
    _unary("reshape", shape=INTS),
    _unary("permute", dims=INTS),
    _unary("transpose", dim0=INT, dim1=INT),
    _unary("contiguous"),
    _unary("mean", dim=ANY, keepdim=BOOL),
    _unary(
        "max_pool2d", kernel_size=INTS, stride=INTS, padding=INTS, dilation=INTS, ceil_mode=BOOL
    ),
    _unary(
        "avg_pool2d",
        kernel_size=INTS,
        stride=INTS,
        padding=INTS,
        ceil_mode=BOOL,
        count_include_pad=BOOL,
    ),
    _unary("adaptive_avg_pool2d", output_size=INTS),
    _binary("add"),
    _binary("sub"),
    _binary("mul"),
    _binary("div"),
    OpSchema("cat", (), {"dim": INT}, variadic=True, min_inputs=1),
    OpSchema(
        "scaled_dot_product_attention",
        ("query", "key", "value", "attn_mask"),
        {"dropout_p": FLOAT, "is_causal": BOOL, "scale": FLOAT},
        optional_inputs=1,
    ),
    OpSchema(
        "multihead_attention",
        (
            "query",
            "key",
            "value",
            "in_proj_weight",
            "in_proj_bias",
            "out_proj_weight",
            "out_proj_bias",
            "key_padding_mask",
            "attn_mask",
        ),
        {
            "num_heads": AttrSpec("int", required=True),
            "dropout": FLOAT,
            "batch_first": BOOL,
            "need_weights": BOOL,
            "average_attn_weights": BOOL,
        },
        outputs=2,
        optional_inputs=2,
    ),
]


def core_op_table() -> OpTable:
    """A fresh table holding the kernel's ops."""
    table = OpTable()
    for schema in (*_STRUCTURE, *_COMPUTE):
        table.register(schema)
    return table


#: The table the verifier uses by default; plugins extend it when they load.
OPS = core_op_table()
