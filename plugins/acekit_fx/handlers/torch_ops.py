"""Torch functions and Tensor methods: elementwise math, activations, layers, shapes.

Each handler's signature mirrors the torch function it stands for, so that positional
and keyword arguments bind as torch binds them. Python constants become attributes;
``training`` flags that come from ``self.training`` are left out, so the op follows the
generated module's train()/eval() mode (the model was traced in eval mode).
"""

from __future__ import annotations

from typing import Any

import torch

from acekit.ir import Value
from acekit.parsing import shape_source
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.handlers.registry import function, lowers, method, optional_function

# -- elementwise ---------------------------------------------------------------------------


def _add_like(op: str) -> None:
    """``add``/``sub``: ``alpha`` is an attribute only when it is not 1."""

    def handler(cx: NodeContext, input: Any, other: Any, alpha: Any = 1) -> Value:
        alpha = cx.static(alpha, "alpha")
        attrs = {} if alpha == 1 else {"alpha": float(alpha)}
        return cx.out(op, [cx.value(input), cx.value(other)], attrs)

    handler.__name__ = f"convert_{op}"
    lowers(op)(handler)


_add_like("add")
_add_like("sub")


@lowers("div")
def convert_div(cx: NodeContext, input: Any, other: Any, *, rounding_mode: Any = None) -> Value:
    """``a / b`` and ``torch.div(a, b, rounding_mode=...)``."""
    mode = cx.static(rounding_mode, "rounding_mode")
    attrs = {} if mode is None else {"rounding_mode": mode}
    return cx.out("div", [cx.value(input), cx.value(other)], attrs)


@function(torch.addcmul)
@method("addcmul")
def convert_addcmul(
    cx: NodeContext, input: Any, tensor1: Any, tensor2: Any, *, value: Any = 1
) -> Value:
    """``input + value * tensor1 * tensor2``: a ``mul`` and an ``add`` (alpha = value)."""
    scale = cx.static(value, "value")
    product = cx.helper("mul", [cx.value(tensor1), cx.value(tensor2)]).output
    attrs = {} if scale == 1 else {"alpha": float(scale)}
    return cx.out("add", [cx.value(input), product], attrs)


def _with_inplace(op: str, **defaults: Any) -> None:
    """Activations of the form ``F.op(input, <attrs...>, inplace=False)``."""
    names = list(defaults)

    def handler(
        cx: NodeContext, input: Any, *args: Any, inplace: Any = False, **kwargs: Any
    ) -> Value:
        values = dict(defaults)
        for name, arg in zip(names, args, strict=False):
            values[name] = arg
        if len(args) > len(names):
            args[len(names)]
        values.update(kwargs)
        attrs = {name: cx.static(values[name], name) for name in names}
        return cx.out(op, [cx.value(input)], attrs)

    handler.__name__ = f"convert_{op}"
    lowers(op)(handler)


_with_inplace("hardtanh", min_val=-1.0, max_val=1.0)
_with_inplace("leaky_relu", negative_slope=0.01)
_with_inplace("elu", alpha=1.0)


@lowers("softplus")
def convert_softplus(cx: NodeContext, input: Any, beta: Any = 1.0, threshold: Any = 20.0) -> Value:
    """``F.softplus``."""
    attrs = {
        "beta": float(cx.static(beta, "beta")),
        "threshold": float(cx.static(threshold, "threshold")),
    }
    return cx.out("softplus", [cx.value(input)], attrs)


@lowers("gelu")
def convert_gelu(cx: NodeContext, input: Any, approximate: Any = "none") -> Value:
    """``F.gelu``."""
    return cx.out("gelu", [cx.value(input)], {"approximate": cx.static(approximate, "approximate")})


@lowers("prelu")
def convert_prelu(cx: NodeContext, input: Any, weight: Any) -> Value:
    """``F.prelu``."""
    return cx.out("prelu", [cx.value(input), cx.value(weight)])


@lowers("clamp")
def convert_clamp(cx: NodeContext, input: Any, min: Any = None, max: Any = None) -> Value:
    """``torch.clamp`` with constant bounds."""
    low, high = cx.static(min, "min"), cx.static(max, "max")
    attrs = {
        "min": None if low is None else float(low),
        "max": None if high is None else float(high),
    }
    return cx.out("clamp", [cx.value(input)], attrs)


def implicit_softmax_dim(rank: int) -> int:
    """The dim ``F.softmax(x)`` picks without one (deprecated, but old models rely on it)."""
    return 0 if rank in (0, 1, 3) else 1


def softmax_like(op: str) -> Any:
    """A handler for ``softmax``/``log_softmax`` (implicit dim and dtype included)."""

    def handler(
        cx: NodeContext, input: Any, dim: Any = None, _stacklevel: Any = 3, dtype: Any = None
    ) -> Value:
        tensor = cx.value(input)
        axis = cx.static(dim, "dim")
        if axis is None:
            rank = tensor.type.rank or 0
            axis = implicit_softmax_dim(rank)
        target_dtype = cx.static(dtype, "dtype")
        if isinstance(target_dtype, torch.dtype):
            tensor = cx.helper("to", [tensor], {"dtype": cx.dtype(target_dtype)}).output
        return cx.out(op, [tensor], {"dim": int(axis)})

    handler.__name__ = f"convert_{op}"
    return handler


