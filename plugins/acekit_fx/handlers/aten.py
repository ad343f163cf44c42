"""ATen ops, as torch.export (and functions inlined through it) records them.

Most ATen schemas take their arguments in the order of the torch function, so the
torch-level handlers serve them; the ops whose order or meaning differs (``batch_norm``,
``embedding``, ``addmm``, ``slice``, ...) have handlers here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from acekit.ir import Value
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.handlers import indexing, torch_ops
from acekit_fx.handlers.registry import FUNCTIONS, METHODS, aten, function, lowers, method
from acekit_fx.naming import sanitize
from acekit_fx.values import ConstTensor

# ATen ops whose schema matches a torch function's argument order, for the functions
# that are not one IR op (those that are list their ATen names in the op's definition).
_SAME_AS_FUNCTION: dict[str, Any] = {
    "addcmul": torch.addcmul,
    "linalg_vector_norm": torch.linalg.vector_norm,
    "reshape": torch.reshape,
    "permute": torch.permute,
    "t": torch.t,
    "clone": torch.clone,
    "zeros_like": torch.zeros_like,
    "ones_like": torch.ones_like,
    "full_like": torch.full_like,
}

for _name, _target in _SAME_AS_FUNCTION.items():
    aten(_name)(FUNCTIONS[_target])
aten("view", "_unsafe_view")(torch_ops.convert_reshape_function)
aten("expand")(
    lambda cx, input, size, implicit=False: torch_ops.sized_node("expand", "size")(cx, input, size)
)
aten("expand_as")(METHODS["expand_as"])
# torch.max / torch.min along a dim: (values, indices), as their torch-level handler.
aten("max.dim", "max.default")(FUNCTIONS[torch.max])
aten("min.dim", "min.default")(FUNCTIONS[torch.min])
aten("flip")(lambda cx, input, dims: torch_ops.convert_flip(cx, input, dims))
aten("contiguous", "alias", "lift_fresh_copy")(
    lambda cx, input, *args, **kwargs: cx.out("identity", [cx.value(input)])
)
aten("sym_size")(indexing.convert_size)


@aten("_assert_tensor_metadata", "_assert_async", "_assert_scalar", "sym_constrain_range_for_size")
def convert_runtime_check(cx: NodeContext, *args: Any, **kwargs: Any) -> None:
    """Export's metadata checks: they guard the trace, the IR keeps no node for them."""
    return None


@aten("rsub")
def convert_rsub(cx: NodeContext, input: Any, other: Any, alpha: Any = 1) -> Value:
    """``other - alpha * input``."""
    alpha = cx.static(alpha, "alpha")
    attrs = {} if alpha == 1 else {"alpha": float(alpha)}
    return cx.out("sub", [cx.value(other), cx.value(input)], attrs)


@aten("clamp_min")
def convert_clamp_min(cx: NodeContext, input: Any, min: Any) -> Value:
    """``clamp(min=...)``."""
    return torch_ops.convert_clamp(cx, input, min, None)


@aten("clamp_max")
def convert_clamp_max(cx: NodeContext, input: Any, max: Any) -> Value:
    """``clamp(max=...)``."""
    return torch_ops.convert_clamp(cx, input, None, max)


@aten("hardtanh")
def convert_hardtanh(cx: NodeContext, input: Any, min_val: Any = -1.0, max_val: Any = 1.0) -> Value:
    """``hardtanh``; ``hardtanh(0, 6)`` is ``relu6``."""
    low, high = float(cx.static(min_val, "min_val")), float(cx.static(max_val, "max_val"))
    if (low, high) == (0.0, 6.0):
        return cx.out("relu6", [cx.value(input)])
    return cx.out("hardtanh", [cx.value(input)], {"min_val": low, "max_val": high})


@aten("elu")
def convert_elu(
    cx: NodeContext, input: Any, alpha: Any = 1.0, scale: Any = 1, input_scale: Any = 1
) -> Value:
    """``elu`` (the scaled variants are not supported)."""
    if cx.static(scale, "scale") != 1 or cx.static(input_scale, "input_scale") != 1:
        raise Unsupported("elu with scale/input_scale (selu/celu)")
    return cx.out("elu", [cx.value(input)], {"alpha": float(cx.static(alpha, "alpha"))})


