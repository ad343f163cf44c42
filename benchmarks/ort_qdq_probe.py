"""Probe which QDQ ONNX patterns ONNX Runtime's CPU provider fuses into integer kernels.

Every case is a tiny hand-built ONNX graph in two flavours: the QDQ graph under test and the
float graph it stands for (same dequantized weights, Q/DQ removed). Both run through ONNX Runtime
with the benchmark protocol's settings (CPU provider, ``ORT_ENABLE_ALL``, 2 intra-op threads,
1 inter-op thread, sequential execution). The QDQ session saves its optimised graph
(``SessionOptions.optimized_model_filepath``); the probe counts its op types, so one sees whether
ORT turned ``DQ -> Conv -> Q`` into ``QLinearConv``, left a float ``Conv`` with runtime
``DequantizeLinear`` nodes, and so on. Each question's sessions are then timed interleaved
(A B C A B C ...) and the speed ratio is median(float) / median(QDQ): above 1 means the QDQ graph is
faster. ``err`` is ||qdq - float|| / ||float|| over the outputs, a sanity check that the QDQ graph
computes what it should.

Run ``.venv/bin/python -m benchmarks.ort_qdq_probe`` (all questions) or
``... --only 1,5 --runs 40``. The results, and the rules drawn from them, are in
docs/onnxruntime-qdq.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

F32, U8, S8, I32 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32
I4, U4 = TensorProto.INT4, TensorProto.UINT4
NP_DTYPE = {U8: np.uint8, S8: np.int8, I32: np.int32}
# Left out of the op summary (the probe uses Identity only to name outputs).
BORING = {"Identity"}


class Builder:
    """Builds one case's graph; with ``quant=False`` every Q/DQ helper is the identity.

    The QDQ and the float graph of a case come from the same build function, so they compute the
    same thing: weights are quantized once (seeded) and the float graph holds their dequantized
    values.
    """

    def __init__(self, quant: bool, opset: int) -> None:
        self.quant = quant
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(0)
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    # -- graph pieces -----------------------------------------------------------------------------

    def input(self, shape: list[int], low: float = -1.0, high: float = 1.0) -> str:
        """A float graph input fed with uniform random values."""
        name = self.fresh("in")
        self.inputs.append(helper.make_tensor_value_info(name, F32, shape))
        self.feeds[name] = self.rng.uniform(low, high, shape).astype(np.float32)
        return name

    def const(self, value: np.ndarray, as_node: bool = False) -> str:
        """An initializer, or (``as_node``) the output of a ``Constant`` node."""
        name = self.fresh("c")
        tensor = numpy_helper.from_array(np.asarray(value), name)
        if as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        else:
            self.inits.append(tensor)
        return name

    def raw_const(self, name_prefix: str, dtype: int, dims: list[int], values: list[int]) -> str:
        """An initializer of a type numpy cannot hold (int4)."""
        name = self.fresh(name_prefix)
        self.inits.append(helper.make_tensor(name, dtype, dims, values))
        return name

    def op(self, op_type: str, *inputs: str, n_out: int = 1, **attrs: object) -> str:
        """Append a node; returns its (first) output."""
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        domain = attrs.pop("domain", "")
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, domain=domain, **attrs))
        return outs[0]

    def scale(self, s: float, shape1: bool = False) -> str:
        return self.const(np.array([s] if shape1 else s, np.float32))

    def zp(self, value: int, dtype: int) -> str:
        return self.const(np.array(value, NP_DTYPE[dtype]))

    def q(self, x: str, s: float, zp: int, dtype: int = U8, scale_shape1: bool = False) -> str:
        if not self.quant:
            return x
        return self.op("QuantizeLinear", x, self.scale(s, scale_shape1), self.zp(zp, dtype))

    def dq(self, x: str, s: float, zp: int, dtype: int = U8, scale_shape1: bool = False) -> str:
        if not self.quant:
            return x
        return self.op("DequantizeLinear", x, self.scale(s, scale_shape1), self.zp(zp, dtype))

    def qdq(
        self,
        x: str,
        s: float = 0.02,
        zp: int = 128,
        dtype: int = U8,
        scale_shape1: bool = False,
    ) -> str:
        """Fake-quantize an activation: Q -> DQ (per tensor)."""
        if dtype == S8 and zp == 128:
            zp = 0
        return self.dq(self.q(x, s, zp, dtype, scale_shape1), s, zp, dtype, scale_shape1)

    def weight(
        self,
        shape: list[int],
        axis: int | None = 0,
        dtype: int = S8,
        as_node: bool = False,
        bits: int = 8,
        block: int | None = None,
    ) -> tuple[str, np.ndarray]:
        """A weight, symmetric-quantized per channel along ``axis`` (per tensor when None).

        ``bits=4`` with ``dtype`` INT8 keeps 4-bit values in an int8 container; with ``dtype``
        INT4/UINT4 the initializer is a real 4-bit tensor. ``block`` quantizes block-wise along
        ``axis`` (opset 21). Returns the tensor to feed the op and the weight scales.
        """
        fan_in = int(np.prod(shape)) // shape[0 if axis is None else axis]
        w = self.rng.normal(0, 1 / np.sqrt(fan_in), shape).astype(np.float32)
        qmax = 2 ** (bits - 1) - 1
        if block is not None:
            assert axis is not None
            moved = np.moveaxis(w, axis, 0)
            blocks = moved.reshape(moved.shape[0] // block, block, *moved.shape[1:])
            s = np.abs(blocks).max(axis=1) / qmax
            s_full = np.moveaxis(np.repeat(s, block, axis=0), 0, axis)
        elif axis is None:
            s = np.array(np.abs(w).max() / qmax, np.float32)
            s_full = s
        else:
            reduce = tuple(i for i in range(w.ndim) if i != axis)
            s = np.abs(w).max(axis=reduce) / qmax
            s_full = np.expand_dims(s, reduce)
        s = s.astype(np.float32)
        wq = np.clip(np.round(w / s_full), -qmax - 1, qmax).astype(np.int32)
        if not self.quant:
            return self.const((wq * s_full).astype(np.float32), as_node), s
        zp_val = 0
        if dtype in (I4, U4):
            if dtype == U4:
                zp_val, wq = 8, wq + 8
            wname = self.raw_const("w", dtype, list(shape), wq.flatten().tolist())
            zp_shape = list(s.shape)
            zname = self.raw_const("wzp", dtype, zp_shape, [zp_val] * int(np.prod(zp_shape)))
        else:
            if dtype == U8:
                zp_val, wq = 128, wq + 128
            np_t = NP_DTYPE[dtype]
            wname = self.const(wq.astype(np_t), as_node)
            zname = self.const(np.full(s.shape, zp_val, np_t))
        attrs: dict[str, object] = {}
        if axis is not None and (s.ndim > 0):
            attrs["axis"] = axis
        if block is not None:
            attrs["block_size"] = block
        out = self.op("DequantizeLinear", wname, self.const(s), zname, **attrs)
        return out, s

    def bias(self, n: int, mode: str, s_x: float, s_w: np.ndarray) -> str | None:
        """Conv/Gemm bias: 'float' initializer, 'int32' through DQ (scale s_x*s_w), or None."""
        if mode == "none":
            return None
        b = self.rng.normal(0, 0.1, n).astype(np.float32)
        s_b = (s_x * s_w).astype(np.float32)
        bq = np.round(b / s_b).astype(np.int32)
        if mode == "float" or not self.quant:
            return self.const((bq * s_b).astype(np.float32))
        axis = {"axis": 0} if s_b.ndim else {}
        zero = self.const(np.zeros(s_b.shape, np.int32))
        return self.op("DequantizeLinear", self.const(bq), self.const(s_b), zero, **axis)

    def model(self, outputs: list[str]) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, F32, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "probe", self.inputs, outs, self.inits)
        opsets = [helper.make_opsetid("", self.opset), helper.make_opsetid("com.microsoft", 1)]
        m = helper.make_model(graph, opset_imports=opsets)
        m.ir_version = 10
        return m


BuildFn = Callable[[Builder], list[str]]


@dataclass
class Case:
    """One probe: a build function run once as QDQ and once as float."""

    question: str
    key: str
    title: str
    build: BuildFn
    opset: int = 17
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    case: Case
    ops: str = ""
    error: str = ""
    rel_err: float = float("nan")
    ratio: float = float("nan")
    q_ms: float = float("nan")
    f_ms: float = float("nan")


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

S_X = 0.02  # activation scale used throughout (u8 zp 128 covers about [-2.6, 2.5])


def conv(
    g: Builder,
    x: str,
    cin: int,
    cout: int,
    k: int = 3,
    bias: str = "int32",
    s_x: float = S_X,
    group: int = 1,
    wdtype: int = S8,
    waxis: int | None = 0,
    w_as_node: bool = False,
    bits: int = 8,
) -> str:
    w, s_w = g.weight([cout, cin // group, k, k], waxis, wdtype, w_as_node, bits)
    b = g.bias(cout, bias, s_x, s_w)
    ins = [x, w] + ([b] if b else [])
    return g.op("Conv", *ins, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)


def case_conv(
    bias: str = "int32",
    out_q: bool = True,
    act: str = "none",
    out_zp: int | None = None,
    adtype: int = U8,
    **conv_kw: object,
) -> BuildFn:
    """x -> Q -> DQ -> Conv(DQ(w), bias) [-> Relu|Clip] [-> Q -> DQ]."""

    def build(g: Builder) -> list[str]:
        cin = 64
        x = g.qdq(g.input([1, cin, 56, 56]), S_X, 128, adtype)
        y = conv(g, x, cin, 64, bias=bias, **conv_kw)  # type: ignore[arg-type]
        zp = 0 if adtype == S8 else 128
        s_y = 0.05
        if act == "relu":
            y = g.op("Relu", y)
            zp = 0 if out_zp is None else out_zp
            s_y = 0.025 if zp == 0 else 0.05
        elif act == "clip":
            y = g.op("Clip", y, g.const(np.float32(0)), g.const(np.float32(6)))
            zp = 0 if out_zp is None else out_zp
            s_y = 6 / 255
        if adtype == S8 and act != "none":
            zp = -128
        if out_q:
            y = g.qdq(y, s_y, zp, adtype)
        return [y]

    return build


def case_conv_s8_two_consumers(g: Builder) -> list[str]:
    """s8 activation read by a Conv and by an Add (a residual): can ORT still rewrite s8 to u8?"""
    x = g.qdq(g.input([1, 64, 56, 56]), S_X, 0, S8)
    y = g.qdq(conv(g, x, 64, 64), 0.05, 0, S8)
    return [g.op("Add", y, x)]


def case_gemm(bias: str, out_q: bool, trans_b: int = 1, m: int = 197) -> BuildFn:
    """Gemm on a 2-D input [m, 768] x [768, 3072]; weight per output channel."""

    def build(g: Builder) -> list[str]:
        k, n = 768, 3072
        x = g.qdq(g.input([m, k]))
        shape, axis = ([n, k], 0) if trans_b else ([k, n], 1)
        w, s_w = g.weight(shape, axis)
        b = g.bias(n, bias, S_X, s_w)
        y = g.op("Gemm", x, w, *([b] if b else []), transB=trans_b)
        return [g.qdq(y, 0.05) if out_q else y]

    return build


def case_matmul(
    out_q: bool,
    waxis: int | None = 1,
    add_bias: str = "float",
    m: int = 197,
    wdtype: int = S8,
    bits: int = 8,
    block: int | None = None,
    act_q: bool = True,
) -> BuildFn:
    """MatMul on a 3-D input [1, m, 768] x [768, 3072] (+ Add(bias)) [-> Q -> DQ]."""

    def build(g: Builder) -> list[str]:
        k, n = 768, 3072
        x = g.input([1, m, k])
        x = g.qdq(x) if act_q else x
        w, s_w = g.weight([k, n], waxis, wdtype, bits=bits, block=block)
        y = g.op("MatMul", x, w)
        if add_bias == "float":
            y = g.op("Add", y, g.const(g.rng.normal(0, 0.1, n).astype(np.float32)))
        elif add_bias == "int32":
            b = g.bias(n, "int32", S_X, s_w)
            assert b is not None
            y = g.op("Add", y, b)
        return [g.qdq(y, 0.05) if out_q else y]

    return build


def case_mlp(bias: str) -> BuildFn:
    """ViT MLP: x -> Q/DQ -> MatMul -> Add(b1) -> erf-Gelu -> Q/DQ -> MatMul -> Add(b2).

    The first linear's output has no Q (Gelu runs in float); ``bias`` is 'float' (plain float
    Add) or 'int32' (Add of DQ(int32, scale s_x*s_w)).
    """

    def build(g: Builder) -> list[str]:
        x = g.qdq(g.input([1, 197, 768]))
        for i, (k, n) in enumerate(((768, 3072), (3072, 768))):
            w, s_w = g.weight([k, n], 1)
            s_in = S_X if i == 0 else 0.02
            if bias == "int32":
                b = g.bias(n, "int32", s_in, s_w)
            else:
                b = g.const(g.rng.normal(0, 0.1, n).astype(np.float32))
            assert b is not None
            x = g.op("Add", g.op("MatMul", x, w), b)
            if i == 0:
                e = g.op("Erf", g.op("Div", x, g.const(np.float32(np.sqrt(2)))))
                x = g.op("Mul", x, g.op("Add", e, g.const(np.float32(1))))
                x = g.qdq(g.op("Mul", x, g.const(np.float32(0.5))), 0.02, 10)
        return [x]

    return build


def case_dynamic_matmul(g: Builder) -> list[str]:
    """quantize_dynamic's pattern: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul -> Add."""
    k, n = 768, 3072
    x = g.input([1, 197, k])
    bias = g.const(g.rng.normal(0, 0.1, n).astype(np.float32))
    if not g.quant:
        w, _ = g.weight([k, n], 1)
        return [g.op("Add", g.op("MatMul", x, w), bias)]
    w = g.rng.normal(0, 1 / np.sqrt(k), [k, n]).astype(np.float32)
    s_w = np.abs(w).max(axis=0) / 127
    wq = g.const(np.round(w / s_w).astype(np.int8))
    xq = g.fresh("xq")
    xs, xzp = g.fresh("xs"), g.fresh("xzp")
    g.nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xzp]))
    acc = g.op("MatMulInteger", xq, wq, xzp, g.const(np.zeros(n, np.int8)))
    scale = g.op("Mul", xs, g.const(s_w.astype(np.float32)))
    y = g.op("Mul", g.op("Cast", acc, to=F32), scale)
    return [g.op("Add", y, bias)]