lowers("softmax")(softmax_like("softmax"))
lowers("log_softmax")(softmax_like("log_softmax"))


def dropout_like(op: str) -> Any:
    """A handler for ``F.dropout``-like functions: its ``training`` came from
    ``self.training``, so the node follows the mode."""

    def handler(
        cx: NodeContext, input: Any, p: Any = 0.5, training: Any = True, inplace: Any = False
    ) -> Value:
        attrs: dict[str, Any] = {"p": float(cx.static(p, "p"))}
        if cx.static(training, "training") is True:
            # Traced in eval mode, so self.training was False: a True here is the user's
            # own always-on dropout (Monte Carlo dropout) and stays fixed.
            attrs["training"] = True
        return cx.out(op, [cx.value(input)], attrs)

    handler.__name__ = f"convert_{op}"
    return handler


convert_dropout = lowers("dropout")(dropout_like("dropout"))
convert_dropout2d = lowers("dropout2d")(dropout_like("dropout2d"))


@optional_function("torchvision.ops.stochastic_depth", "stochastic_depth")
def convert_stochastic_depth(
    cx: NodeContext, input: Any, p: Any, mode: Any, training: Any = True
) -> Value:
    """``torchvision.ops.stochastic_depth``: like dropout, it follows the module's mode."""
    attrs = {"p": float(cx.static(p, "p")), "mode": str(cx.static(mode, "mode"))}
    return cx.out("stochastic_depth", [cx.value(input)], attrs)


# -- layers --------------------------------------------------------------------------------


@lowers("linear")
def convert_linear(cx: NodeContext, input: Any, weight: Any, bias: Any = None) -> Value:
    """``F.linear``."""
    inputs = [cx.value(input), cx.value(weight)]
    if bias is not None:
        inputs.append(cx.value(bias))
    return cx.out("linear", inputs)


def conv_attrs(
    cx: NodeContext, rank: int, stride: Any, padding: Any, dilation: Any, groups: Any
) -> dict[str, Any]:
    """Normalised convolution attributes (ints become tuples of the conv's rank)."""
    pad = cx.static(padding, "padding")
    return {
        "stride": cx.ints(stride, "stride", length=rank),
        "padding": pad if isinstance(pad, str) else cx.ints(pad, "padding", length=rank),
        "dilation": cx.ints(dilation, "dilation", length=rank),
        "groups": int(cx.static(groups, "groups")),
    }


def _conv(op: str, rank: int) -> None:
    def handler(
        cx: NodeContext,
        input: Any,
        weight: Any,
        bias: Any = None,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: Any = 1,
    ) -> Value:
        inputs = [cx.value(input), cx.value(weight)]
        if bias is not None:
            inputs.append(cx.value(bias))
        return cx.out(op, inputs, conv_attrs(cx, rank, stride, padding, dilation, groups))

    handler.__name__ = f"convert_{op}"
    lowers(op)(handler)


_conv("conv1d", 1)
_conv("conv2d", 2)
_conv("conv3d", 3)


def _conv_transpose(op: str, rank: int) -> None:
    def handler(
        cx: NodeContext,
        input: Any,
        weight: Any,
        bias: Any = None,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: Any = 1,
        dilation: Any = 1,
    ) -> Value:
        inputs = [cx.value(input), cx.value(weight)]
        if bias is not None:
            inputs.append(cx.value(bias))
        attrs = {
            "stride": cx.ints(stride, "stride", length=rank),
            "padding": cx.ints(padding, "padding", length=rank),
            "output_padding": cx.ints(output_padding, "output_padding", length=rank),
            "groups": int(cx.static(groups, "groups")),
            "dilation": cx.ints(dilation, "dilation", length=rank),
        }
        return cx.out(op, inputs, attrs)

    handler.__name__ = f"convert_{op}"
    lowers(op)(handler)


_conv_transpose("conv_transpose1d", 1)
_conv_transpose("conv_transpose2d", 2)


@lowers("embedding")
def convert_embedding(
    cx: NodeContext,
    input: Any,
    weight: Any,
    padding_idx: Any = None,
    max_norm: Any = None,
    norm_type: Any = 2.0,
    scale_grad_by_freq: Any = False,
    sparse: Any = False,
) -> Value:
    """``F.embedding``."""
    if max_norm is not None:
        raise Unsupported("embedding with max_norm renormalises its weight in place")
    attrs = {
        "padding_idx": cx.static(padding_idx, "padding_idx"),
        "scale_grad_by_freq": bool(cx.static(scale_grad_by_freq, "scale_grad_by_freq")),
        "sparse": bool(cx.static(sparse, "sparse")),
    }
    return cx.out("embedding", [cx.value(input), cx.value(weight)], attrs)


@lowers("batch_norm")
def convert_batch_norm(
    cx: NodeContext,
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: Any = False,
    momentum: Any = 0.1,
    eps: Any = 1e-5,
) -> Value:
    """``F.batch_norm`` (argument order differs from the IR's, which follows nn.BatchNorm)."""
    return batch_norm_node(cx, input, weight, bias, running_mean, running_var, None, momentum, eps)


