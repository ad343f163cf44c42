"""Converters of TorchScript ops whose IR form differs from the aten call.

Every other aten op goes through :func:`acekit_torchscript.convert.convert_same_name`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

import torch

from acekit.ir import Value, dtype_name
from acekit.parsing import DATA_DEPENDENT, shape_source
from acekit_torchscript.calls import OpCall, UnsupportedError
from acekit_torchscript.convert import (
    convert_same_name,
    convert_to,
    fill_missing,
    has_op,
    ir_schema,
)
from acekit_torchscript.entries import MISSING_RESULT, ScalarEntry, TensorEntry, resolve

Converter = Callable[[OpCall], list[Any]]


def _training_attrs(call: OpCall, name: str) -> dict[str, Any]:
    """The ``training`` attribute: absent (follow train()/eval()) when the op runs in the
    mode of its module, as a module's layer does; fixed otherwise."""
    if not call.has(name):
        return {}
    training = call.static(name)
    return {} if bool(training) == call.training else {"training": bool(training)}


def _convolution(call: OpCall) -> list[Any]:
    rank = len(call.static("stride"))
    if call.static("transposed"):
        return convert_to(call, f"conv_transpose{rank}d", skip=frozenset({"transposed"}))
    return convert_to(call, f"conv{rank}d", skip=frozenset({"transposed", "output_padding"}))


def _dropout(call: OpCall) -> list[Any]:
    """``aten::dropout`` and ``aten::feature_dropout`` (``F.dropout2d``)."""
    op = "dropout2d" if call.op_name.startswith("feature_dropout") else "dropout"
    attrs = {"p": float(call.static("p")), **_training_attrs(call, "train")}
    return call.emit(op, [call.tensor(call.args[0])], attrs)


def _batch_norm(call: OpCall) -> list[Any]:
    training = call.static("training")
    stats = not call.is_none("running_mean") and not call.is_none("running_var")
    attrs: dict[str, Any] = {
        "eps": float(call.static("eps")),
        "momentum": float(call.static("momentum")),
    }
    if not stats or bool(training) != call.training:
        attrs["training"] = bool(training)
    names = ("input", "weight", "bias", "running_mean", "running_var")
    inputs: list[Value | None] = [None if call.is_none(n) else call.tensor(n) for n in names]
    counter = call.module_tensor("num_batches_tracked") if stats else None
    if counter is not None and _owned_by_module(call, "running_mean"):
        inputs.append(counter.value)
    return call.emit("batch_norm", fill_missing(call, ir_schema("batch_norm"), inputs), attrs)


def _owned_by_module(call: OpCall, name: str) -> bool:
    """Whether argument ``name`` is a tensor of the module running the op."""
    entry = call.arg(name)
    tensor = call.module_tensor(name)
    return isinstance(entry, TensorEntry) and tensor is not None and tensor is entry


def _add_or_sub(call: OpCall) -> list[Any]:
    return convert_to(call, call.op_name, drop_defaults=frozenset({"alpha"}))


def _rsub(call: OpCall) -> list[Any]:
    attrs: dict[str, Any] = {}
    if call.has("alpha") and call.static("alpha") != 1:
        attrs["alpha"] = call.static("alpha")
    return call.emit("sub", [call.tensor("other"), call.tensor("self")], attrs)


def _view(call: OpCall) -> list[Any]:
    return convert_to(call, "reshape", renames={"size": "shape"})


def _matmul(call: OpCall) -> list[Any]:
    return call.emit("matmul", [call.tensor("self"), call.tensor("mat2")])


def _addmm(call: OpCall) -> list[Any]:
    """``addmm(b, x, w)`` / ``baddbmm(b, x, w)``: ``x @ w + b`` (beta and alpha of 1)."""
    if call.static("beta") != 1 or call.static("alpha") != 1:
        raise UnsupportedError(f"{call.op_name} with beta or alpha != 1")
    first, second = ("mat1", "mat2") if call.has("mat1") else ("batch1", "batch2")
    weight = _transposed_parameter(call.tensor(second)) if first == "mat1" else None
    if weight is not None:  # F.linear as TorchScript records it: a linear, as FX writes it
        return call.emit("linear", [call.tensor(first), weight, call.tensor("self")])
    product = torch.matmul(call.example(first), call.example(second))
    matmul = call.emit("matmul", [call.tensor(first), call.tensor(second)], results=[product])
    return call.emit("add", [matmul[0].value, call.tensor("self")])