@aten("softmax", "_softmax")
def convert_softmax(cx: NodeContext, input: Any, dim: Any, dtype_or_half: Any = None) -> Value:
    """``softmax.int(x, dim, dtype)`` and ``_softmax(x, dim, half_to_float)``."""
    dtype = dtype_or_half if isinstance(dtype_or_half, torch.dtype) else None
    return torch_ops.softmax_like("softmax")(cx, input, dim, 3, dtype)


@aten("log_softmax", "_log_softmax")
def convert_log_softmax(cx: NodeContext, input: Any, dim: Any, dtype_or_half: Any = None) -> Value:
    """``log_softmax``."""
    dtype = dtype_or_half if isinstance(dtype_or_half, torch.dtype) else None
    return torch_ops.softmax_like("log_softmax")(cx, input, dim, 3, dtype)


@aten("dropout")
def convert_dropout(cx: NodeContext, input: Any, p: Any, train: Any) -> Value:
    """``dropout``: follows the module's mode, as for ``F.dropout``."""
    return torch_ops.convert_dropout(cx, input, p, train)


@aten("native_dropout")
def convert_native_dropout(cx: NodeContext, input: Any, p: Any, train: Any) -> tuple[Any, ...]:
    """``native_dropout`` returns (output, mask); only the output is kept."""
    value = cx.out(
        "dropout", [cx.value(input)], {"p": float(cx.static(p, "p"))}, result=cx.result[0]
    )
    return (value, None)


@aten("batch_norm")
def convert_batch_norm(
    cx: NodeContext,
    input: Any,
    weight: Any,
    bias: Any,
    running_mean: Any,
    running_var: Any,
    training: Any,
    momentum: Any,
    eps: Any,
    cudnn_enabled: Any = True,
) -> Value:
    """``aten.batch_norm`` (weight and bias come before the statistics here)."""
    return torch_ops.batch_norm_node(
        cx, input, weight, bias, running_mean, running_var, None, momentum, eps
    )


@aten("_native_batch_norm_legit_no_training")
def convert_batch_norm_no_training(
    cx: NodeContext, input: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any,
    momentum: Any, eps: Any,
) -> tuple[Any, ...]:  # fmt: skip
    """The evaluation batch norm of decomposed graphs: (output, mean, rstd); output kept."""
    inputs = [
        cx.value(input),
        *(
            cx.none() if t is None else cx.value(t)
            for t in (weight, bias, running_mean, running_var)
        ),
    ]
    attrs = {
        "eps": float(cx.static(eps, "eps")),
        "momentum": float(cx.static(momentum, "momentum")),
    }
    value = cx.out("batch_norm", inputs, attrs, result=cx.result[0])
    return (value, None, None)


@aten("_native_batch_norm_legit.no_stats")
def convert_batch_norm_no_stats(
    cx: NodeContext, input: Any, weight: Any, bias: Any, training: Any, momentum: Any, eps: Any
) -> tuple[Any, ...]:
    """Batch norm over the batch's own statistics, no running ones (timm's weight
    standardisation, ``F.batch_norm(w, None, None, training=True)``): (output, mean, rstd)."""
    inputs = [
        cx.value(input),
        *(cx.none() if t is None else cx.value(t) for t in (weight, bias)),
        cx.none(),
        cx.none(),
    ]
    attrs = {"eps": float(cx.static(eps, "eps")), "momentum": float(cx.static(momentum, "m"))}
    value = cx.out("batch_norm", inputs, attrs, result=cx.result[0])
    return (value, None, None)


@aten("native_group_norm")
def convert_native_group_norm(
    cx: NodeContext, input: Any, weight: Any, bias: Any, batch: Any, channels: Any,
    spatial: Any, group: Any, eps: Any,
) -> tuple[Any, ...]:  # fmt: skip
    """``native_group_norm``: (output, mean, rstd); the output is a ``group_norm``."""
    inputs = [cx.value(input)] + [cx.value(t) for t in (weight, bias) if t is not None]
    attrs = {"num_groups": int(cx.static(group, "group")), "eps": float(cx.static(eps, "eps"))}
    value = cx.out("group_norm", inputs, attrs, result=cx.result[0])
    return (value, None, None)