def batch_norm_node(
    cx: NodeContext,
    input: Any,
    weight: Any,
    bias: Any,
    running_mean: Any,
    running_var: Any,
    num_batches_tracked: Any,
    momentum: Any,
    eps: Any,
) -> Value:
    """A ``batch_norm`` node; absent weight/bias/statistics become ``None`` constants."""
    inputs = [
        cx.value(input),
        *(
            cx.none() if t is None else cx.value(t)
            for t in (weight, bias, running_mean, running_var)
        ),
    ]
    if num_batches_tracked is not None:
        inputs.append(cx.value(num_batches_tracked))
    mom = cx.static(momentum, "momentum")
    attrs = {"eps": float(cx.static(eps, "eps")), "momentum": None if mom is None else float(mom)}
    return cx.out("batch_norm", inputs, attrs)


def _affine_inputs(cx: NodeContext, input: Any, weight: Any, bias: Any) -> list[Value]:
    """``[input, weight, bias]`` of a normalisation, trailing absent ones left out."""
    inputs = [cx.value(input)]
    if weight is not None:
        inputs.append(cx.value(weight))
        if bias is not None:
            inputs.append(cx.value(bias))
    elif bias is not None:
        inputs += [cx.none(), cx.value(bias)]
    return inputs


@lowers("layer_norm")
def convert_layer_norm(
    cx: NodeContext,
    input: Any,
    normalized_shape: Any,
    weight: Any = None,
    bias: Any = None,
    eps: Any = 1e-5,
    cudnn_enable: Any = True,
) -> Value:
    """``F.layer_norm``."""
    inputs = _affine_inputs(cx, input, weight, bias)
    attrs = {
        "normalized_shape": cx.ints(normalized_shape, "normalized_shape"),
        "eps": float(cx.static(eps, "eps")),
    }
    return cx.out("layer_norm", inputs, attrs)


@lowers("group_norm")
def convert_group_norm(
    cx: NodeContext,
    input: Any,
    num_groups: Any,
    weight: Any = None,
    bias: Any = None,
    eps: Any = 1e-5,
    cudnn_enabled: Any = True,
) -> Value:
    """``F.group_norm``."""
    inputs = _affine_inputs(cx, input, weight, bias)
    attrs = {
        "num_groups": int(cx.static(num_groups, "num_groups")),
        "eps": float(cx.static(eps, "eps")),
    }
    return cx.out("group_norm", inputs, attrs)


@lowers("normalize")
def convert_normalize(
    cx: NodeContext, input: Any, p: Any = 2.0, dim: Any = 1, eps: Any = 1e-12, out: Any = None
) -> Value:
    """``F.normalize``."""
    attrs = {
        "p": float(cx.static(p, "p")),
        "dim": int(cx.static(dim, "dim")),
        "eps": float(cx.static(eps, "eps")),
    }
    return cx.out("normalize", [cx.value(input)], attrs)


@function(torch.linalg.vector_norm)
def convert_vector_norm(
    cx: NodeContext,
    input: Any,
    ord: Any = 2,
    dim: Any = None,
    keepdim: Any = False,
    *,
    dtype: Any = None,
) -> Value:
    """``torch.linalg.vector_norm``."""
    axis = cx.static(dim, "dim")
    attrs = {
        "p": float(cx.static(ord, "ord")),
        "dim": tuple(axis) if isinstance(axis, list) else axis,
        "keepdim": bool(cx.static(keepdim, "keepdim")),
    }
    return cx.out("norm", [cx.value(input)], attrs)


@lowers("norm")
def convert_norm(
    cx: NodeContext, input: Any, p: Any = "fro", dim: Any = None, keepdim: Any = False, **kw: Any
) -> Value:
    """``torch.norm`` / ``x.norm(p, dim)`` of vectors (``"fro"`` is the 2-norm of them)."""
    if kw.get("dtype") is not None or kw.get("out") is not None:
        raise Unsupported("norm with dtype= or out=")
    order = cx.static(p, "p")
    if order == "fro":
        order = 2.0
    if isinstance(order, str):
        raise Unsupported(f"the {order!r} matrix norm")
    return convert_vector_norm(cx, input, order, dim, keepdim)


# -- reductions ------------------------------------------------------------------------------


def _reduction(op: str) -> None:
    def handler(
        cx: NodeContext, input: Any, dim: Any = None, keepdim: Any = False, *, dtype: Any = None
    ) -> Value:
        tensor = cx.value(input)
        if cx.static(dtype, "dtype") is not None:
            tensor = cx.helper(
                "to", [tensor], {"dtype": cx.dtype(cx.static(dtype, "dtype"))}
            ).output
        axis = cx.static(dim, "dim")
        attrs = {
            "dim": tuple(axis) if isinstance(axis, list) else axis,
            "keepdim": bool(cx.static(keepdim, "keepdim")),
        }
        return cx.out(op, [tensor], attrs)

    handler.__name__ = f"convert_{op}"
    lowers(op)(handler)


for _op in ("mean", "sum", "amax", "amin"):
    _reduction(_op)


@lowers("argmax")
def convert_argmax(cx: NodeContext, input: Any, dim: Any = None, keepdim: Any = False) -> Value:
    """``torch.argmax``."""
    attrs = {"dim": cx.static(dim, "dim"), "keepdim": bool(cx.static(keepdim, "keepdim"))}
    return cx.out("argmax", [cx.value(input)], attrs)


