"""Shapes and indexing: views, concatenation, slicing, gathering, factories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from acekit.ir.tensor_type import dtype_from_name
from acekit.ops.opdef import OpDef
from acekit.ops.schemas import (
    ANY,
    BOOL,
    DTYPE,
    FLOAT,
    INT,
    INTS,
    STR,
    AttrSpec,
    OpSchema,
    sized,
    unary,
)


def flatten(input: Tensor, *, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """``torch.flatten``."""
    return torch.flatten(input, start_dim, end_dim)


def unflatten(input: Tensor, *, dim: int, sizes: tuple[int, ...]) -> Tensor:
    """``torch.unflatten``."""
    return torch.unflatten(input, dim, sizes)


def reshape(input: Tensor, shape_input: Any = None, *, shape: Any = None) -> Tensor:
    """``input.reshape(shape)``; the shape comes from the input when there is one."""
    return input.reshape(shape_input if shape_input is not None else shape)


def expand(input: Tensor, size_input: Any = None, *, size: Any = None) -> Tensor:
    """``input.expand(size)``."""
    return input.expand(size_input if size_input is not None else size)


def repeat(input: Tensor, repeats_input: Any = None, *, repeats: Any = None) -> Tensor:
    """``input.repeat(repeats)``."""
    return input.repeat(repeats_input if repeats_input is not None else repeats)


def permute(input: Tensor, *, dims: tuple[int, ...]) -> Tensor:
    """``input.permute(dims)``."""
    return input.permute(dims)


def transpose(input: Tensor, *, dim0: int, dim1: int) -> Tensor:
    """``input.transpose(dim0, dim1)``."""
    return input.transpose(dim0, dim1)


def contiguous(input: Tensor) -> Tensor:
    """``input.contiguous()``."""
    return input.contiguous()


def unsqueeze(input: Tensor, *, dim: int) -> Tensor:
    """``input.unsqueeze(dim)``."""
    return input.unsqueeze(dim)


def squeeze(input: Tensor, *, dim: Any = None) -> Tensor:
    """``input.squeeze(dim)``."""
    return input.squeeze() if dim is None else input.squeeze(dim)


def flip(input: Tensor, *, dims: tuple[int, ...]) -> Tensor:
    """``torch.flip``."""
    return torch.flip(input, dims)


def roll(input: Tensor, *, shifts: tuple[int, ...], dims: tuple[int, ...] | None = None) -> Tensor:
    """``torch.roll``."""
    return torch.roll(input, shifts, () if dims is None else dims)


def pad(
    input: Tensor,
    pad_input: Any = None,
    *,
    pad: tuple[int, ...] | None = None,
    mode: str = "constant",
    value: float | None = None,
) -> Tensor:
    """``F.pad``; the padding comes from the input when there is one."""
    widths = tuple(pad_input) if pad_input is not None else pad
    assert widths is not None, "pad needs a pad attribute or input"
    return F.pad(input, widths, mode, value)


def unfold(input: Tensor, *, dimension: int, size: int, step: int) -> Tensor:
    """``Tensor.unfold``, written as a gather so that ONNX export keeps the length free.

    torch's ONNX exporter lowers ``aten::unfold`` only for sizes it knows; here the
    window starts are an ``arange`` of the traced length (ONNX Range).
    """
    dimension = dimension % input.dim()
    length = input.shape[dimension]
    count = (length - size) // step + 1
    starts = torch.arange(count, device=input.device) * step
    index = (starts[:, None] + torch.arange(size, device=input.device)[None, :]).reshape(-1)
    windows = input.index_select(dimension, index).unflatten(dimension, (-1, size))
    return windows.movedim(dimension + 1, -1)


def arange(like: Tensor, *inputs: Any, values: tuple[Any, ...], dtype: str | None = None) -> Tensor:
    """``torch.arange(start, end, step)`` on ``like``'s device; None bounds are inputs."""
    pending = iter(inputs)
    start, end, step = (next(pending) if v is None else v for v in values)
    kind = dtype_from_name(dtype) if dtype is not None else None
    return torch.arange(start, end, step, dtype=kind, device=like.device)


