"""torch.nn leaf modules: each maps to its functional op, weights as ``parameter`` inputs.

The node is named after the module (``heads_head``) and placed in the subgraph of the
module that holds it (``VisionTransformer/heads``); its parameters are referenced by
their state-dict keys (``heads.head.weight``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from acekit.ir import Value
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.handlers.registry import module
from acekit_fx.handlers.torch_ops import (
    batch_norm_node,
    conv_attrs,
    convert_col2im,
    convert_im2col,
    implicit_softmax_dim,
    pool_attrs,
)


def _path(cx: NodeContext) -> str:
    return str(cx.fx_node.target)


def _weights(cx: NodeContext, mod: nn.Module, *names: str) -> list[Value | None]:
    return [cx.module_tensor(mod, _path(cx), name) for name in names]


@module(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def convert_conv(cx: NodeContext, mod: nn.modules.conv._ConvNd, input: Any) -> Value:
    """``nn.ConvNd``: a ``convNd`` node (a non-zero padding mode becomes a ``pad`` first)."""
    rank = len(mod.kernel_size)
    weight, bias = _weights(cx, mod, "weight", "bias")
    assert weight is not None
    tensor = cx.value(input)
    padding: Any = mod.padding
    if mod.padding_mode != "zeros":
        mode = {"circular": "circular", "reflect": "reflect", "replicate": "replicate"}[
            mod.padding_mode
        ]
        tensor = cx.helper(
            "pad", [tensor], {"pad": tuple(mod._reversed_padding_repeated_twice), "mode": mode}
        ).output
        padding = 0
    inputs = [tensor, weight] + ([] if bias is None else [bias])
    attrs = conv_attrs(cx, rank, mod.stride, padding, mod.dilation, mod.groups)
    return cx.out(f"conv{rank}d", inputs, attrs)


@module(nn.ConvTranspose1d, nn.ConvTranspose2d)
def convert_conv_transpose(
    cx: NodeContext, mod: nn.modules.conv._ConvTransposeNd, input: Any, output_size: Any = None
) -> Value:
    """``nn.ConvTransposeNd`` (an explicit output_size is not supported)."""
    if output_size is not None:
        raise Unsupported("ConvTranspose called with output_size")
    rank = len(mod.kernel_size)
    weight, bias = _weights(cx, mod, "weight", "bias")
    assert weight is not None
    inputs = [cx.value(input), weight] + ([] if bias is None else [bias])
    attrs = {
        "stride": tuple(mod.stride),
        "padding": tuple(mod.padding),
        "output_padding": tuple(mod.output_padding),
        "groups": mod.groups,
        "dilation": tuple(mod.dilation),
    }
    return cx.out(f"conv_transpose{rank}d", inputs, attrs)


@module(nn.Linear)
def convert_linear(cx: NodeContext, mod: nn.Linear, input: Any) -> Value:
    """``nn.Linear``."""
    weight, bias = _weights(cx, mod, "weight", "bias")
    assert weight is not None
    return cx.out("linear", [cx.value(input), weight] + ([] if bias is None else [bias]))


@module(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def convert_batch_norm(cx: NodeContext, mod: nn.modules.batchnorm._BatchNorm, input: Any) -> Value:
    """``nn.BatchNormNd``; in training mode it updates its running statistics like the module."""
    weight, bias, mean, var, count = _weights(
        cx, mod, "weight", "bias", "running_mean", "running_var", "num_batches_tracked"
    )
    return batch_norm_node(cx, input, weight, bias, mean, var, count, mod.momentum, mod.eps)


@module(nn.LayerNorm)
def convert_layer_norm(cx: NodeContext, mod: nn.LayerNorm, input: Any) -> Value:
    """``nn.LayerNorm``."""
    weight, bias = _weights(cx, mod, "weight", "bias")
    inputs = [cx.value(input)]
    if weight is not None:
        inputs.append(weight)
        if bias is not None:
            inputs.append(bias)
    attrs = {"normalized_shape": tuple(mod.normalized_shape), "eps": float(mod.eps)}
    return cx.out("layer_norm", inputs, attrs)


@module(nn.GroupNorm)
def convert_group_norm(cx: NodeContext, mod: nn.GroupNorm, input: Any) -> Value:
    """``nn.GroupNorm``."""
    weight, bias = _weights(cx, mod, "weight", "bias")
    inputs = [cx.value(input)] + [t for t in (weight, bias) if t is not None]
    return cx.out("group_norm", inputs, {"num_groups": mod.num_groups, "eps": float(mod.eps)})


@module(nn.Embedding)
def convert_embedding(cx: NodeContext, mod: nn.Embedding, input: Any) -> Value:
    """``nn.Embedding``."""
    if mod.max_norm is not None:
        raise Unsupported("Embedding with max_norm renormalises its weight in place")
    (weight,) = _weights(cx, mod, "weight")
    assert weight is not None
    attrs = {
        "padding_idx": mod.padding_idx,
        "scale_grad_by_freq": mod.scale_grad_by_freq,
        "sparse": mod.sparse,
    }
    return cx.out("embedding", [cx.value(input), weight], attrs)


def _simple(op: str, *types: type, attrs: Any = None) -> None:
    def handler(cx: NodeContext, mod: nn.Module, input: Any) -> Value:
        return cx.out(op, [cx.value(input)], attrs(mod) if attrs else {})

    handler.__name__ = f"convert_{op}_module"
    module(*types)(handler)


_simple("identity", nn.Identity)
_simple("relu", nn.ReLU)
_simple("relu6", nn.ReLU6)
_simple("silu", nn.SiLU)
_simple("mish", nn.Mish)
_simple("sigmoid", nn.Sigmoid)
_simple("tanh", nn.Tanh)
_simple("hardswish", nn.Hardswish)
_simple("hardsigmoid", nn.Hardsigmoid)
_simple("gelu", nn.GELU, attrs=lambda m: {"approximate": m.approximate})
_simple(
    "hardtanh",
    nn.Hardtanh,
    attrs=lambda m: {"min_val": float(m.min_val), "max_val": float(m.max_val)},
)
_simple("leaky_relu", nn.LeakyReLU, attrs=lambda m: {"negative_slope": float(m.negative_slope)})
_simple("elu", nn.ELU, attrs=lambda m: {"alpha": float(m.alpha)})
_simple(
    "softplus",
    nn.Softplus,
    attrs=lambda m: {"beta": float(m.beta), "threshold": float(m.threshold)},
)
_simple("dropout", nn.Dropout, attrs=lambda m: {"p": float(m.p)})
_simple("dropout2d", nn.Dropout2d, attrs=lambda m: {"p": float(m.p)})
_simple("flatten", nn.Flatten, attrs=lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim})
_simple(
    "unflatten", nn.Unflatten, attrs=lambda m: {"dim": m.dim, "sizes": tuple(m.unflattened_size)}
)


@module(nn.PReLU)
def convert_prelu(cx: NodeContext, mod: nn.PReLU, input: Any) -> Value:
    """``nn.PReLU``."""
    (weight,) = _weights(cx, mod, "weight")
    assert weight is not None
    return cx.out("prelu", [cx.value(input), weight])


def _softmax(op: str, *types: type) -> None:
    def handler(cx: NodeContext, mod: Any, input: Any) -> Value:
        tensor = cx.value(input)
        dim = mod.dim if mod.dim is not None else implicit_softmax_dim(tensor.type.rank or 0)
        return cx.out(op, [tensor], {"dim": int(dim)})

    handler.__name__ = f"convert_{op}_module"
    module(*types)(handler)


_softmax("softmax", nn.Softmax)
_softmax("log_softmax", nn.LogSoftmax)


@module(nn.MaxPool1d, nn.MaxPool2d)
def convert_max_pool(cx: NodeContext, mod: nn.modules.pooling._MaxPoolNd, input: Any) -> Value:
    """``nn.MaxPoolNd``."""
    if mod.return_indices:
        raise Unsupported("MaxPool with return_indices")
    rank = 1 if isinstance(mod, nn.MaxPool1d) else 2
    attrs = pool_attrs(cx, rank, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode)
    attrs["dilation"] = cx.ints(mod.dilation, "dilation", length=rank)
    return cx.out(f"max_pool{rank}d", [cx.value(input)], attrs)


@module(nn.AvgPool1d, nn.AvgPool2d)
def convert_avg_pool(cx: NodeContext, mod: Any, input: Any) -> Value:
    """``nn.AvgPoolNd``."""
    rank = 1 if isinstance(mod, nn.AvgPool1d) else 2
    attrs = pool_attrs(cx, rank, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode)
    attrs["count_include_pad"] = bool(mod.count_include_pad)
    if rank == 2:
        attrs["divisor_override"] = mod.divisor_override
    return cx.out(f"avg_pool{rank}d", [cx.value(input)], attrs)


@module(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
def convert_adaptive_pool(cx: NodeContext, mod: Any, input: Any) -> Value:
    """``nn.AdaptiveAvgPoolNd`` / ``nn.AdaptiveMaxPool2d``."""
    if isinstance(mod, nn.AdaptiveMaxPool2d):
        if mod.return_indices:
            raise Unsupported("AdaptiveMaxPool2d with return_indices")
        op = "adaptive_max_pool2d"
    else:
        op = (
            "adaptive_avg_pool1d"
            if isinstance(mod, nn.AdaptiveAvgPool1d)
            else "adaptive_avg_pool2d"
        )
    size = mod.output_size
    size = tuple(size) if isinstance(size, list | tuple) else size
    if op == "adaptive_avg_pool1d":
        size = cx.ints(size, "output_size")
    return cx.out(op, [cx.value(input)], {"output_size": size})


@module(nn.Upsample)
def convert_upsample(cx: NodeContext, mod: nn.Upsample, input: Any) -> Value:
    """``nn.Upsample``: ``interpolate``."""
    size = mod.size
    scale = mod.scale_factor
    attrs = {
        "size": None if size is None else cx.ints(size, "size"),
        "scale_factor": tuple(scale) if isinstance(scale, list | tuple) else scale,
        "mode": mod.mode,
        "align_corners": mod.align_corners,
        "recompute_scale_factor": mod.recompute_scale_factor,
    }
    return cx.out("interpolate", [cx.value(input)], attrs)


@module(nn.Unfold)
def convert_unfold_module(cx: NodeContext, mod: nn.Unfold, input: Any) -> Value:
    """``nn.Unfold``: ``im2col``."""
    return convert_im2col(cx, input, mod.kernel_size, mod.dilation, mod.padding, mod.stride)


@module(nn.Fold)
def convert_fold_module(cx: NodeContext, mod: nn.Fold, input: Any) -> Value:
    """``nn.Fold``: ``col2im``."""
    return convert_col2im(
        cx, input, mod.output_size, mod.kernel_size, mod.dilation, mod.padding, mod.stride
    )


@module(nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d,
        nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d)  # fmt: skip
def convert_pad(cx: NodeContext, mod: Any, input: Any) -> Value:
    """Padding modules: ``pad``."""
    name = type(mod).__name__
    mode = (
        "reflect" if "Reflection" in name else "replicate" if "Replication" in name else "constant"
    )
    attrs: dict[str, Any] = {"pad": tuple(mod.padding), "mode": mode}
    if mode == "constant":
        attrs["value"] = float(mod.value)
    return cx.out("pad", [cx.value(input)], attrs)


def is_torch_leaf(cls: type) -> bool:
    """Whether ``cls`` is a torch.nn layer (not a container) that maps to one op."""
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    return cls.__module__.startswith("torch.nn.modules.") and not issubclass(cls, containers)