@lowers("var")
def convert_var(
    cx: NodeContext,
    input: Any,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: Any = False,
    *,
    correction: Any = None,
) -> Value:
    """``torch.var`` / ``x.var``: ``unbiased`` (old spelling) is ``correction`` 1 or 0."""
    if unbiased is not None and correction is not None:
        raise Unsupported("var with both unbiased= and correction=")
    chosen = correction if correction is not None else unbiased
    amount = 1.0 if chosen is None else float(cx.static(chosen, "correction"))
    axis = cx.static(dim, "dim")
    attrs = {
        "dim": tuple(axis) if isinstance(axis, list) else axis,
        "correction": amount,
        "keepdim": bool(cx.static(keepdim, "keepdim")),
    }
    return cx.out("var", [cx.value(input)], attrs)


@lowers("argmin")
def convert_argmin(cx: NodeContext, input: Any, dim: Any = None, keepdim: Any = False) -> Value:
    """``torch.argmin``."""
    attrs = {"dim": cx.static(dim, "dim"), "keepdim": bool(cx.static(keepdim, "keepdim"))}
    return cx.out("argmin", [cx.value(input)], attrs)


def _extreme(op: str, elementwise: str, arg: str) -> Any:
    """``torch.max``/``torch.min`` and their methods: of all elements (``amax``), of two
    tensors (``maximum``), or along ``dim``, where they return (values, indices)."""

    def handler(cx: NodeContext, input: Any, dim: Any = None, keepdim: Any = False) -> Any:
        if isinstance(dim, Value) or isinstance(cx.concrete(dim), torch.Tensor):
            return cx.out(elementwise, [cx.value(input), cx.value(dim)])
        if dim is None:
            return cx.out(op, [cx.value(input)], {"dim": None, "keepdim": False})
        attrs = {"dim": int(cx.static(dim, "dim")), "keepdim": bool(cx.static(keepdim, "keepdim"))}
        tensor = cx.value(input)
        values = cx.out(op, [tensor], attrs, result=cx.result[0])
        # The named tuple torch returns, so that .values / .indices read as they do in torch.
        return type(cx.result)((values, cx.helper(arg, [tensor], attrs).output))

    handler.__name__ = f"convert_{op}_extreme"
    return handler


function(torch.max)(_extreme("amax", "maximum", "argmax"))
method("max")(_extreme("amax", "maximum", "argmax"))
function(torch.min)(_extreme("amin", "minimum", "argmin"))
method("min")(_extreme("amin", "minimum", "argmin"))


@lowers("im2col")
def convert_im2col(
    cx: NodeContext,
    input: Any,
    kernel_size: Any,
    dilation: Any = 1,
    padding: Any = 0,
    stride: Any = 1,
) -> Value:
    """``F.unfold``: an ``im2col``."""
    attrs = {
        "kernel_size": cx.ints(kernel_size, "kernel_size", length=2),
        "dilation": cx.ints(dilation, "dilation", length=2),
        "padding": cx.ints(padding, "padding", length=2),
        "stride": cx.ints(stride, "stride", length=2),
    }
    return cx.out("im2col", [cx.value(input)], attrs)


@lowers("col2im")
def convert_col2im(
    cx: NodeContext,
    input: Any,
    output_size: Any,
    kernel_size: Any,
    dilation: Any = 1,
    padding: Any = 0,
    stride: Any = 1,
) -> Value:
    """``F.fold``: a ``col2im`` (its output size may be read from a shape)."""
    size, packed = cx.sized(output_size, "output_size")
    attrs = {
        "output_size": size,
        "kernel_size": cx.ints(kernel_size, "kernel_size", length=2),
        "dilation": cx.ints(dilation, "dilation", length=2),
        "padding": cx.ints(padding, "padding", length=2),
        "stride": cx.ints(stride, "stride", length=2),
    }
    extra = [packed] if packed is not None else []
    return cx.out("col2im", [cx.value(input), *extra], attrs)


@lowers("cumsum")
def convert_cumsum(cx: NodeContext, input: Any, dim: Any, *, dtype: Any = None) -> Value:
    """``torch.cumsum``."""
    tensor = cx.value(input)
    if cx.static(dtype, "dtype") is not None:
        tensor = cx.helper("to", [tensor], {"dtype": cx.dtype(cx.static(dtype, "dtype"))}).output
    return cx.out("cumsum", [tensor], {"dim": int(cx.static(dim, "dim"))})


# -- pooling and resampling ----------------------------------------------------------------


def pool_attrs(
    cx: NodeContext, rank: int, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any
) -> dict[str, Any]:
    """Normalised pooling attributes; an empty/None stride means the kernel size."""
    kernel = cx.ints(kernel_size, "kernel_size", length=rank)
    steps = cx.static(stride, "stride")
    return {
        "kernel_size": kernel,
        "stride": kernel if steps in (None, [], ()) else cx.ints(steps, "stride", length=rank),
        "padding": cx.ints(padding, "padding", length=rank),
        "ceil_mode": bool(cx.static(ceil_mode, "ceil_mode")),
    }