@aten(
    "reflection_pad1d",
    "reflection_pad2d",
    "reflection_pad3d",
    "replication_pad1d",
    "replication_pad2d",
    "replication_pad3d",
)
def convert_mode_pad(cx: NodeContext, input: Any, padding: Any) -> Value:
    """``reflection_pad<n>d`` / ``replication_pad<n>d``: a ``pad`` of that mode."""
    target = cx.fx_node.target
    assert isinstance(target, torch._ops.OpOverload)
    mode = "reflect" if target.overloadpacket.__name__.startswith("reflection") else "replicate"
    return torch_ops.convert_pad(cx, input, padding, mode)


@aten("native_layer_norm")
def convert_native_layer_norm(
    cx: NodeContext, input: Any, normalized_shape: Any, weight: Any, bias: Any, eps: Any
) -> tuple[Any, ...]:
    """``native_layer_norm``: (output, mean, rstd); the output is kept."""
    inputs = [cx.value(input)] + [cx.value(t) for t in (weight, bias) if t is not None]
    attrs = {
        "normalized_shape": cx.ints(normalized_shape, "normalized_shape"),
        "eps": float(cx.static(eps, "eps")),
    }
    value = cx.out("layer_norm", inputs, attrs, result=cx.result[0])
    return (value, None, None)


@aten("embedding")
def convert_embedding(
    cx: NodeContext, weight: Any, indices: Any, padding_idx: Any = -1,
    scale_grad_by_freq: Any = False, sparse: Any = False,
) -> Value:  # fmt: skip
    """``aten.embedding(weight, indices, ...)``: the weight comes first here."""
    pad = cx.static(padding_idx, "padding_idx")
    attrs = {
        "padding_idx": None if pad == -1 else pad,
        "scale_grad_by_freq": bool(cx.static(scale_grad_by_freq, "scale_grad_by_freq")),
        "sparse": bool(cx.static(sparse, "sparse")),
    }
    return cx.out("embedding", [cx.value(indices), cx.value(weight)], attrs)


@aten("convolution")
def convert_convolution(
    cx: NodeContext, input: Any, weight: Any, bias: Any, stride: Any, padding: Any,
    dilation: Any, transposed: Any, output_padding: Any, groups: Any,
) -> Value:  # fmt: skip
    """The generic ``aten.convolution``: a conv or transposed conv of the weight's rank."""
    rank = (cx.value(weight).type.rank or 4) - 2
    inputs = [cx.value(input), cx.value(weight)] + ([] if bias is None else [cx.value(bias)])
    if cx.static(transposed, "transposed"):
        attrs = {
            "stride": cx.ints(stride, "stride", length=rank),
            "padding": cx.ints(padding, "padding", length=rank),
            "output_padding": cx.ints(output_padding, "output_padding", length=rank),
            "groups": int(cx.static(groups, "groups")),
            "dilation": cx.ints(dilation, "dilation", length=rank),
        }
        return cx.out(f"conv_transpose{rank}d", inputs, attrs)
    return cx.out(
        f"conv{rank}d", inputs, torch_ops.conv_attrs(cx, rank, stride, padding, dilation, groups)
    )


@aten("addmm")
@function(torch.addmm)
@method("addmm")
def convert_addmm(
    cx: NodeContext, bias: Any, mat1: Any, mat2: Any, beta: Any = 1, alpha: Any = 1
) -> Value:
    """``bias + mat1 @ mat2``: a ``linear`` when ``mat2`` is a transposed weight.

    FX (``torch.addmm``) and torch.export (``aten.addmm``) share this handler, so both
    paths write the same ops for it.
    """
    if cx.static(beta, "beta") != 1 or cx.static(alpha, "alpha") != 1:
        raise Unsupported("addmm with beta/alpha other than 1")
    weight = cx.value(mat2)
    producer = weight.producer
    fx_weight = cx.fx_node.args[2]
    only_reader = isinstance(fx_weight, torch.fx.Node) and len(fx_weight.users) == 1
    if producer is not None and producer.op == "transpose" and only_reader and not weight.uses:
        source = producer.inputs[0]
        cx.graph.erase(producer)  # the transpose only fed this matmul: linear reads the weight
        return cx.out("linear", [cx.value(mat1), source, cx.value(bias)])
    product = cx.helper("matmul", [cx.value(mat1), weight]).output
    return cx.out("add", [product, cx.value(bias)])