def case_attention(which: str, da: int, db: int, out_q: bool) -> BuildFn:
    """Activation x activation MatMul: 'qk' = [1,12,197,64]@[1,12,64,197], 'pv' = probs@V.

    'qkT': as 'qk', but K arrives as [1,12,197,64] and is transposed after its Q/DQ.
    'qkT2': K arrives as [1,12,197,64], is transposed in float, then Q/DQ.
    """

    def build(g: Builder) -> list[str]:
        if which == "qkT2":
            a = g.qdq(g.input([1, 12, 197, 64]), 0.02, 128, da)
            b = g.op("Transpose", g.input([1, 12, 197, 64]), perm=[0, 1, 3, 2])
            b = g.qdq(b, 0.02, 128, db)
            s_y, zp_y = 0.05, 128
        elif which == "qkT":
            a = g.qdq(g.input([1, 12, 197, 64]), 0.02, 128, da)
            b = g.qdq(g.input([1, 12, 197, 64]), 0.02, 128, db)
            b = g.op("Transpose", b, perm=[0, 1, 3, 2])
            s_y, zp_y = 0.05, 128
        elif which == "qk":
            a = g.qdq(g.input([1, 12, 197, 64]), 0.02, 128, da)
            b = g.qdq(g.input([1, 12, 64, 197]), 0.02, 128, db)
            s_y, zp_y = 0.05, 128
        else:
            a = g.qdq(g.input([1, 12, 197, 197], 0, 2 / 197), 1 / 255, 0, da)
            b = g.qdq(g.input([1, 12, 197, 64]), 0.02, 128, db)
            s_y, zp_y = 0.01, 128
        y = g.op("MatMul", a, b)
        if out_q:
            y = g.qdq(y, s_y, zp_y, U8 if da == U8 else S8)
        return [y]

    return build