def _max_pool(op: str, rank: int) -> None:
    def handler(
        cx: NodeContext,
        input: Any,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: Any = False,
        return_indices: Any = False,
    ) -> Value:
        if cx.static(return_indices, "return_indices"):
            raise Unsupported("max pooling that returns indices")
        attrs = pool_attrs(cx, rank, kernel_size, stride, padding, ceil_mode)
        attrs["dilation"] = cx.ints(dilation, "dilation", length=rank)
        return cx.out(op, [cx.value(input)], attrs)

    handler.__name__ = f"convert_{op}"
    lowers(op)(handler)


_max_pool("max_pool1d", 1)
_max_pool("max_pool2d", 2)


@lowers("avg_pool1d")
def convert_avg_pool1d(
    cx: NodeContext,
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: Any = False,
    count_include_pad: Any = True,
) -> Value:
    """``F.avg_pool1d``."""
    attrs = pool_attrs(cx, 1, kernel_size, stride, padding, ceil_mode)
    attrs["count_include_pad"] = bool(cx.static(count_include_pad, "count_include_pad"))
    return cx.out("avg_pool1d", [cx.value(input)], attrs)


@lowers("avg_pool2d")
def convert_avg_pool2d(
    cx: NodeContext,
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: Any = False,
    count_include_pad: Any = True,
    divisor_override: Any = None,
) -> Value:
    """``F.avg_pool2d``."""
    attrs = pool_attrs(cx, 2, kernel_size, stride, padding, ceil_mode)
    attrs["count_include_pad"] = bool(cx.static(count_include_pad, "count_include_pad"))
    attrs["divisor_override"] = cx.static(divisor_override, "divisor_override")
    return cx.out("avg_pool2d", [cx.value(input)], attrs)


def _adaptive(op: str) -> None:
    def handler(
        cx: NodeContext, input: Any, output_size: Any, return_indices: Any = False
    ) -> Value:
        if cx.static(return_indices, "return_indices"):
            raise Unsupported("adaptive max pooling that returns indices")
        size = cx.static(output_size, "output_size")
        size = tuple(size) if isinstance(size, list | tuple) else size
        if op == "adaptive_avg_pool1d":
            size = cx.ints(size, "output_size")
        return cx.out(op, [cx.value(input)], {"output_size": size})

    handler.__name__ = f"convert_{op}"
    lowers(op)(handler)


for _op in ("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d"):
    _adaptive(_op)


@lowers("interpolate")
def convert_interpolate(
    cx: NodeContext,
    input: Any,
    size: Any = None,
    scale_factor: Any = None,
    mode: Any = "nearest",
    align_corners: Any = None,
    recompute_scale_factor: Any = None,
    antialias: Any = False,
) -> Value:
    """``F.interpolate``; a size the graph computes (``x.shape[-2:]``) is a ``pack`` input."""
    static_size, packed = (None, None) if size is None else cx.sized(size, "size")
    scale = cx.static(scale_factor, "scale_factor")
    attrs = {
        "size": static_size,
        "scale_factor": tuple(scale) if isinstance(scale, list) else scale,
        "mode": str(cx.static(mode, "mode")),
        "align_corners": cx.static(align_corners, "align_corners"),
        "recompute_scale_factor": cx.static(recompute_scale_factor, "recompute_scale_factor"),
        "antialias": bool(cx.static(antialias, "antialias")),
    }
    extra = [packed] if packed is not None else []
    return cx.out("interpolate", [cx.value(input), *extra], attrs)


@lowers("pad")
def convert_pad(
    cx: NodeContext, input: Any, pad: Any, mode: Any = "constant", value: Any = None
) -> Value:
    """``F.pad``."""
    if isinstance(mode, int | float) and not isinstance(mode, bool):  # constant_pad_nd(x, pad, v)
        mode, value = "constant", mode
    fill = cx.static(value, "value")
    widths, packed = cx.sized(pad, "pad")
    attrs = {
        "pad": widths,
        "mode": str(cx.static(mode, "mode")),
        "value": None if fill is None else float(fill),
    }
    extra = [packed] if packed is not None else []
    return cx.out("pad", [cx.value(input), *extra], attrs)


@lowers("unfold")
def convert_unfold(cx: NodeContext, input: Any, dimension: Any, size: Any, step: Any) -> Value:
    """``x.unfold(dimension, size, step)``: sliding windows in a new last dim."""
    attrs = {
        "dimension": int(cx.static(dimension, "dimension")),
        "size": int(cx.static(size, "size")),
        "step": int(cx.static(step, "step")),
    }
    return cx.out("unfold", [cx.value(input)], attrs)


# -- shapes ----------------------------------------------------------------------------------


def _varargs(items: tuple[Any, ...]) -> Any:
    """``x.view(2, 3)`` and ``x.view((2, 3))`` alike: the list of sizes."""
    if len(items) == 1 and (isinstance(items[0], list | tuple | torch.Size | Value)):
        return items[0]
    return items


@function(torch.reshape)
def convert_reshape_function(cx: NodeContext, input: Any, shape: Any) -> Value:
    """``torch.reshape``."""
    return reshape_node(cx, input, shape)


@method("reshape", "view")
def convert_reshape_method(cx: NodeContext, input: Any, *shape: Any) -> Value:
    """``x.reshape(...)`` / ``x.view(...)`` (a dtype view is not supported)."""
    if len(shape) == 1 and isinstance(shape[0], torch.dtype):
        raise Unsupported("Tensor.view(dtype) reinterprets bits")
    return reshape_node(cx, input, _varargs(shape))