def _transposed_parameter(value: Value) -> Value | None:
    """The parameter ``value`` is the transpose of (``weight.t()``), else ``None``.

    The transpose node itself is left for ``remove-unused`` when nothing else reads it.
    """
    producer = value.producer
    if producer is None or producer.op != "transpose" or not producer.inputs:
        return None
    source = producer.inputs[0]
    if source.producer is None or source.producer.op != "parameter":
        return None
    return source


def _hardtanh(call: OpCall) -> list[Any]:
    if call.static("min_val") == 0 and call.static("max_val") == 6:
        return call.emit("relu6", [call.tensor("self")])
    return convert_same_name(call)


def _identity_like(call: OpCall) -> list[Any]:
    if has_op(call.op_name):
        return convert_same_name(call)
    return call.emit("identity", [call.tensor("self")])


def _pool(call: OpCall) -> list[Any]:
    # An empty stride means "the kernel size", which is what the IR spells out.
    if call.has("stride") and call.static("stride") == ():
        return convert_to(
            call,
            call.op_name,
            attrs={"stride": call.static("kernel_size")},
            skip=frozenset({"stride"}),
        )
    return convert_same_name(call)


def _transpose_2d(call: OpCall) -> list[Any]:
    if call.results[0].dim() < 2:
        return call.emit("identity", [call.tensor("self")])
    return call.emit("transpose", [call.tensor("self")], {"dim0": 0, "dim1": 1})


def _swap(call: OpCall) -> list[Any]:
    first, second = [n for n in call.names if n != "self"][:2]
    return convert_to(call, "transpose", renames={first: "dim0", second: "dim1"})


def _slice(call: OpCall) -> list[Any]:
    if _whole_slice(call):
        return [call.arg("self")]  # ``x[:, 0]`` slices nothing along the first axis
    skip: set[str] = set()
    for name, neutral in (("start", 0), ("end", sys.maxsize)):
        # What ``x[a:]`` traces to: an end of INT64_MAX means "to the end".
        if call.has(name) and not call.is_dynamic(name) and call.static(name) in (None, neutral):
            skip.add(name)
    entries = convert_to(call, "slice", skip=frozenset(skip))
    source = call.arg("self")
    if isinstance(source, TensorEntry) and isinstance(entries[0], TensorEntry):
        bounds = {"dim": call.static("dim"), "step": call.static("step")}
        for name in ("start", "end"):
            value = call.static(name)
            if name not in skip and value is not None:
                bounds[name] = value
        entries[0].view_of = (source, bounds)
    return entries


def _select(call: OpCall) -> list[Any]:
    """``x[:, 0]``: a ``select`` that remembers the tensor it views, so a write into it
    (``x[:, 0] = y``) becomes a ``select_scatter``."""
    entries = convert_to(call, "select")
    source = call.arg("self")
    if (
        isinstance(source, TensorEntry)
        and isinstance(entries[0], TensorEntry)
        and not call.is_dynamic("index")
    ):
        entries[0].view_of = (source, {"dim": call.static("dim"), "index": call.static("index")})
    return entries


def _whole_slice(call: OpCall) -> bool:
    for name in ("start", "end", "step"):
        if call.has(name) and call.is_dynamic(name):
            return False
    start = call.static("start") if call.has("start") else None
    end = call.static("end") if call.has("end") else None
    step = call.static("step") if call.has("step") else 1
    return start in (None, 0) and end in (None, sys.maxsize) and step == 1


def _pieces(call: OpCall, op: str, attrs: dict[str, Any]) -> list[Any]:
    pieces = list(call.results[0])
    entries = call.emit(op, [call.tensor("self")], attrs, results=pieces, name=call.layer_name)
    return [entries]


def _chunk(call: OpCall) -> list[Any]:
    return _pieces(call, "chunk", {"chunks": call.static("chunks"), "dim": call.static("dim")})


def _split(call: OpCall) -> list[Any]:
    size_name = "split_size" if call.has("split_size") else "split_sizes"
    return _pieces(call, "split", {"split_size": call.static(size_name), "dim": call.static("dim")})


def _unbind(call: OpCall) -> list[Any]:
    return _pieces(call, "unbind", {"dim": call.static("dim")})


def _to(call: OpCall) -> list[Any]:
    result = call.results[0]
    source = call.args[0]
    if not isinstance(result, torch.Tensor) or not isinstance(resolve(source), TensorEntry):
        raise UnsupportedError("to() of something other than a graph tensor")
    return call.emit("to", [call.tensor(source)], {"dtype": dtype_name(result.dtype)})


