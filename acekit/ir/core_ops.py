"""The op schemas the kernel ships: graph structure plus the common tensor ops.

Op names follow PyTorch's functional names so that parsers map onto them directly.
Plugins extend the table through the ``acekit_register_ops`` hook.

Conventions every op here follows (docs/ir-ops.md explains them with examples):

- Inputs are IR values: tensors, or scalar/shape values (python ints, bools and int
  tuples at run time, typed ``i64[]`` / ``i64[n]`` / ``bool[]``). Python constants go in
  attributes, or in ``constant`` nodes (attr ``value``) where an op reads them as inputs.
- An int-list parameter (``reshape``'s shape, ``expand``'s size, ...) is an attribute
  when every entry is known at parse time; when some entries are computed in the graph
  (``x.shape[0]``) it is an extra trailing input, a ``pack`` value, instead.
- A missing optional input in the *middle* of an op's inputs is a ``constant`` node with
  ``value=None``; trailing optional inputs are simply left out.
- ``training`` attributes: absent/``None`` means "follow the module's train()/eval()
  mode at run time"; an explicit bool is fixed.
"""

from __future__ import annotations

from acekit.ir.schema import AttrSpec, OpSchema, OpTable

INT = AttrSpec("int")
FLOAT = AttrSpec("float")
BOOL = AttrSpec("bool")
STR = AttrSpec("str")
INTS = AttrSpec("ints")
DTYPE = AttrSpec("dtype", doc="short dtype name, e.g. 'f32' (acekit.ir.dtype_name)")
ANY = AttrSpec("any")


def _unary(name: str, doc: str = "", **attributes: AttrSpec) -> OpSchema:
    return OpSchema(name, ("input",), attributes, doc=doc)


def _binary(name: str, doc: str = "", **attributes: AttrSpec) -> OpSchema:
    return OpSchema(name, ("input", "other"), attributes, doc=doc)


def _sized(name: str, param: str, doc: str = "", **attributes: AttrSpec) -> OpSchema:
    """An op with an int-list parameter: an attribute, or a trailing ``pack`` input."""
    return OpSchema(name, ("input", param), {param: INTS, **attributes}, optional_inputs=1, doc=doc)