def reshape_node(cx: NodeContext, input: Any, shape: Any) -> Value:
    """A ``reshape`` node with a static shape attribute or a computed shape input."""
    attr, extra = cx.sized(shape, "shape")
    if extra is not None:
        return cx.out("reshape", [cx.value(input), extra])
    return cx.out("reshape", [cx.value(input)], {"shape": attr})


@method("view_as", "reshape_as")
def convert_view_as(cx: NodeContext, input: Any, other: Any) -> Value:
    """``x.view_as(y)``: the shape of ``y``, read in the graph."""
    shape = cx.helper("shape", [cx.value(other)]).output
    return cx.out("reshape", [cx.value(input), shape])


def sized_node(op: str, param: str) -> Any:
    """A handler for ``expand``/``repeat``-like methods taking sizes as varargs."""

    def handler(cx: NodeContext, input: Any, *sizes: Any) -> Value:
        attr, extra = cx.sized(_varargs(sizes), param)
        if extra is not None:
            return cx.out(op, [cx.value(input), extra])
        return cx.out(op, [cx.value(input)], {param: attr})

    handler.__name__ = f"convert_{op}"
    return handler


lowers("expand")(sized_node("expand", "size"))
lowers("repeat")(sized_node("repeat", "repeats"))


@function(torch.broadcast_to)
def convert_broadcast_to(cx: NodeContext, input: Any, size: Any) -> Value:
    """``torch.broadcast_to``: an ``expand``."""
    return sized_node("expand", "size")(cx, input, size)


@method("expand_as")
def convert_expand_as(cx: NodeContext, input: Any, other: Any) -> Value:
    """``x.expand_as(y)``: ``expand`` to the shape of ``y``, read in the graph."""
    shape = cx.helper("shape", [cx.value(other)]).output
    return cx.out("expand", [cx.value(input), shape])


@lowers("flatten")
def convert_flatten(cx: NodeContext, input: Any, start_dim: Any = 0, end_dim: Any = -1) -> Value:
    """``torch.flatten``."""
    attrs = {
        "start_dim": int(cx.static(start_dim, "start_dim")),
        "end_dim": int(cx.static(end_dim, "end_dim")),
    }
    return cx.out("flatten", [cx.value(input)], attrs)


@lowers("unflatten")
def convert_unflatten(cx: NodeContext, input: Any, dim: Any, sizes: Any) -> Value:
    """``torch.unflatten``."""
    attrs = {"dim": int(cx.static(dim, "dim")), "sizes": cx.ints(sizes, "sizes")}
    return cx.out("unflatten", [cx.value(input)], attrs)


@function(torch.permute)
def convert_permute_function(cx: NodeContext, input: Any, dims: Any) -> Value:
    """``torch.permute``."""
    return cx.out("permute", [cx.value(input)], {"dims": cx.ints(dims, "dims")})


@method("permute")
def convert_permute_method(cx: NodeContext, input: Any, *dims: Any) -> Value:
    """``x.permute(...)``."""
    return cx.out("permute", [cx.value(input)], {"dims": cx.ints(_varargs(dims), "dims")})


@lowers("transpose")
def convert_transpose(cx: NodeContext, input: Any, dim0: Any, dim1: Any) -> Value:
    """``torch.transpose`` (and its aliases)."""
    attrs = {"dim0": int(cx.static(dim0, "dim0")), "dim1": int(cx.static(dim1, "dim1"))}
    return cx.out("transpose", [cx.value(input)], attrs)


@function(torch.t)
@method("t")
def convert_t(cx: NodeContext, input: Any) -> Value:
    """``x.t()``: a transpose of a matrix (a vector stays as it is)."""
    tensor = cx.value(input)
    if tensor.type.rank is not None and tensor.type.rank < 2:
        return cx.out("identity", [tensor])
    return cx.out("transpose", [tensor], {"dim0": 0, "dim1": 1})


@lowers("contiguous")
def convert_contiguous(cx: NodeContext, input: Any, memory_format: Any = None) -> Value:
    """``x.contiguous()``."""
    return cx.out("contiguous", [cx.value(input)])


@function(torch.clone)
@method("clone")
def convert_clone(cx: NodeContext, input: Any, *, memory_format: Any = None) -> Value:
    """``x.clone()``: the same values, an ``identity``."""
    return cx.out("identity", [cx.value(input)])


@lowers("detach")
def convert_detach(cx: NodeContext, input: Any) -> Value:
    """``x.detach()``."""
    return cx.out("detach", [cx.value(input)])


@lowers("unsqueeze")
def convert_unsqueeze(cx: NodeContext, input: Any, dim: Any) -> Value:
    """``torch.unsqueeze``."""
    return cx.out("unsqueeze", [cx.value(input)], {"dim": int(cx.static(dim, "dim"))})


@lowers("squeeze")
def convert_squeeze(cx: NodeContext, input: Any, dim: Any = None) -> Value:
    """``torch.squeeze``."""
    axis = cx.static(dim, "dim")
    return cx.out(
        "squeeze", [cx.value(input)], {"dim": tuple(axis) if isinstance(axis, list) else axis}
    )


@lowers("roll")
def convert_roll(cx: NodeContext, input: Any, shifts: Any, dims: Any = None) -> Value:
    """``torch.roll``."""
    attrs = {
        "shifts": cx.ints(shifts, "shifts"),
        "dims": None if dims is None else cx.ints(dims, "dims"),
    }
    return cx.out("roll", [cx.value(input)], attrs)