def _clamp_bound(call: OpCall) -> list[Any]:
    bound = "min" if call.op_name == "clamp_min" else "max"
    return call.emit("clamp", [call.tensor("self")], {bound: float(call.static(bound))})


def _norm(call: OpCall) -> list[Any]:
    return convert_to(call, "norm", renames={"ord": "p"})


def _expand_as(call: OpCall) -> list[Any]:
    other = resolve(call.arg("other"))
    if not isinstance(other, TensorEntry):
        return call.emit("expand", [call.tensor("self")], {"size": tuple(call.results[0].shape)})
    sizes = [
        ScalarEntry(size, "shape", (other,), {"dim": index}, call.site)
        for index, size in enumerate(other.example.shape)
    ]
    return call.emit("expand", [call.tensor("self"), call.builder.pack(sizes, call.site)])


def _full_like(call: OpCall) -> list[Any]:
    fill = {"zeros_like": 0.0, "ones_like": 1.0}.get(call.op_name)
    if fill is None:
        fill = float(call.static("fill_value"))
    attrs: dict[str, Any] = {"fill_value": fill}
    if not call.is_none("dtype"):
        attrs["dtype"] = call.static("dtype")
    return call.emit("full_like", [call.tensor("self")], attrs)


def _fill(call: OpCall) -> list[Any]:
    """``x.zero_()``, ``x.fill_(v)``: a tensor like ``x`` filled with ``v``, a number or a
    0-d tensor (``mask[a:b] = count`` traces to ``fill_`` with a constant 0-d tensor).
    A constant value gives a ``full_like``, one the graph computes is broadcast as by
    ``copy_``."""
    if call.op_name == "zero":
        value = 0.0
    elif isinstance(call.arg("value"), TensorEntry):
        return _broadcast_into(call, "value")
    else:
        example = call.example("value")
        if isinstance(example, torch.Tensor):
            if example.numel() != 1:
                raise UnsupportedError("fill_ with a tensor of more than one element")
            example = example.reshape(()).to(call.results[0].dtype).item()
        value = float(example)
    return call.emit("full_like", [call.tensor("self")], {"fill_value": value})


def _copy(call: OpCall) -> list[Any]:
    """``x.copy_(src)`` (``x[:2] = src``): ``src`` in ``x``'s dtype and shape."""
    return _broadcast_into(call, "src")


def _broadcast_into(call: OpCall, name: str) -> list[Any]:
    """Argument ``name`` in the dtype and shape of the call's result (the tensor written)."""
    target = call.results[0]
    source = resolve(call.arg(name))
    value = call.tensor(name)
    example = call.example(name)
    if not isinstance(example, torch.Tensor):
        raise UnsupportedError(f"{call.op_name}_ from a value that is not a tensor")
    if example.dtype != target.dtype:
        cast = call.emit(
            "to", [value], {"dtype": dtype_name(target.dtype)}, results=[example.to(target.dtype)]
        )
        value, example = cast[0].value, cast[0].example
    if tuple(example.shape) == tuple(target.shape):
        if isinstance(source, TensorEntry) and value is source.value:
            return [source]
        return [TensorEntry(value, example)]
    return call.emit("expand", [value], {"size": tuple(target.shape)})


#: The fill value of the factories that have one in their name.
_FILLS: Final = {"zeros": 0.0, "empty": 0.0, "ones": 1.0}


def _new_tensor(call: OpCall) -> list[Any]:
    """``aten::full``/``zeros``/``ones``/``empty`` and their ``new_`` forms: a ``full``
    node when the graph computes the size; else a constant (``new_zeros(size)`` reads
    only its input's dtype and device)."""
    if not call.is_dynamic("size"):
        return [call.results[0]]
    name = call.op_name
    fill = _FILLS.get(name.removeprefix("new_"))
    if fill is None:
        fill = float(call.static("fill_value"))
    static_size, packed = call.sized("size")
    attrs: dict[str, Any] = {"fill_value": fill, "dtype": dtype_name(call.results[0].dtype)}
    if static_size is not None:
        attrs["size"] = static_size
    like = call.tensor("self") if name.startswith("new_") else None
    if like is None and packed is not None:
        like = shape_source(packed)
    inputs = [packed] if packed is not None else []
    if like is not None:
        inputs = [packed if packed is not None else call.builder.constant(None, call.site), like]
    return call.emit("full", inputs, attrs)


def _constant_pad(call: OpCall) -> list[Any]:
    return call.emit(
        "pad",
        [call.tensor("self")],
        {"pad": call.static("pad"), "mode": "constant", "value": float(call.static("value"))},
    )