@aten("max_pool2d_with_indices")
def convert_max_pool2d_with_indices(
    cx: NodeContext, input: Any, kernel_size: Any, stride: Any = (), padding: Any = 0,
    dilation: Any = 1, ceil_mode: Any = False,
) -> tuple[Any, ...]:  # fmt: skip
    """(values, indices): the values are a ``max_pool2d``; reading the indices is unsupported."""
    attrs = torch_ops.pool_attrs(cx, 2, kernel_size, stride, padding, ceil_mode)
    attrs["dilation"] = cx.ints(dilation, "dilation", length=2)
    value = cx.out("max_pool2d", [cx.value(input)], attrs, result=cx.result[0])
    return (value, None)


@lowers("select")
def convert_select(cx: NodeContext, input: Any, dim: Any, index: Any) -> Value:
    """``select(x, dim, index)``."""
    axis = int(cx.static(dim, "dim"))
    if isinstance(index, Value):
        return cx.out("select", [cx.value(input), index], {"dim": axis})
    return cx.out("select", [cx.value(input)], {"dim": axis, "index": int(index)})


@lowers("slice")
def convert_slice(
    cx: NodeContext, input: Any, dim: Any = 0, start: Any = None, end: Any = None, step: Any = 1
) -> Value:
    """``slice(x, dim, start, end, step)``."""
    axis = int(cx.static(dim, "dim"))
    if isinstance(start, Value) or isinstance(end, Value):
        extra = [cx.value(0 if start is None else start)]
        attrs: dict[str, Any] = {"dim": axis, "step": int(cx.static(step, "step"))}
        if isinstance(end, Value):
            extra.append(end)
        else:
            attrs["end"] = end
        return cx.out("slice", [cx.value(input), *extra], attrs)
    attrs = {"dim": axis, "start": start, "end": end, "step": int(cx.static(step, "step"))}
    return cx.out("slice", [cx.value(input)], attrs)


@lowers("slice_scatter")
def convert_slice_scatter(
    cx: NodeContext,
    input: Any,
    src: Any,
    dim: Any = 0,
    start: Any = None,
    end: Any = None,
    step: Any = 1,
) -> Value:
    """``slice_scatter``."""
    attrs = {
        "dim": int(cx.static(dim, "dim")),
        "start": cx.static(start, "start"),
        "end": cx.static(end, "end"),
        "step": int(cx.static(step, "step")),
    }
    return cx.out("slice_scatter", [cx.value(input), cx.value(src)], attrs)


@lowers("select_scatter")
def convert_select_scatter(cx: NodeContext, input: Any, src: Any, dim: Any, index: Any) -> Value:
    """``select_scatter`` (what torch.export makes of ``x[:, 0] = y``)."""
    attrs = {"dim": int(cx.static(dim, "dim")), "index": int(cx.static(index, "index"))}
    return cx.out("select_scatter", [cx.value(input), cx.value(src)], attrs)


@lowers("index")
def convert_index(cx: NodeContext, input: Any, indices: Any) -> Value:
    """``index.Tensor(x, [None, idx, ...])``: an ``index`` node."""
    positions = tuple(i for i, t in enumerate(indices) if t is not None)
    tensors = [cx.value(t) for t in indices if t is not None]
    return cx.out("index", [cx.value(input), *tensors], {"positions": positions})