def case_unary(
    op_type: str, shape: list[int], s_out: float = S_X, zp_out: int = 128, **attrs: object
) -> BuildFn:
    """x -> Q -> DQ -> op -> Q -> DQ ('Identity': x -> Q -> DQ, the cost of the Q/DQ boundary)."""

    def build(g: Builder) -> list[str]:
        x = g.qdq(g.input(shape))
        if op_type == "Identity":
            return [g.op("Identity", x)]
        extra: list[str] = []
        if op_type == "Reshape":
            extra = [g.const(np.array([shape[0], shape[1], -1], np.int64))]
        elif op_type == "LayerNormalization":
            n = shape[-1]
            extra = [g.const(np.ones(n, np.float32)), g.const(np.zeros(n, np.float32))]
        elif op_type == "Clip":
            extra = [g.const(np.float32(0)), g.const(np.float32(6))]
        y = g.op(op_type, x, *extra, **attrs)
        return [g.qdq(y, s_out, zp_out)]

    return build


def case_binary(
    op_type: str, shape: list[int], same_scale: bool = False, **attrs: object
) -> BuildFn:
    """(x1, x2) -> Q -> DQ -> op -> Q -> DQ."""

    def build(g: Builder) -> list[str]:
        a = g.qdq(g.input(shape))
        b = g.qdq(g.input(shape), S_X if same_scale else 0.03)
        y = g.op(op_type, a, b, **attrs)
        return [g.qdq(y, S_X if same_scale else 0.04)]

    return build