def _embedding(call: OpCall) -> list[Any]:
    attrs: dict[str, Any] = {}
    padding = call.static("padding_idx")
    if padding is not None and padding >= 0:
        attrs["padding_idx"] = padding
    if call.static("scale_grad_by_freq"):
        attrs["scale_grad_by_freq"] = True
    if call.static("sparse"):
        attrs["sparse"] = True
    return call.emit("embedding", [call.tensor("indices"), call.tensor("weight")], attrs)


def _gather(call: OpCall) -> list[Any]:
    return call.emit(
        "gather_elements",
        [call.tensor("self"), call.tensor("index")],
        {"dim": call.static("dim")},
    )


def _index(call: OpCall) -> list[Any]:
    indices = call.arg("indices")
    inputs = [call.tensor("self")]
    positions = []
    for position, item in enumerate(indices):
        if resolve(item) is None:
            continue
        positions.append(position)
        inputs.append(call.value_of(item))
    return call.emit("index", inputs, {"positions": tuple(positions)})


def _index_put(call: OpCall) -> list[Any]:
    """``index_put(x, indices, values, accumulate)`` (``x[idx] = v``)."""
    inputs = [call.tensor("self"), call.tensor("values")]
    positions = []
    for position, item in enumerate(call.arg("indices")):
        if resolve(item) is not None:
            positions.append(position)
            inputs.append(call.value_of(item))
    attrs = {"positions": tuple(positions), "accumulate": bool(call.static("accumulate"))}
    return call.emit("index_put", inputs, attrs)


def _upsample(call: OpCall) -> list[Any]:
    name = call.op_name.removeprefix("_")  # _upsample_bicubic2d_aa: antialiased
    antialias = name.endswith("_aa")
    mode = name.removesuffix("_aa").removeprefix("upsample_")[:-2].removesuffix("_")
    attrs: dict[str, Any] = {"mode": mode}
    if antialias:
        attrs["antialias"] = True
    if not call.is_none("output_size"):
        attrs["size"] = tuple(call.static("output_size"))
    elif call.has("scale_factors") and not call.is_none("scale_factors"):
        attrs["scale_factor"] = tuple(float(f) for f in call.static("scale_factors"))
    if call.has("align_corners"):
        attrs["align_corners"] = bool(call.static("align_corners"))
    source = "input" if call.has("input") else "self"  # the _aa ops name it input
    return call.emit("interpolate", [call.tensor(source)], attrs)


def _einsum(call: OpCall) -> list[Any]:
    operands = [call.value_of(item) for item in call.arg("tensors")]
    return call.emit("einsum", operands, {"equation": call.static("equation")})


def _pow(call: OpCall) -> list[Any]:
    return call.emit("pow", [call.tensor("self"), call.tensor("exponent")])


def _softmax(call: OpCall) -> list[Any]:
    op = "log_softmax" if "log" in call.op_name else "softmax"
    return call.emit(op, [call.tensor("self")], {"dim": call.static("dim")})


def _first_of_two(call: OpCall) -> list[Any]:
    """Ops returning what the IR op computes and indices it does not (max pooling)."""
    entries = convert_to(call, call.op_name)
    return [*entries, MISSING_RESULT]


def _extreme(call: OpCall) -> list[Any]:
    """``max``/``min``: of all elements, of two tensors, or along ``dim`` (values and
    indices)."""
    reduce, elementwise, index = (
        ("amax", "maximum", "argmax") if call.op_name == "max" else ("amin", "minimum", "argmin")
    )
    if call.has("other"):
        return call.emit(elementwise, [call.tensor("self"), call.tensor("other")])
    if not call.has("dim"):
        return call.emit(reduce, [call.tensor("self")], {"dim": None, "keepdim": False})
    attrs = {"dim": call.static("dim"), "keepdim": bool(call.static("keepdim"))}
    values, indices = call.results
    tensor = call.tensor("self")
    return [
        *call.emit(reduce, [tensor], attrs, results=[values]),
        *call.emit(index, [tensor], attrs, results=[indices]),
    ]


def _native_mha(call: OpCall) -> list[Any]:
    """``_native_multi_head_attention``: the fast path of ``nn.MultiheadAttention``."""
    attrs: dict[str, Any] = {
        "num_heads": call.static("num_head"),
        "batch_first": True,
        "need_weights": call.static("need_weights"),
        "average_attn_weights": call.static("average_attn_weights"),
    }
    inputs: list[Value | None] = [
        call.tensor("query"),
        call.tensor("key"),
        call.tensor("value"),
        call.tensor("qkv_weight"),
        call.tensor("qkv_bias"),
        call.tensor("proj_weight"),
        call.tensor("proj_bias"),
    ]
    if not call.is_none("mask"):
        mask_type = call.static("mask_type")
        if mask_type == 1:
            inputs += [call.tensor("mask")]
        elif mask_type == 0:
            inputs += [None, call.tensor("mask")]
        else:
            raise UnsupportedError(f"merged attention mask (mask_type={mask_type})")
    values = fill_missing(call, ir_schema("multihead_attention"), inputs)
    return call.emit("multihead_attention", values, attrs, name=call.layer_name)