@lowers("index_put")
def convert_index_put(
    cx: NodeContext, input: Any, indices: Any, values: Any, accumulate: Any = False
) -> Value:
    """``index_put(x, [None, idx, ...], values)``: what torch.export makes of ``x[idx] = v``."""
    positions = tuple(i for i, t in enumerate(indices) if t is not None)
    tensors = [cx.value(t) for t in indices if t is not None]
    attrs = {"positions": positions, "accumulate": bool(cx.static(accumulate, "accumulate"))}
    return cx.out("index_put", [cx.value(input), cx.value(values), *tensors], attrs)


@aten("copy")
def convert_copy(cx: NodeContext, input: Any, src: Any, non_blocking: Any = False) -> Value:
    """``copy(x, src)``: ``src`` broadcast to ``x``'s shape, in ``x``'s dtype (what
    torch.export makes of ``x[...] = src``, before a ``slice_scatter`` puts it back)."""
    target, source = cx.concrete(input), cx.concrete(src)
    value = cx.value(src)
    if source.dtype != target.dtype:
        if source.shape == target.shape:
            return cx.out("to", [value], {"dtype": cx.dtype(target.dtype)})
        value = cx.helper("to", [value], {"dtype": cx.dtype(target.dtype)}).output
    if source.shape == target.shape:
        return value
    shape = cx.helper("shape", [cx.value(input)]).output
    return cx.out("expand", [value, shape])


@aten("einsum")
def convert_einsum(cx: NodeContext, equation: Any, tensors: Any, path: Any = None) -> Value:
    """``einsum(equation, tensors)``."""
    return torch_ops.convert_einsum(cx, equation, *tensors)


@aten("_to_copy", "to", "type_as")
def convert_to_copy(cx: NodeContext, input: Any, *args: Any, **kwargs: Any) -> Any:
    """Casts (device moves leave the value as it is)."""
    return torch_ops.convert_to(cx, input)


@aten(
    "upsample_bilinear2d",
    "upsample_nearest2d",
    "upsample_bicubic2d",
    "_upsample_bilinear2d_aa",
    "_upsample_bicubic2d_aa",
)
def convert_upsample(
    cx: NodeContext,
    input: Any,
    output_size: Any,
    *args: Any,
    **kwargs: Any,
) -> Value:
    """``upsample_<mode>2d`` (``.vec``: size or scale factors; else explicit scales)."""
    target = cx.fx_node.target
    assert isinstance(target, torch._ops.OpOverload)
    packet = target.overloadpacket.__name__
    antialias = packet.endswith("_aa")
    mode = packet.removeprefix("_").removeprefix("upsample_").removesuffix("_aa")[:-2]
    align_corners = None if mode == "nearest" else (args[0] if args else False)
    rest = args[1:] if mode != "nearest" else args
    scales = rest[0] if rest else kwargs.get("scale_factors")
    if target._overloadname != "vec":
        scales = None  # explicit per-dim scales only say how output_size was derived
    size = None if output_size is None or scales is not None else output_size
    return torch_ops.convert_interpolate(
        cx, input, size, scales, mode, align_corners, antialias=antialias
    )


@aten("zero", "fill")
def convert_fill(cx: NodeContext, input: Any, value: Any = 0.0) -> Value:
    """``zero(x)`` / ``fill(x, v)``: a ``full_like``."""
    return cx.out("full_like", [cx.value(input)], {"fill_value": float(cx.static(value, "value"))})


@aten("empty_like")
def convert_new_tensor(cx: NodeContext, input: Any, *args: Any, **kwargs: Any) -> Any:
    """Factories that read only the dtype/device of a tensor: constants."""
    from acekit_fx.values import is_dynamic

    if is_dynamic((args, kwargs)):
        raise Unsupported("a size computed by the graph")
    return ConstTensor(cx.result, sanitize(cx.fx_node.name), cx.subgraph, cx.location)


aten("zeros", "empty")(torch_ops.factory(0.0))
aten("ones")(torch_ops.factory(1.0))
aten("full")(torch_ops.factory(None))
aten("new_zeros", "new_empty")(torch_ops.new_factory(0.0))
aten("new_ones")(torch_ops.new_factory(1.0))
aten("new_full")(torch_ops.new_factory(None))