_STRUCTURE = [
    OpSchema(
        "input",
        (),
        {"index": AttrSpec("int", required=True), "example_shape": INTS},
        doc="A graph input; ``example_shape``: the example's sizes where the type has symbols.",
    ),
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

# Shape arithmetic and python scalars: what `x.shape[0] // 16` traces to. A cleanup pass
# folds these once shapes are known; until then they run as plain python at run time.
_SCALAR = [
    OpSchema(
        "shape",
        ("input",),
        {"dim": INT},
        doc="The shape of a tensor as an int tuple (i64[rank]), or one size when dim is set.",
    ),
    _unary("dim", doc="The rank of a tensor (Tensor.dim()), an int."),
    _unary("numel", doc="The number of elements of a tensor, an int."),
    OpSchema(
        "gather",
        ("input",),
        {"index": AttrSpec("any", required=True)},
        doc="Element(s) of a shape or tuple value: index is an int, or ('slice', start, "
        "stop, step) for a sub-tuple (ONNX Gather on a shape).",
    ),
    OpSchema(
        "pack",
        (),
        {"values": AttrSpec("any", required=True)},
        variadic=True,
        doc="Builds an int tuple: values is a tuple of ints where each None takes the next "
        "input, e.g. values=(None, 768, None) with inputs (batch, tokens).",
    ),
    OpSchema(
        "assert",
        ("condition",),
        {"message": STR},
        outputs=0,
        doc="torch._assert: fails at run time when condition is false.",
    ),
]

_ELEMENTWISE = [
    _binary("add", alpha=FLOAT, doc="input + alpha * other (tensors or python scalars)."),
    _binary("sub", alpha=FLOAT, doc="input - alpha * other."),
    _binary("mul"),
    _binary("div", rounding_mode=STR),
    _binary("floor_divide"),
    _binary("remainder"),
    _binary("pow"),
    _binary("eq"),
    _binary("ne"),
    _binary("lt"),
    _binary("le"),
    _binary("gt"),
    _binary("ge"),
    _binary("logical_and"),
    _binary("logical_or"),
    _binary("bitwise_and"),
    _binary("bitwise_or"),
    _binary("maximum"),
    _binary("minimum"),
    _unary("logical_not"),
    _unary("bitwise_not", doc="~input: bitwise not of integers, logical not of bools."),
    _unary("neg"),
    _unary("abs"),
    _unary("exp"),
    _unary("log"),
    _unary("sqrt"),
    _unary("rsqrt"),
    _unary("reciprocal"),
    _unary("erf"),
    _unary("sin"),
    _unary("cos"),
    _unary("floor"),
    _unary("ceil"),
    _unary("clamp", min=FLOAT, max=FLOAT),
    _unary("to", dtype=DTYPE, doc="Casts to dtype (device moves are the module's business)."),
    OpSchema(
        "where",
        ("condition", "input", "other"),
        doc="condition ? input : other; input/other may be python-scalar constant nodes.",
    ),
    OpSchema(
        "masked_fill",
        ("input", "mask", "value"),
        {"value": FLOAT},
        optional_inputs=1,
        doc="Fills where mask is true: value attribute, or a 0-d tensor input.",
    ),
]

_ACTIVATIONS = [
    _unary("identity"),
    _unary("detach"),
    _unary("relu"),
    _unary("relu6"),
    _unary("gelu", approximate=STR),
    _unary("silu"),
    _unary("mish"),
    _unary("sigmoid"),
    _unary("tanh"),
    _unary("hardswish"),
    _unary("hardsigmoid"),
    _unary("hardtanh", min_val=FLOAT, max_val=FLOAT),
    _unary("leaky_relu", negative_slope=FLOAT),
    _unary("elu", alpha=FLOAT),
    _unary("softplus", beta=FLOAT, threshold=FLOAT),
    OpSchema("prelu", ("input", "weight")),
    _unary("softmax", dim=INT),
    _unary("log_softmax", dim=INT),
    _unary("dropout", p=FLOAT, training=BOOL, inplace=BOOL),
    _unary(
        "dropout2d",
        p=FLOAT,
        training=BOOL,
        inplace=BOOL,
        doc="F.dropout2d (aten feature_dropout): zeros whole channels input[n, c] in training.",
    ),
    _unary(
        "stochastic_depth",
        p=FLOAT,
        mode=STR,
        training=BOOL,
        doc="torchvision.ops.stochastic_depth: drops whole rows/batches in training.",
    ),
]

_CONV = {
    "stride": INTS,
    "padding": ANY,
    "dilation": INTS,
    "groups": INT,
}
_CONV_T = {**_CONV, "padding": INTS, "output_padding": INTS}
_POOL = {"kernel_size": INTS, "stride": INTS, "padding": INTS, "ceil_mode": BOOL}

_LINEAR_ALGEBRA = [
    OpSchema("conv1d", ("input", "weight", "bias"), _CONV, optional_inputs=1),
    OpSchema("conv2d", ("input", "weight", "bias"), _CONV, optional_inputs=1),
    OpSchema("conv3d", ("input", "weight", "bias"), _CONV, optional_inputs=1),
    OpSchema("conv_transpose1d", ("input", "weight", "bias"), _CONV_T, optional_inputs=1),
    OpSchema("conv_transpose2d", ("input", "weight", "bias"), _CONV_T, optional_inputs=1),
    OpSchema("linear", ("input", "weight", "bias"), optional_inputs=1),
    OpSchema("matmul", ("input", "other")),
    OpSchema("einsum", (), {"equation": AttrSpec("str", required=True)}, variadic=True),
    OpSchema(
        "embedding",
        ("input", "weight"),
        {
            "padding_idx": INT,
            "max_norm": FLOAT,
            "norm_type": FLOAT,
            "scale_grad_by_freq": BOOL,
            "sparse": BOOL,
        },
    ),
]

_NORMS = [
    OpSchema(
        "fold_bn_weight",
        ("weight", "bn_weight", "running_var"),
        {"eps": FLOAT},
        doc="A conv weight with the following BatchNorm's scale folded in: "
        "weight * bn_weight / sqrt(running_var + eps), per output channel. Quantization-"
        "aware training quantizes this folded weight, the one deployed.",
    ),
    OpSchema(
        "qat_batch_norm",
        (
            "input",
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "steps",
            "conv_bias",
        ),
        {"eps": FLOAT, "momentum": FLOAT, "freeze_after": INT, "training": BOOL},
        optional_inputs=1,
        doc="The BatchNorm after a conv whose weight is fold_bn_weight: divides the "
        "scale back out, adds the conv's bias, then normalises. In training it uses the "
        "batch statistics and updates the running ones for the first freeze_after steps "
        "(counted in steps); afterwards, and in eval, it uses the running statistics, "
        "where conv + qat_batch_norm equals the folded conv that is deployed.",
    ),
    OpSchema(
        "batch_norm",
        ("input", "weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
        {"eps": FLOAT, "momentum": FLOAT, "training": BOOL},
        optional_inputs=1,
        doc="Batch norm; in training mode it updates running_mean/var (and counts "
        "num_batches_tracked when given, used when momentum is None) like nn.BatchNorm.",
    ),
    OpSchema(
        "layer_norm",
        ("input", "weight", "bias"),
        {"normalized_shape": INTS, "eps": FLOAT},
        optional_inputs=2,
    ),
    OpSchema(
        "group_norm",
        ("input", "weight", "bias"),
        {"num_groups": AttrSpec("int", required=True), "eps": FLOAT},
        optional_inputs=2,
    ),
    _unary("normalize", p=FLOAT, dim=INT, eps=FLOAT),
    _unary("norm", p=FLOAT, dim=ANY, keepdim=BOOL, doc="Vector p-norm over dim."),
]

_REDUCTIONS = [
    _unary("mean", dim=ANY, keepdim=BOOL),
    _unary("sum", dim=ANY, keepdim=BOOL),
    _unary("amax", dim=ANY, keepdim=BOOL),
    _unary("amin", dim=ANY, keepdim=BOOL),
    _unary("argmax", dim=INT, keepdim=BOOL),
    _unary("argmin", dim=INT, keepdim=BOOL),
    _unary("cumsum", dim=INT),
]


def _pool(name: str, extra: dict[str, AttrSpec]) -> OpSchema:
    return OpSchema(name, ("input",), {**_POOL, **extra})


_POOLING = [
    _pool("max_pool1d", {"dilation": INTS}),
    _pool("max_pool2d", {"dilation": INTS}),
    _pool("avg_pool1d", {"count_include_pad": BOOL}),
    _pool("avg_pool2d", {"count_include_pad": BOOL, "divisor_override": INT}),
    _unary("adaptive_avg_pool1d", output_size=INTS),
    _unary("adaptive_avg_pool2d", output_size=ANY),
    _unary("adaptive_max_pool2d", output_size=ANY),
    OpSchema(
        "interpolate",
        ("input", "size"),
        {
            "size": INTS,
            "scale_factor": ANY,
            "mode": STR,
            "align_corners": BOOL,
            "recompute_scale_factor": BOOL,
            "antialias": BOOL,
        },
        optional_inputs=1,
        doc="F.interpolate; size is an attribute, or a pack input when the graph computes it.",
    ),
]
_SHAPE = [
    _unary("flatten", start_dim=INT, end_dim=INT),
    _unary("unflatten", dim=INT, sizes=INTS),
    _sized("reshape", "shape"),
    _sized("expand", "size"),
    _sized("repeat", "repeats"),
    _unary("permute", dims=INTS),
    _unary("transpose", dim0=INT, dim1=INT),
    _unary("contiguous"),
    _unary("unsqueeze", dim=INT),
    _unary("squeeze", dim=ANY),
    _unary("flip", dims=INTS),
    _unary("roll", shifts=INTS, dims=INTS),
    OpSchema(
        "pad",
        ("input", "pad"),
        {"pad": INTS, "mode": STR, "value": FLOAT},
        optional_inputs=1,
        doc="F.pad; pad is an attribute, or a pack input when the graph computes it.",
    ),
    _unary(
        "unfold",
        dimension=AttrSpec("int", required=True),
        size=AttrSpec("int", required=True),
        step=AttrSpec("int", required=True),
        doc="Tensor.unfold: sliding windows of size along dimension, step apart, in a new "
        "last dim.",
    ),
    _unary(
        "im2col",
        kernel_size=AttrSpec("ints", required=True),
        dilation=INTS,
        padding=INTS,
        stride=INTS,
        doc="F.unfold / nn.Unfold: the sliding 2-D blocks of an (N, C, H, W) input as "
        "columns, (N, C * kh * kw, blocks).",
    ),
    OpSchema(
        "col2im",
        ("input", "output_size"),
        {
            "output_size": INTS,
            "kernel_size": AttrSpec("ints", required=True),
            "dilation": INTS,
            "padding": INTS,
            "stride": INTS,
        },
        optional_inputs=1,
        doc="F.fold / nn.Fold: sums (N, C * kh * kw, blocks) columns back into an "
        "(N, C, *output_size) image, the inverse layout of im2col; output_size is an "
        "attribute, or a pack input when the graph reads it from a shape.",
    ),
    OpSchema(
        "arange",
        ("like",),
        {"values": AttrSpec("any", required=True), "dtype": DTYPE},
        variadic=True,
        min_inputs=1,
        doc="torch.arange(start, end, step) where the graph computes some bound: values "
        "is (start, end, step) with each None taking the next input after like, the "
        "tensor whose device the result takes.",
    ),
    OpSchema(
        "chunk",
        ("input",),
        {"chunks": AttrSpec("int", required=True), "dim": INT},
        outputs=None,
        doc="Splits into chunks pieces along dim; one output per piece.",
    ),
    OpSchema(
        "split",
        ("input",),
        {"split_size": AttrSpec("any", required=True), "dim": INT},
        outputs=None,
        doc="torch.split: split_size is an int (piece size) or a tuple of sizes.",
    ),
    OpSchema("unbind", ("input",), {"dim": INT}, outputs=None),
    OpSchema("cat", (), {"dim": INT}, variadic=True, min_inputs=1),
    OpSchema("stack", (), {"dim": INT}, variadic=True, min_inputs=1),
    OpSchema(
        "select",
        ("input", "index"),
        {"dim": AttrSpec("int", required=True), "index": INT},
        optional_inputs=1,
        doc="input.select(dim, index): the index is an attribute, or an int input.",
    ),
    OpSchema(
        "slice",
        ("input", "start", "end"),
        {"dim": INT, "start": INT, "end": INT, "step": INT},
        optional_inputs=2,
        doc="input[start:end:step] along dim; start/end may instead be int inputs "
        "(an end input comes with a start input).",
    ),
    OpSchema(
        "index",
        (),
        {"positions": AttrSpec("ints", required=True)},
        variadic=True,
        min_inputs=2,
        doc="Advanced indexing: inputs are (input, *index_tensors); index tensor k "
        "indexes dimension positions[k] (aten.index.Tensor).",
    ),
    OpSchema("index_select", ("input", "index"), {"dim": AttrSpec("int", required=True)}),
    OpSchema(
        "gather_elements",
        ("input", "index"),
        {"dim": AttrSpec("int", required=True)},
        doc="torch.gather (ONNX GatherElements).",
    ),
    OpSchema(
        "slice_scatter",
        ("input", "src"),
        {"dim": INT, "start": INT, "end": INT, "step": INT},
        doc="A copy of input with input[start:end:step] along dim replaced by src.",
    ),
    OpSchema(
        "select_scatter",
        ("input", "src"),
        {"dim": AttrSpec("int", required=True), "index": AttrSpec("int", required=True)},
        doc="A copy of input with input.select(dim, index) replaced by src.",
    ),
    OpSchema(
        "full",
        ("size", "like"),
        {"size": INTS, "fill_value": AttrSpec("float", required=True), "dtype": DTYPE},
        optional_inputs=2,
        doc="A new tensor of shape size filled with fill_value (torch.full, zeros, ones, "
        "new_full). size is an attribute, or a pack input when computed; like, a tensor "
        "whose device (and, without dtype, dtype) the result takes, so the graph runs on "
        "the device it is moved to.",
    ),
    _unary(
        "full_like",
        fill_value=AttrSpec("float", required=True),
        dtype=DTYPE,
        doc="A tensor shaped like input filled with fill_value (zeros_like, ones_like).",
    ),
]

_ATTENTION = [
    OpSchema(
        "scaled_dot_product_attention",
        ("query", "key", "value", "attn_mask"),
        {"dropout_p": FLOAT, "is_causal": BOOL, "scale": FLOAT, "enable_gqa": BOOL},
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
            "is_causal": BOOL,
            "training": BOOL,
        },
        outputs=2,
        optional_inputs=2,
        doc="nn.MultiheadAttention (same q/k/v embed dim): outputs (attn_output, "
        "attn_weights); attn_weights is None at run time unless need_weights.",
    ),
]


def core_op_table() -> OpTable:
    """A fresh table holding the kernel's ops."""
    table = OpTable()
    for group in (
        _STRUCTURE,
        _SCALAR,
        _ELEMENTWISE,
        _ACTIVATIONS,
        _LINEAR_ALGEBRA,
        _NORMS,
        _REDUCTIONS,
        _POOLING,
        _SHAPE,
        _ATTENTION,
    ):
        for schema in group:
            table.register(schema)
    return table


#: The table the verifier uses by default; plugins extend it when they load.
OPS = core_op_table()