def _scatter(call: OpCall) -> list[Any]:
    """``scatter``: of a tensor (``src``) or a number (``value``)."""
    return convert_to(call, "scatter_elements", renames={"value": "src"})


def _scatter_add(call: OpCall) -> list[Any]:
    """``scatter_add``: a ``scatter_elements`` that adds."""
    return convert_to(call, "scatter_elements", attrs={"reduce": "add"})


def _data_dependent(call: OpCall) -> list[Any]:
    raise UnsupportedError(
        f"a Python value taken from {DATA_DEPENDENT}: the graph would depend on the values"
    )


CONVERTERS: Final[dict[str, Converter]] = {
    "aten::_convolution": _convolution,
    "aten::dropout": _dropout,
    "aten::batch_norm": _batch_norm,
    "aten::add": _add_or_sub,
    "aten::sub": _add_or_sub,
    "aten::rsub": _rsub,
    "aten::view": _view,
    "aten::mm": _matmul,
    "aten::bmm": _matmul,
    "aten::addmm": _addmm,
    "aten::baddbmm": _addmm,
    "aten::hardtanh": _hardtanh,
    "aten::clone": _identity_like,
    "aten::alias": _identity_like,
    "aten::max_pool1d": _pool,
    "aten::max_pool2d": _pool,
    "aten::avg_pool1d": _pool,
    "aten::avg_pool2d": _pool,
    "aten::t": _transpose_2d,
    "aten::swapaxes": _swap,
    "aten::swapdims": _swap,
    "aten::slice": _slice,
    "aten::select": _select,
    "aten::chunk": _chunk,
    "aten::unsafe_chunk": _chunk,
    "aten::split": _split,
    "aten::split_with_sizes": _split,
    "aten::unsafe_split": _split,
    "aten::unbind": _unbind,
    "aten::to": _to,
    "aten::type_as": _to,
    "aten::float": _to,
    "aten::clamp_min": _clamp_bound,
    "aten::clamp_max": _clamp_bound,
    "aten::linalg_vector_norm": _norm,
    "aten::expand_as": _expand_as,
    "aten::zeros_like": _full_like,
    "aten::ones_like": _full_like,
    "aten::full_like": _full_like,
    "aten::zero": _fill,
    "aten::fill": _fill,
    "aten::copy": _copy,
    "aten::feature_dropout": _dropout,
    "aten::full": _new_tensor,
    "aten::zeros": _new_tensor,
    "aten::ones": _new_tensor,
    "aten::empty": _new_tensor,
    "aten::new_zeros": _new_tensor,
    "aten::new_ones": _new_tensor,
    "aten::new_full": _new_tensor,
    "aten::new_empty": _new_tensor,
    "aten::constant_pad_nd": _constant_pad,
    "aten::embedding": _embedding,
    "aten::gather": _gather,
    "aten::index": _index,
    "aten::index_put": _index_put,
    "aten::upsample_nearest1d": _upsample,
    "aten::upsample_nearest2d": _upsample,
    "aten::upsample_bilinear2d": _upsample,
    "aten::upsample_bicubic2d": _upsample,
    "aten::_upsample_bilinear2d_aa": _upsample,
    "aten::_upsample_bicubic2d_aa": _upsample,
    "aten::einsum": _einsum,
    "aten::pow": _pow,
    "aten::softmax": _softmax,
    "aten::_softmax": _softmax,
    "aten::log_softmax": _softmax,
    "aten::adaptive_max_pool2d": _first_of_two,
    "aten::max": _extreme,
    "aten::min": _extreme,
    "aten::_native_multi_head_attention": _native_mha,
    "aten::scatter": _scatter,
    "aten::scatter_add": _scatter_add,
    "aten::Int": _data_dependent,
    "aten::Float": _data_dependent,
    "aten::Bool": _data_dependent,
    "aten::item": _data_dependent,
    "aten::ScalarImplicit": _data_dependent,
    "aten::is_nonzero": _data_dependent,
    "aten::tolist": _data_dependent,
}