@lowers("flip")
def convert_flip(cx: NodeContext, input: Any, *dims: Any) -> Value:
    """``torch.flip``."""
    return cx.out("flip", [cx.value(input)], {"dims": cx.ints(_varargs(dims), "dims")})


def multi_output(
    cx: NodeContext, op: str, inputs: list[Value], attrs: dict[str, Any]
) -> tuple[Value, ...]:
    """A node with one output per piece of the concrete result (chunk, split, unbind)."""
    count = len(cx.result)
    node = cx.emit(op, inputs, attrs, num_outputs=count)
    return node.outputs


@lowers("chunk")
def convert_chunk(cx: NodeContext, input: Any, chunks: Any, dim: Any = 0) -> tuple[Value, ...]:
    """``torch.chunk``: one output per chunk."""
    attrs = {"chunks": int(cx.static(chunks, "chunks")), "dim": int(cx.static(dim, "dim"))}
    return multi_output(cx, "chunk", [cx.value(input)], attrs)


@lowers("split")
def convert_split(
    cx: NodeContext, input: Any, split_size_or_sections: Any, dim: Any = 0
) -> tuple[Value, ...]:
    """``torch.split``: one output per piece."""
    size = cx.static(split_size_or_sections, "split_size")
    attrs = {
        "split_size": tuple(size) if isinstance(size, list) else size,
        "dim": int(cx.static(dim, "dim")),
    }
    return multi_output(cx, "split", [cx.value(input)], attrs)


@lowers("unbind")
def convert_unbind(cx: NodeContext, input: Any, dim: Any = 0) -> tuple[Value, ...]:
    """``torch.unbind``: one output per slice."""
    return multi_output(cx, "unbind", [cx.value(input)], {"dim": int(cx.static(dim, "dim"))})


@lowers("cat")
def convert_cat(cx: NodeContext, tensors: Any, dim: Any = 0, *, axis: Any = None) -> Value:
    """``torch.cat``."""
    axis_ = cx.static(axis if axis is not None else dim, "dim")
    return cx.out("cat", [cx.tensor(t) for t in tensors], {"dim": int(axis_)})


@lowers("stack")
def convert_stack(cx: NodeContext, tensors: Any, dim: Any = 0) -> Value:
    """``torch.stack``."""
    return cx.out("stack", [cx.tensor(t) for t in tensors], {"dim": int(cx.static(dim, "dim"))})


@lowers("where")
def convert_where(cx: NodeContext, condition: Any, input: Any = None, other: Any = None) -> Value:
    """``torch.where(condition, input, other)`` (the one-argument form is data-dependent)."""
    if input is None or other is None:
        raise Unsupported("torch.where(condition) has a data-dependent shape")
    return cx.out("where", [cx.value(condition), cx.value(input), cx.value(other)])


@lowers("masked_fill")
def convert_masked_fill(cx: NodeContext, input: Any, mask: Any, value: Any) -> Value:
    """``x.masked_fill(mask, value)``."""
    if isinstance(value, Value):
        return cx.out("masked_fill", [cx.value(input), cx.value(mask), value])
    fill = cx.static(value, "value")
    return cx.out("masked_fill", [cx.value(input), cx.value(mask)], {"value": float(fill)})


@lowers("gather_elements")
def convert_gather(
    cx: NodeContext, input: Any, dim: Any, index: Any, *, sparse_grad: Any = False
) -> Value:
    """``torch.gather``: ``gather_elements`` in the IR (``gather`` reads shapes)."""
    return cx.out(
        "gather_elements", [cx.value(input), cx.value(index)], {"dim": int(cx.static(dim, "dim"))}
    )


@lowers("scatter_elements")
def convert_scatter(
    cx: NodeContext,
    input: Any,
    dim: Any,
    index: Any,
    src: Any = None,
    *,
    value: Any = None,
    reduce: Any = None,
) -> Value:
    """``torch.scatter`` / ``torch.scatter_add`` (and their methods and ATen ops)."""
    if reduce is not None:
        raise Unsupported("scatter with reduce= (deprecated in torch; use scatter_reduce)")
    target = cx.fx_node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    attrs: dict[str, Any] = {"dim": int(cx.static(dim, "dim"))}
    if "scatter_add" in name:
        attrs["reduce"] = "add"
    source = src if src is not None else value
    return cx.out("scatter_elements", [cx.value(input), cx.value(index), cx.value(source)], attrs)


@lowers("index_select")
def convert_index_select(cx: NodeContext, input: Any, dim: Any, index: Any) -> Value:
    """``torch.index_select``."""
    return cx.out(
        "index_select", [cx.value(input), cx.value(index)], {"dim": int(cx.static(dim, "dim"))}
    )


@lowers("einsum")
def convert_einsum(cx: NodeContext, equation: Any, *operands: Any) -> Value:
    """``torch.einsum``."""
    tensors = _varargs(operands)
    return cx.out(
        "einsum",
        [cx.tensor(t) for t in tensors],
        {"equation": str(cx.static(equation, "equation"))},
    )


# -- dtypes and constants --------------------------------------------------------------------