def chunk(input: Tensor, *, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``torch.chunk``."""
    return tuple(torch.chunk(input, chunks, dim))


def split(input: Tensor, *, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """``torch.split``."""
    return tuple(torch.split(input, split_size, dim))


def unbind(input: Tensor, *, dim: int = 0) -> tuple[Tensor, ...]:
    """``torch.unbind``."""
    return tuple(torch.unbind(input, dim))


def cat(*tensors: Tensor, dim: int = 0) -> Tensor:
    """``torch.cat``."""
    return torch.cat(tensors, dim)


def stack(*tensors: Tensor, dim: int = 0) -> Tensor:
    """``torch.stack``."""
    return torch.stack(tensors, dim)


def select(input: Tensor, index_input: Any = None, *, dim: int, index: int | None = None) -> Tensor:
    """``input.select(dim, index)``."""
    position = index_input if index_input is not None else index
    assert position is not None, "select needs an index"
    return input.select(dim, position)


def slice_(
    input: Tensor,
    start_input: Any = None,
    end_input: Any = None,
    *,
    dim: int = 0,
    start: int | None = None,
    end: int | None = None,
    step: int = 1,
) -> Tensor:
    """``input[start:end:step]`` along ``dim``."""
    first = start_input if start_input is not None else start
    last = end_input if end_input is not None else end
    axis = dim % input.dim()
    return input[(slice(None),) * axis + (slice(first, last, step),)]


def index(input: Tensor, *indices: Tensor, positions: tuple[int, ...]) -> Tensor:
    """Advanced indexing: ``indices[k]`` indexes dimension ``positions[k]``."""
    key: list[Any] = [slice(None)] * (max(positions) + 1)
    for position, tensor in zip(positions, indices, strict=True):
        key[position] = tensor
    return input[tuple(key)]


def index_select(input: Tensor, index: Tensor, *, dim: int) -> Tensor:
    """``torch.index_select``."""
    return torch.index_select(input, dim, index)


def gather_elements(input: Tensor, index: Tensor, *, dim: int) -> Tensor:
    """``torch.gather``."""
    return torch.gather(input, dim, index)


def scatter_elements(
    input: Tensor, index: Tensor, src: Any, *, dim: int, reduce: str | None = None
) -> Tensor:
    """``torch.scatter`` (``src`` a tensor or a number), ``torch.scatter_add`` when
    ``reduce='add'``, ``scatter(..., reduce='multiply')`` when so."""
    if reduce == "add":
        source = src if isinstance(src, Tensor) else torch.full_like(index, src, dtype=input.dtype)
        return torch.scatter_add(input, dim, index, source)
    if reduce is None:
        return torch.scatter(input, dim, index, src)
    return torch.scatter(input, dim, index, src, reduce=reduce)


def index_put(
    input: Tensor,
    values: Tensor,
    *indices: Tensor,
    positions: tuple[int, ...],
    accumulate: bool = False,
) -> Tensor:
    """A copy of ``input`` with ``input[key] = values`` (``+=`` with ``accumulate``), where
    ``indices[k]`` indexes dimension ``positions[k]``."""
    key: list[Tensor | None] = [None] * (max(positions) + 1)
    for position, tensor in zip(positions, indices, strict=True):
        key[position] = tensor
    return torch.index_put(input, tuple(key), values, accumulate)


def slice_scatter(
    input: Tensor,
    src: Tensor,
    *,
    dim: int = 0,
    start: int | None = None,
    end: int | None = None,
    step: int = 1,
) -> Tensor:
    """``torch.slice_scatter``, written as a scatter to the slice's positions.

    ONNX exporters have no lowering for ``aten::slice_scatter``; ``scatter`` exports as
    ``ScatterElements`` (the positions are a ``Range``, so free dims stay free).
    """
    axis = dim % input.dim()
    positions = torch.arange(input.shape[axis], device=input.device)[start:end:step]
    return input.scatter(axis, _along(positions, axis, input.dim()).expand_as(src), src)


def select_scatter(input: Tensor, src: Tensor, *, dim: int, index: int) -> Tensor:
    """``torch.select_scatter``, as a scatter (exportable to ONNX, see slice_scatter)."""
    axis = dim % input.dim()
    position = torch.arange(input.shape[axis], device=input.device)[index : index + 1 or None]
    src = src.unsqueeze(axis)
    return input.scatter(axis, _along(position, axis, input.dim()).expand_as(src), src)


def _along(positions: Tensor, axis: int, rank: int) -> Tensor:
    """The 1-D ``positions`` as a tensor of ``rank`` dims laid along ``axis``."""
    shape = [1] * rank
    shape[axis] = -1
    return positions.view(shape)


def im2col(
    input: Tensor,
    *,
    kernel_size: Sequence[int],
    dilation: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    stride: Sequence[int] = (1, 1),
) -> Tensor:
    """``F.unfold`` (torch's ONNX exporter lowers it to gathers)."""
    return F.unfold(input, tuple(kernel_size), tuple(dilation), tuple(padding), tuple(stride))


def col2im(
    input: Tensor,
    size_input: Sequence[int] | None = None,
    *,
    output_size: Sequence[int] | None = None,
    kernel_size: Sequence[int],
    dilation: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    stride: Sequence[int] = (1, 1),
) -> Tensor:
    """``F.fold``, written as a transposed convolution with one-hot kernels.

    ONNX has ``Col2Im`` only from opset 18; a grouped ``ConvTranspose`` whose kernel
    ``t`` of each channel is 1 at block offset ``t`` adds every column entry to its pixel
    the same way (each output is a sum of inputs times 1).
    """
    size = size_input if size_input is not None else output_size
    assert size is not None, "col2im needs an output size"
    batched = input.dim() == 3
    columns = input if batched else input.unsqueeze(0)
    kh, kw = kernel_size
    # Channels and image size are plain ints even while an exporter traces sizes: the
    # convolution's kernel and output padding must be constants in ONNX.
    channels = int(columns.shape[1]) // (kh * kw)
    size = [int(n) for n in size]
    settings = list(zip(size, kernel_size, dilation, padding, stride, strict=True))
    blocks = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, d, p, s in settings]
    # The transposed convolution's natural size falls short of output_size by the rows
    # and columns no block reaches (fewer than one stride): output_padding adds them.
    extra = [
        n - ((b - 1) * s - 2 * p + d * (k - 1) + 1)
        for b, (n, k, d, p, s) in zip(blocks, settings, strict=True)
    ]
    grid = columns.unflatten(-1, (blocks[0], blocks[1]))
    eye = torch.eye(kh * kw, dtype=columns.dtype, device=columns.device)
    weight = eye.reshape(kh * kw, 1, kh, kw).repeat(channels, 1, 1, 1)
    image = F.conv_transpose2d(
        grid,
        weight,
        stride=tuple(stride),
        padding=tuple(padding),
        output_padding=tuple(extra),
        groups=channels,
        dilation=tuple(dilation),
    )
    return image if batched else image.squeeze(0)


def full(
    size_input: Any = None,
    like: Tensor | None = None,
    *,
    size: Any = None,
    fill_value: float,
    dtype: str | None = None,
) -> Tensor:
    """``torch.full``, on the device of ``like`` (and in its dtype when ``dtype`` is unset)."""
    shape = size_input if size_input is not None else size
    if dtype is not None:
        target = dtype_from_name(dtype)
    elif like is not None:
        target = like.dtype
    else:
        target = None
    device = like.device if like is not None else None
    return torch.full(tuple(shape), fill_value, dtype=target, device=device)


def full_like(input: Tensor, *, fill_value: float, dtype: str | None = None) -> Tensor:
    """``torch.full_like``."""
    return torch.full_like(
        input, fill_value, dtype=None if dtype is None else dtype_from_name(dtype)
    )


DEFINITIONS = [
    OpDef(
        unary("flatten", start_dim=INT, end_dim=INT),
        kernel=flatten,
        functions=(torch.flatten,),
        methods=("flatten",),
        aten=("flatten",),
        onnx_types=("Flatten", "Reshape"),
    ),
    OpDef(
        unary("unflatten", dim=INT, sizes=INTS),
        kernel=unflatten,
        functions=(torch.unflatten,),
        methods=("unflatten",),
        aten=("unflatten",),
        onnx_types=("Reshape",),
    ),
    OpDef(
        sized("reshape", "shape"),
        kernel=reshape,
        onnx_types=("Reshape",),
    ),
    OpDef(
        sized("expand", "size"),
        kernel=expand,
        methods=("expand",),
    ),
    OpDef(
        sized("repeat", "repeats"),
        kernel=repeat,
        methods=("repeat",),
        aten=("repeat",),
    ),
    OpDef(
        unary("permute", dims=INTS),
        kernel=permute,
        onnx_types=("Transpose",),
    ),
    OpDef(
        unary("transpose", dim0=INT, dim1=INT),
        kernel=transpose,
        functions=(
            torch.transpose,
            torch.swapaxes,
            torch.swapdims,
        ),
        methods=(
            "transpose",
            "swapaxes",
            "swapdims",
        ),
        aten=("transpose",),
        onnx_types=("Transpose",),
    ),
    OpDef(
        unary("contiguous"),
        kernel=contiguous,
        methods=("contiguous",),
        onnx_types=("Identity",),
    ),
    OpDef(
        unary("unsqueeze", dim=INT),
        kernel=unsqueeze,
        functions=(torch.unsqueeze,),
        methods=("unsqueeze",),
        aten=("unsqueeze",),
        onnx_types=("Unsqueeze",),
    ),
    OpDef(
        unary("squeeze", dim=ANY),
        kernel=squeeze,
        functions=(torch.squeeze,),
        methods=("squeeze",),
        aten=("squeeze",),
        onnx_types=("Squeeze",),
    ),
    OpDef(
        unary("flip", dims=INTS),
        kernel=flip,
        functions=(torch.flip,),
        methods=("flip",),
    ),
    OpDef(
        unary("roll", shifts=INTS, dims=INTS),
        kernel=roll,
        functions=(torch.roll,),
        methods=("roll",),
        aten=("roll",),
    ),
    OpDef(
        OpSchema(
            "pad",
            ("input", "pad"),
            {"pad": INTS, "mode": STR, "value": FLOAT},
            optional_inputs=1,
            doc="F.pad; pad is an attribute, or a pack input when the graph computes it.",
        ),
        kernel=pad,
        functions=(
            F.pad,
            torch.constant_pad_nd,
        ),
        aten=(
            "pad",
            "constant_pad_nd",
        ),
    ),
    OpDef(
        unary(
            "unfold",
            dimension=AttrSpec("int", required=True),
            size=AttrSpec("int", required=True),
            step=AttrSpec("int", required=True),
            doc="Tensor.unfold: sliding windows of size along dimension, step apart, in a new "
            "last dim.",
        ),
        kernel=unfold,
        methods=("unfold",),
        aten=("unfold",),
    ),
    OpDef(
        unary(
            "im2col",
            kernel_size=AttrSpec("ints", required=True),
            dilation=INTS,
            padding=INTS,
            stride=INTS,
            doc="F.unfold / nn.Unfold: the sliding 2-D blocks of an (N, C, H, W) input as "
            "columns, (N, C * kh * kw, blocks).",
        ),
        kernel=im2col,
        functions=(F.unfold,),
        aten=("im2col",),
    ),
    OpDef(
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
        kernel=col2im,
        functions=(F.fold,),
        aten=("col2im",),
    ),
    OpDef(
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
        kernel=arange,
        functions=(torch.arange,),
        aten=("arange",),
    ),
    OpDef(
        OpSchema(
            "chunk",
            ("input",),
            {"chunks": AttrSpec("int", required=True), "dim": INT},
            outputs=None,
            doc="Splits into chunks pieces along dim; one output per piece.",
        ),
        kernel=chunk,
        functions=(torch.chunk,),
        methods=("chunk",),
        aten=("chunk",),
    ),
    OpDef(
        OpSchema(
            "split",
            ("input",),
            {"split_size": AttrSpec("any", required=True), "dim": INT},
            outputs=None,
            doc="torch.split: split_size is an int (piece size) or a tuple of sizes.",
        ),
        kernel=split,
        functions=(torch.split,),
        methods=("split",),
        aten=(
            "split",
            "split_with_sizes",
        ),
    ),
    OpDef(
        OpSchema("unbind", ("input",), {"dim": INT}, outputs=None),
        kernel=unbind,
        functions=(torch.unbind,),
        methods=("unbind",),
        aten=("unbind",),
    ),
    OpDef(
        OpSchema("cat", (), {"dim": INT}, variadic=True, min_inputs=1),
        kernel=cat,
        functions=(
            torch.cat,
            torch.concat,
            torch.concatenate,
        ),
        aten=(
            "cat",
            "concat",
        ),
    ),
    OpDef(
        OpSchema("stack", (), {"dim": INT}, variadic=True, min_inputs=1),
        kernel=stack,
        functions=(torch.stack,),
        aten=("stack",),
    ),
    OpDef(
        OpSchema(
            "select",
            ("input", "index"),
            {"dim": AttrSpec("int", required=True), "index": INT},
            optional_inputs=1,
            doc="input.select(dim, index): the index is an attribute, or an int input.",
        ),
        kernel=select,
        aten=("select",),
    ),
    OpDef(
        OpSchema(
            "slice",
            ("input", "start", "end"),
            {"dim": INT, "start": INT, "end": INT, "step": INT},
            optional_inputs=2,
            doc="input[start:end:step] along dim; start/end may instead be int inputs "
            "(an end input comes with a start input).",
        ),
        kernel=slice_,
        aten=("slice",),
    ),
    OpDef(
        OpSchema(
            "index",
            (),
            {"positions": AttrSpec("ints", required=True)},
            variadic=True,
            min_inputs=2,
            doc="Advanced indexing: inputs are (input, *index_tensors); index tensor k "
            "indexes dimension positions[k] (aten.index.Tensor).",
        ),
        kernel=index,
        aten=("index",),
    ),
    OpDef(
        OpSchema("index_select", ("input", "index"), {"dim": AttrSpec("int", required=True)}),
        kernel=index_select,
        functions=(torch.index_select,),
        methods=("index_select",),
        aten=("index_select",),
    ),
    OpDef(
        OpSchema(
            "gather_elements",
            ("input", "index"),
            {"dim": AttrSpec("int", required=True)},
            doc="torch.gather (ONNX GatherElements).",
        ),
        kernel=gather_elements,
        functions=(torch.gather,),
        methods=("gather",),
        aten=("gather",),
    ),
    OpDef(
        OpSchema(
            "index_put",
            (),
            {"positions": AttrSpec("ints", required=True), "accumulate": BOOL},
            variadic=True,
            min_inputs=3,
            doc="A copy of input with input[indices] = values (accumulate: +=): inputs are "
            "(input, values, *index_tensors); index tensor k indexes dimension "
            "positions[k] (aten.index_put).",
        ),
        kernel=index_put,
        functions=(torch.index_put,),
        methods=("index_put",),
        aten=("index_put",),
    ),
    OpDef(
        OpSchema(
            "scatter_elements",
            ("input", "index", "src"),
            {"dim": AttrSpec("int", required=True), "reduce": STR},
            doc="torch.scatter / scatter_add (ONNX ScatterElements): input with src written "
            "at index along dim (reduce='add': added); src may be a python-scalar constant.",
        ),
        kernel=scatter_elements,
        functions=(torch.scatter, torch.scatter_add),
        methods=("scatter", "scatter_add"),
        aten=("scatter", "scatter_add"),
    ),
    OpDef(
        OpSchema(
            "slice_scatter",
            ("input", "src"),
            {"dim": INT, "start": INT, "end": INT, "step": INT},
            doc="A copy of input with input[start:end:step] along dim replaced by src.",
        ),
        kernel=slice_scatter,
        aten=("slice_scatter",),
    ),
    OpDef(
        OpSchema(
            "select_scatter",
            ("input", "src"),
            {"dim": AttrSpec("int", required=True), "index": AttrSpec("int", required=True)},
            doc="A copy of input with input.select(dim, index) replaced by src.",
        ),
        kernel=select_scatter,
        functions=(torch.select_scatter,),
        methods=("select_scatter",),
        aten=("select_scatter",),
    ),
    OpDef(
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
        kernel=full,
    ),
    OpDef(
        unary(
            "full_like",
            fill_value=AttrSpec("float", required=True),
            dtype=DTYPE,
            doc="A tensor shaped like input filled with fill_value (zeros_like, ones_like).",
        ),
        kernel=full_like,
    ),
]