def case_gelu_pieces(g: Builder) -> list[str]:
    """The exported erf-Gelu: x*0.5*(1+erf(x/sqrt 2)), between Q/DQ."""
    x = g.qdq(g.input([1, 197, 3072]))
    e = g.op("Erf", g.op("Div", x, g.const(np.float32(np.sqrt(2)))))
    y = g.op("Mul", x, g.op("Add", e, g.const(np.float32(1))))
    y = g.op("Mul", y, g.const(np.float32(0.5)))
    return [g.qdq(y, 0.02, 10)]


def case_conv_between(mid: str, layout: str) -> BuildFn:
    """conv1 -> <mid> -> conv2 (or Gemm after Flatten), Q/DQ placed per ``layout``.

    'conv2-input-only': conv1 (float out) -> mid -> Q -> DQ -> conv2.
    'around-mid':       conv1 -> Q -> DQ -> mid -> Q -> DQ -> conv2 (same scale).
    'conv1-output-only': conv1 -> Q -> DQ -> mid -> conv2 (conv2's input is float).
    """

    def build(g: Builder) -> list[str]:
        hw = 56 if mid == "MaxPool" else 7
        x = g.qdq(g.input([1, 64, hw, hw]))
        y = conv(g, x, 64, 64)
        if layout in ("around-mid", "conv1-output-only"):
            y = g.qdq(y, 0.05)
        if mid == "MaxPool":
            y = g.op("MaxPool", y, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        elif mid == "Flatten":
            y = g.op("Flatten", y, axis=1)
        else:
            y = g.op("Reshape", y, g.const(np.array([1, -1], np.int64)))
        if layout in ("around-mid", "conv2-input-only"):
            y = g.qdq(y, 0.05)
        if mid == "MaxPool":
            out = conv(g, y, 64, 64, s_x=0.05)
        else:
            w, s_w = g.weight([1000, 64 * hw * hw], 0)
            b = g.bias(1000, "int32", 0.05, s_w)
            assert b is not None
            out = g.op("Gemm", y, w, b, transB=1)
        return [g.qdq(out, 0.05)]

    return build


def case_resnet_block(pattern: str) -> BuildFn:
    """A ResNet stem tail and two basic blocks: 4 3x3 convs, 64 channels at 56x56, 2 residuals.

    x [1,64,112,112] -> conv 1x1 -> relu -> MaxPool(3, s2) -> 2 x [c -> relu -> c -> Add -> relu].
    'A':  Q/DQ only on the inputs of the convs and on their outputs, the output Q after the ReLU
          that follows a conv (a conv followed by the residual Add gets its Q right after it);
          MaxPool, Add and the ReLU after it stay float.
    'A0': as A, but every conv's Q directly after the conv, then DQ -> Relu -> Q -> DQ.
    'B':  as A, plus Q/DQ on the output of the Add and of the ReLU after it.
    """

    def build(g: Builder) -> list[str]:
        def conv_relu(x: str, s_in: float, k: int = 3) -> str:
            y = conv(g, x, 64, 64, k=k, s_x=s_in)
            if pattern == "A0":
                return g.qdq(g.op("Relu", g.qdq(y, 0.05)), 0.025, 0)
            return g.qdq(g.op("Relu", y), 0.025, 0)

        x = g.qdq(g.input([1, 64, 112, 112]), S_X)
        y = conv_relu(x, S_X, k=1)
        y = g.op("MaxPool", y, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        y = g.qdq(y, 0.025, 0)  # conv input (and residual); the same scale as the MaxPool input
        for _ in range(2):
            h = conv_relu(y, 0.025)
            h = g.qdq(conv(g, h, 64, 64, s_x=0.025), 0.05)
            y = g.op("Add", h, y)
            if pattern == "B":
                y = g.qdq(y, 0.05)
            y = g.op("Relu", y)
            y = g.qdq(y, 0.025, 0)  # the next conv's input (and the next residual)
        return [y]

    return build


def case_int4_conv(g: Builder) -> list[str]:
    """Conv with an INT4 per-channel weight through DequantizeLinear (opset 21)."""
    x = g.qdq(g.input([1, 64, 56, 56]))
    return [g.qdq(conv(g, x, 64, 64, wdtype=I4, bits=4), 0.05)]


def case_conv_scale_shape1(g: Builder) -> list[str]:
    """Activation scale/zero point given as shape-[1] tensors instead of scalars."""
    x = g.qdq(g.input([1, 64, 56, 56]), scale_shape1=True)
    return [g.qdq(conv(g, x, 64, 64), 0.05, scale_shape1=True)]


def case_conv_no_zp(g: Builder) -> list[str]:
    """Activation Q/DQ without the zero-point input (defaults to uint8 zero)."""
    x = g.input([1, 64, 56, 56], 0, 1)
    if g.quant:
        s = g.scale(1 / 255)
        x = g.op("DequantizeLinear", g.op("QuantizeLinear", x, s), s)
    y = conv(g, x, 64, 64, s_x=1 / 255)
    if g.quant:
        s = g.scale(0.05)
        y = g.op("DequantizeLinear", g.op("QuantizeLinear", y, s), s)
    return [y]


def case_conv_zp_mismatch(g: Builder) -> list[str]:
    """Q writes uint8 (zp u8) but the DQ after it declares an int8 zero point."""
    x = g.input([1, 64, 56, 56])
    if g.quant:
        s = g.scale(S_X)
        x = g.op("DequantizeLinear", g.op("QuantizeLinear", x, s, g.zp(128, U8)), s, g.zp(0, S8))
    return [g.qdq(conv(g, x, 64, 64), 0.05)]


def case_conv_weight_zp(g: Builder) -> list[str]:
    """int8 per-channel weight with a non-zero zero point (asymmetric weights)."""
    x = g.qdq(g.input([1, 64, 56, 56]))
    w = g.rng.normal(0, 1 / 24, [64, 64, 3, 3]).astype(np.float32)
    lo, hi = w.min(axis=(1, 2, 3)), w.max(axis=(1, 2, 3))
    s_w = ((hi - lo) / 255).astype(np.float32)
    zp = np.clip(np.round(-128 - lo / s_w), -128, 127).astype(np.int8)
    shape = (-1, 1, 1, 1)
    wq = np.clip(np.round(w / s_w.reshape(shape)) + zp.reshape(shape), -128, 127)
    if g.quant:
        wn = g.op(
            "DequantizeLinear", g.const(wq.astype(np.int8)), g.const(s_w), g.const(zp), axis=0
        )
    else:
        wn = g.const(((wq - zp.reshape(shape)) * s_w.reshape(shape)).astype(np.float32))
    y = g.op("Conv", x, wn, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return [g.qdq(y, 0.05)]


# ---------------------------------------------------------------------------------------------
# The cases, grouped by question; each group is timed interleaved.
# ---------------------------------------------------------------------------------------------

INT8_OK = {"session.qdqisint8allowed": "1"}
ATT = [("qk", "QK^T [1,12,197,64]x[1,12,64,197]"), ("pv", "P@V [1,12,197,197]x[1,12,197,64]")]
DT = {U8: "u8", S8: "s8"}


def cases() -> list[Case]:
    c: list[Case] = []
    q1 = "1 Conv 64->64 3x3 on 56x56"
    for bias in ("float", "int32", "none"):
        for out_q in (True, False):
            key = f"bias={bias}, {'out Q' if out_q else 'no out Q'}"
            c.append(Case(q1, f"1-{bias}-{int(out_q)}", key, case_conv(bias, out_q)))
    c += [
        Case(q1, "1-relu", "Conv -> Relu -> Q(zp 0)", case_conv(act="relu")),
        Case(q1, "1-relu-zp128", "Conv -> Relu -> Q(zp 128)", case_conv(act="relu", out_zp=128)),
        Case(q1, "1-clip", "Conv -> Clip(0,6) -> Q(zp 0, s 6/255)", case_conv(act="clip")),
        Case(q1, "1-const", "weight int8 from a Constant node", case_conv(w_as_node=True)),
        Case(q1, "1-wpt", "weight per-tensor", case_conv(waxis=None)),
        Case(q1, "1-wu8", "weight u8 (zp 128) per-channel", case_conv(wdtype=U8)),
        Case(q1, "1-op13", "opset 13", case_conv(), opset=13),
        Case(q1, "1-op21", "opset 21", case_conv(), opset=21),
        Case(q1, "1-dw", "depthwise 3x3 (group 64)", case_conv(group=64)),
        Case(q1, "1-pw", "pointwise 1x1", case_conv(k=1)),
        Case(q1, "1-s8", "s8 activations (zp 0)", case_conv(adtype=S8)),
        Case(q1, "1-s8-2c", "s8 act., input also read by Add", case_conv_s8_two_consumers),
        Case(q1, "1-s8-ok", "s8 act. + qdqisint8allowed=1", case_conv(adtype=S8), options=INT8_OK),
        Case(q1, "1-s8-2c-ok", "s8, 2 consumers + int8allowed", case_conv_s8_two_consumers,
             options=INT8_OK),
    ]  # fmt: skip
    q2 = "2 Linear 768->3072, 197 tokens"
    for bias in ("float", "int32", "none"):
        for out_q in (True, False):
            key = f"Gemm transB=1, bias={bias}, {'out Q' if out_q else 'no out Q'}"
            c.append(Case(q2, f"2-gemm-{bias}-{int(out_q)}", key, case_gemm(bias, out_q)))
    c += [
        Case(q2, "2-gemm-tb0", "Gemm transB=0 (W [K,N], axis 1), int32 bias, out Q",
             case_gemm("int32", True, trans_b=0)),
        Case(q2, "2-gemm-m1", "Gemm 1 token, int32 bias, out Q", case_gemm("int32", True, m=1)),
        Case(q2, "2-mm-q", "MatMul 3-D + Add(float b) -> Q, W axis 1", case_matmul(True)),
        Case(q2, "2-mm-noq", "MatMul 3-D + Add(float b), no Q, W axis 1", case_matmul(False)),
        Case(q2, "2-mm-nob-q", "MatMul 3-D, no bias -> Q", case_matmul(True, add_bias="none")),
        Case(q2, "2-mm-nob-noq", "MatMul 3-D, no bias, no Q", case_matmul(False, add_bias="none")),
        Case(q2, "2-mm-dqb-noq", "MatMul 3-D + Add(DQ int32 b), no Q",
             case_matmul(False, add_bias="int32")),
        Case(q2, "2-mm-ax0", "MatMul, W per-channel axis 0 (wrong axis), Q",
             case_matmul(True, waxis=0)),
        Case(q2, "2-mm-ax0-noq", "MatMul, W axis 0, no Q", case_matmul(False, waxis=0)),
        Case(q2, "2-mm-pt", "MatMul, W per-tensor, Q", case_matmul(True, waxis=None)),
        Case(q2, "2-mm-pt-noq", "MatMul, W per-tensor, no Q", case_matmul(False, waxis=None)),
        Case(q2, "2-mlp-float", "MLP 768-3072-768, erf-Gelu float, float bias Add",
             case_mlp("float")),
        Case(q2, "2-mlp-int32", "MLP 768-3072-768, erf-Gelu float, bias Add of DQ(int32)",
             case_mlp("int32")),
        Case(q2, "2-dyn", "quantize_dynamic pattern (DynamicQuantizeLinear+MatMulInteger)",
             case_dynamic_matmul),
    ]  # fmt: skip
    q3 = "3 Attention matmuls (activation x activation)"
    for which, title in ATT:
        combos = [(U8, U8), (U8, S8), (S8, S8)] if which == "qk" else [(U8, U8), (U8, S8)]
        for da, db in combos:
            for out_q in (True, False):
                key = f"3-{which}-{DT[da]}{DT[db]}-{int(out_q)}"
                t = f"{title} {DT[da]}x{DT[db]}, {'out Q' if out_q else 'no out Q'}"
                c.append(Case(q3, key, t, case_attention(which, da, db, out_q)))
    c += [
        Case(q3, "3-qkT-u8u8-1", "QK^T, K transposed after its Q/DQ, u8xu8, out Q",
             case_attention("qkT", U8, U8, True)),
        Case(q3, "3-qkT-u8u8-0", "QK^T, K transposed after its Q/DQ, u8xu8, no out Q",
             case_attention("qkT", U8, U8, False)),
        Case(q3, "3-qkT2-u8u8-1", "QK^T, K transposed before its Q/DQ, u8xu8, out Q",
             case_attention("qkT2", U8, U8, True)),
        Case(q3, "3-qkT2-u8u8-0", "QK^T, K transposed before its Q/DQ, u8xu8, no out Q",
             case_attention("qkT2", U8, U8, False)),
        Case(q3, "3-qk-s8s8-ok", "QK^T s8xs8 out Q + qdqisint8allowed",
             case_attention("qk", S8, S8, True), options=INT8_OK),
    ]  # fmt: skip
    q4 = "4 Elementwise / data movement between Q/DQ"
    cnn, tok = [1, 64, 56, 56], [1, 197, 768]
    pool = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    c += [
        Case(q4, "4-boundary", "x -> Q -> DQ only (what Q + DQ cost)", case_unary("Identity", cnn)),
        Case(q4, "4-add", "Add (2 DQ in, Q out)", case_binary("Add", cnn)),
        Case(q4, "4-mul", "Mul (2 DQ in, Q out)", case_binary("Mul", cnn)),
        Case(q4, "4-concat", "Concat axis 1 (different scales)",
             case_binary("Concat", cnn, axis=1)),
        Case(q4, "4-concat-same", "Concat axis 1 (same scales)",
             case_binary("Concat", cnn, same_scale=True, axis=1)),
        Case(q4, "4-relu", "Relu, Q zp 128", case_unary("Relu", cnn)),
        Case(q4, "4-relu0", "Relu, Q zp 0", case_unary("Relu", cnn, 0.01, 0)),
        Case(q4, "4-clip", "Clip(0,6), Q zp 0", case_unary("Clip", cnn, 6 / 255, 0)),
        Case(q4, "4-clip-wide", "Clip(0,6), Q zp 0 s 0.05 (Q range 0..12.75 > 6)",
             case_unary("Clip", cnn, 0.05, 0)),
        Case(q4, "4-clip-narrow", "Clip(0,6), Q zp 0 s 0.01 (Q range 0..2.55 < 6)",
             case_unary("Clip", cnn, 0.01, 0)),
        Case(q4, "4-sigmoid", "Sigmoid", case_unary("Sigmoid", cnn, 1 / 255, 0)),
        Case(q4, "4-leaky", "LeakyRelu", case_unary("LeakyRelu", cnn, alpha=0.1)),
        Case(q4, "4-maxpool", "MaxPool 3x3 s2 (same scale)", case_unary("MaxPool", cnn, **pool)),
        Case(q4, "4-maxpool-ds", "MaxPool 3x3 s2 (different out scale)",
             case_unary("MaxPool", cnn, 0.03, 128, **pool)),
        Case(q4, "4-avgpool", "AveragePool 3x3 s2", case_unary("AveragePool", cnn, **pool)),
        Case(q4, "4-gap", "GlobalAveragePool", case_unary("GlobalAveragePool", cnn, 0.002)),
        Case(q4, "4-reshape", "Reshape (same scale)", case_unary("Reshape", cnn)),
        Case(q4, "4-transpose", "Transpose (same scale)",
             case_unary("Transpose", cnn, perm=[0, 2, 3, 1])),
        Case(q4, "4-flatten", "Flatten (same scale)", case_unary("Flatten", cnn, axis=1)),
        Case(q4, "4-softmax", "Softmax [1,12,197,197], Q u8 1/255",
             case_unary("Softmax", [1, 12, 197, 197], 1 / 255, 0, axis=-1)),
        Case(q4, "4-softmax13", "Softmax, opset 13",
             case_unary("Softmax", [1, 12, 197, 197], 1 / 255, 0, axis=-1), opset=13),
        Case(q4, "4-gelu-erf", "Gelu as Div/Erf/Add/Mul/Mul [1,197,3072]", case_gelu_pieces),
        Case(q4, "4-gelu20", "Gelu op (opset 21) [1,197,3072]",
             case_unary("Gelu", [1, 197, 3072], 0.02, 10), opset=21),
        Case(q4, "4-layernorm", "LayerNormalization [1,197,768]",
             case_unary("LayerNormalization", tok, 0.05, 128, axis=-1)),
    ]  # fmt: skip
    q4b = "4b Conv -> X -> Conv/Gemm: where must Q/DQ go?"
    for mid in ("MaxPool", "Flatten", "Reshape"):
        for layout in ("conv2-input-only", "around-mid", "conv1-output-only"):
            nxt = "Conv" if mid == "MaxPool" else "Gemm"
            c.append(Case(q4b, f"4b-{mid}-{layout}", f"Conv -> {mid} -> {nxt}: {layout}",
                          case_conv_between(mid, layout)))  # fmt: skip
    q5 = "5 ResNet-like: 1x1 conv, MaxPool, 2 basic blocks (4 convs 3x3 64ch 56x56)"
    for pattern in ("A", "A0", "B"):
        c.append(Case(q5, f"5-{pattern}", f"pattern {pattern}", case_resnet_block(pattern)))
    q6 = "6 INT4 weights (opset 21)"
    acc4 = {"session.qdq_matmulnbits_accuracy_level": "4"}
    c += [
        Case(q6, "6-conv-i4", "Conv, INT4 per-channel weight", case_int4_conv, opset=21),
        Case(q6, "6-conv-i8c", "Conv, 4-bit values in int8 container", case_conv(bits=4)),
        Case(q6, "6-mm-i4-pc", "MatMul, INT4 per-channel (axis 1), out Q",
             case_matmul(True, wdtype=I4, bits=4), opset=21),
        Case(q6, "6-mm-i4-b32", "MatMul, INT4 block 32 (axis 0), no Q",
             case_matmul(False, waxis=0, wdtype=I4, bits=4, block=32), opset=21),
        Case(q6, "6-mm-u4-b32", "MatMul, UINT4 block 32 (axis 0), no Q",
             case_matmul(False, waxis=0, wdtype=U4, bits=4, block=32), opset=21),
        Case(q6, "6-mm-i4-b32-acc4", "MatMul, INT4 block 32, accuracy_level 4",
             case_matmul(False, waxis=0, wdtype=I4, bits=4, block=32), opset=21, options=acc4),
        Case(q6, "6-mm-i4-b32-nob", "MatMul, INT4 block 32 on DQ(u8) input, no bias, no Q",
             case_matmul(False, waxis=0, wdtype=I4, bits=4, block=32, add_bias="none"),
             opset=21),
        Case(q6, "6-mm-i4-b32-f", "MatMul, INT4 block 32, float activation (no Q/DQ)",
             case_matmul(False, waxis=0, wdtype=I4, bits=4, block=32, act_q=False), opset=21),
        Case(q6, "6-mm-i4-b32-f-acc4", "as above, accuracy_level 4",
             case_matmul(False, waxis=0, wdtype=I4, bits=4, block=32, act_q=False), opset=21,
             options=acc4),
        Case(q6, "6-mm-i4-pc-f", "MatMul, INT4 per-channel (axis 1), float activation",
             case_matmul(False, wdtype=I4, bits=4, act_q=False), opset=21),
        Case(q6, "6-mm-i8c", "MatMul, 4-bit values in int8 container, Q",
             case_matmul(True, bits=4)),
    ]  # fmt: skip
    q7 = "7 Gotchas"
    c += [
        Case(q7, "7-scale1", "Conv, activation scale/zp shape [1]", case_conv_scale_shape1),
        Case(q7, "7-nozp", "Conv, activation Q/DQ without zero point", case_conv_no_zp),
        Case(q7, "7-zpmix", "Q zp uint8 -> DQ zp int8", case_conv_zp_mismatch),
        Case(q7, "7-wzp", "Conv, int8 weight with non-zero per-channel zp", case_conv_weight_zp),
        Case(q7, "7-bscale", "Conv, int32 bias scale = 2*s_x*s_w (wrong)", case_conv(s_x=0.04)),
        Case(q7, "7-bscale-noq", "as above, no out Q", case_conv(s_x=0.04, out_q=False)),
        Case(q7, "7-op11", "opset 11 (per-channel weight DQ)", case_conv(), opset=11),
        Case(q7, "7-op11-pt", "opset 11, per-tensor weight", case_conv(waxis=None), opset=11),
    ]
    return c


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def session(
    model: onnx.ModelProto, options: dict[str, str], save_to: Path | None
) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    # With spinning on, a session's idle workers keep spinning after its run and starve the next
    # session on a 2-vCPU machine: interleaved timings of many sessions come out 2-15x off.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for k, v in options.items():
        so.add_session_config_entry(k, v)
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def op_summary(path: Path) -> str:
    m = onnx.load(str(path), load_external_data=False)
    counts = Counter(
        (f"{n.domain.split('.')[-1]}:" if n.domain not in ("", "ai.onnx") else "") + n.op_type
        for n in m.graph.node
        if n.op_type not in BORING
    )
    return ", ".join(f"{k}" + (f" x{v}" if v > 1 else "") for k, v in sorted(counts.items()))


def run_group(group: list[Case], runs: int, time_it: bool, tmp: Path) -> list[Result]:
    results: list[Result] = []
    sessions: dict[str, tuple[ort.InferenceSession, dict[str, np.ndarray]]] = {}
    float_key: dict[str, str] = {}
    by_bytes: dict[bytes, str] = {}
    for case in group:
        r = Result(case)
        results.append(r)
        gq, gf = Builder(True, case.opset), Builder(False, case.opset)
        mq, mf = gq.model(case.build(gq)), gf.model(case.build(gf))
        path = tmp / f"{case.key}.onnx"
        try:
            sq = session(mq, case.options, path)
            r.ops = op_summary(path)
        except Exception as exc:  # ORT refuses the graph: that is a finding
            r.error = str(exc).splitlines()[0][:200]
            continue
        fbytes = mf.SerializeToString()
        if fbytes not in by_bytes:
            by_bytes[fbytes] = f"float:{case.key}"
            sessions[by_bytes[fbytes]] = (session(mf, {}, None), gf.feeds)
        float_key[case.key] = by_bytes[fbytes]
        sessions[case.key] = (sq, gq.feeds)
        yq = np.concatenate([o.ravel() for o in sq.run(None, gq.feeds)])
        yf = np.concatenate([o.ravel() for o in sessions[by_bytes[fbytes]][0].run(None, gf.feeds)])
        r.rel_err = float(np.linalg.norm(yq - yf) / max(np.linalg.norm(yf), 1e-12))
    if not time_it:
        return results
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(3):  # warm-up
        for s, feeds in sessions.values():
            s.run(None, feeds)
    for _ in range(runs):
        for k, (s, feeds) in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - start)
    for r in results:
        if r.case.key in times:
            r.q_ms = statistics.median(times[r.case.key]) * 1e3
            r.f_ms = statistics.median(times[float_key[r.case.key]]) * 1e3
            r.ratio = r.f_ms / r.q_ms
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated question numbers, e.g. 1,4b")
    ap.add_argument("--runs", type=int, default=30, help="interleaved timed runs per graph")
    ap.add_argument("--no-time", action="store_true", help="only show the optimised op types")
    args = ap.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    groups: dict[str, list[Case]] = {}
    for case in cases():
        if not wanted or case.question.split()[0] in wanted:
            groups.setdefault(case.question, []).append(case)
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, runs={args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        for question, group in groups.items():
            print(f"\n### {question}\n")
            print("| case | optimised QDQ graph | err | float ms | qdq ms | speed-up |")
            print("|---|---|---|---|---|---|")
            for r in run_group(group, args.runs, not args.no_time, Path(tmp)):
                ops = f"ERROR: {r.error}" if r.error else r.ops
                print(
                    f"| {r.case.title} | {ops} | {r.rel_err:.3f} | {r.f_ms:.2f} | "
                    f"{r.q_ms:.2f} | {r.ratio:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