@lowers("to")
def convert_to(cx: NodeContext, input: Any, *args: Any, **kwargs: Any) -> Any:
    """Casts: a ``to`` node when the dtype changes; device moves leave the value as it is."""
    tensor = cx.value(input)
    result = cx.result
    if not isinstance(result, torch.Tensor):
        raise Unsupported("Tensor.type() without a dtype returns a string")
    if tensor.type.dtype == result.dtype:
        return tensor
    return cx.out("to", [tensor], {"dtype": cx.dtype(result.dtype)})


def like_factory(fill: float | None) -> Any:
    """A handler for ``zeros_like``/``ones_like``/``full_like``: a ``full_like`` node."""

    def handler(cx: NodeContext, input: Any, *args: Any, dtype: Any = None, **kwargs: Any) -> Value:
        value = (
            fill
            if fill is not None
            else cx.static(args[0] if args else kwargs["fill_value"], "fill_value")
        )
        target = cx.static(dtype, "dtype")
        attrs = {
            "fill_value": float(value),
            "dtype": cx.dtype(target) if target is not None else None,
        }
        return cx.out("full_like", [cx.value(input)], attrs)

    return handler


function(torch.zeros_like)(like_factory(0.0))
function(torch.ones_like)(like_factory(1.0))
function(torch.full_like)(like_factory(None))


def full_node(cx: NodeContext, size: Any, fill_value: Any, like: Value | None = None) -> Value:
    """A ``full`` node for a tensor whose size the graph computes, on the device of
    ``like`` (else of the tensor the size was read from); its dtype is the result's."""
    static_size, packed = cx.sized(size, "size")
    result = cx.result
    attrs: dict[str, Any] = {
        "fill_value": float(cx.static(fill_value, "fill_value")),
        "dtype": cx.dtype(result.dtype),
    }
    if static_size is not None:
        attrs["size"] = static_size
    if like is None and packed is not None:
        like = shape_source(packed)
    inputs = [packed] if packed is not None else []
    if like is not None:
        inputs = [packed if packed is not None else cx.none(), like]
    return cx.out("full", inputs, attrs)


def _size_and_fill(fill: float | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The size and fill value of ``zeros(2, n)``, ``zeros((2, n))`` or ``full(size, v)``."""
    if fill is None:
        size = args[0] if args else kwargs["size"]
        return size, (args[1] if len(args) > 1 else kwargs["fill_value"])
    if not args:
        return kwargs["size"], fill
    if len(args) == 1 and isinstance(args[0], tuple | list | torch.Size | Value):
        return args[0], fill
    return args, fill


def factory(fill: float | None) -> Any:
    """A handler for ``torch.zeros``/``ones``/``full`` of a size the graph computes
    (a known size is folded into a constant before any handler runs)."""

    def handler(cx: NodeContext, *args: Any, **kwargs: Any) -> Value:
        return full_node(cx, *_size_and_fill(fill, args, kwargs))

    return handler


@lowers("arange")
def convert_arange(cx: NodeContext, *args: Any, **kwargs: Any) -> Value:
    """``torch.arange`` with a bound the graph computes (a known one folds to a constant).

    The result takes the device of the tensor the first computed bound was read from.
    """
    for unused in ("out", "layout", "pin_memory", "requires_grad"):
        if kwargs.get(unused) not in (None, False):
            raise Unsupported(f"arange with {unused}=")
    bounds = list(args) + [kwargs[k] for k in ("start", "end", "step") if k in kwargs]
    if len(bounds) == 1:
        bounds = [0, bounds[0]]
    if len(bounds) == 2:
        bounds.append(1)
    if len(bounds) != 3:
        raise Unsupported(f"arange with {len(bounds)} bounds")
    template = tuple(None if isinstance(b, Value) else cx.static(b, "arange bound") for b in bounds)
    dynamic = [b for b in bounds if isinstance(b, Value)]
    like = next((s for s in map(shape_source, dynamic) if s is not None), None)
    if like is None:
        raise Unsupported("arange whose bounds are not read from a tensor's shape")
    attrs = {"values": template, "dtype": cx.dtype(cx.result.dtype)}
    return cx.out("arange", [like, *dynamic], attrs)


function(torch.zeros, torch.empty)(factory(0.0))
function(torch.ones)(factory(1.0))
function(torch.full)(factory(None))


def new_factory(fill: float | None) -> Any:
    """A handler for ``x.new_zeros(size)`` and the like: a constant when the size is known
    (only ``x``'s dtype and device are read), else a ``full`` on ``x``'s device."""

    def handler(cx: NodeContext, input: Any, *args: Any, **kwargs: Any) -> Any:
        from acekit_fx.values import ConstTensor, is_dynamic

        if not is_dynamic((args, kwargs)):
            from acekit_fx.naming import sanitize

            return ConstTensor(cx.result, sanitize(cx.fx_node.name), cx.subgraph, cx.location)
        if fill is None and "fill_value" not in kwargs and len(args) < 2:
            raise Unsupported("new_tensor of data computed by the graph")
        size, value = _size_and_fill(fill, args, kwargs)
        return full_node(cx, size, value, like=cx.tensor(input))

    return handler


convert_new_tensor = method("new_zeros", "new_empty")(new_factory(0.0))
method("new_ones")(new_factory(1.0))
method("new_full", "new_tensor")(new_factory(None))
