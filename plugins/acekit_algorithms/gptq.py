"""``gptq``: Hessian-based weight rounding with error feedback (Frantar et al. 2022).

A layer's output error from changing its weight row ``w`` by ``d`` is ``d H d^T`` with
``H = X^T X`` over the inputs ``X`` it sees (for a conv, the im2col patches). GPTQ rounds
the input columns one at a time and spreads each column's rounding error over the
columns not yet rounded, weighted by the inverse Hessian (through its Cholesky factor,
in blocks), so later roundings compensate earlier ones. ``H`` is accumulated batch by
batch from the inputs the quantized model feeds the layer: memory is one ``columns x
columns`` matrix per layer. By default one pass over the data collects every layer's
``H``; ``sequential=true`` collects each after the layers before it were rounded (one
pass per layer, the paper's order, much slower on deep models). The scales are the
target's (from ``calibrate``); the result is the weight moved onto the grid, exported
like any other. A layer keeps round-to-nearest where GPTQ would reconstruct worse.

With group-wise scales in the target's rules (``QuantRules.weight_block_size``, the
weight spec's ``block_size``), each group's scales are chosen from the weights as error
feedback left them when GPTQ reaches the group, as the paper does, and replace the
calibrated ones.

Runs after ``calibrate``; handles ``linear`` and ungrouped ``conv2d``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor
from torch.nn import functional as F

from acekit.ir.graph import Graph
from acekit.ir.quant import QuantSpec
from acekit.logging import get_logger, progress
from acekit.passes import Pass, PassResult
from acekit.quant import qmath
from acekit.quant.context import QuantContext, current_context
from acekit_algorithms.layers import (
    CalibrationReader,
    Layer,
    calibration_batches,
    fake_quantized,
    no_data_reason,
    quantized_layers,
    spec_tensors,
    stream,
)

log = get_logger(__name__)


def input_rows(layer: Layer, x: Tensor, kernel: tuple[int, ...]) -> Tensor:
    """The layer's input as rows of its weight's column space (im2col for a conv).

    ``kernel`` is the conv's kernel size (the weight's trailing dimensions).
    """
    if layer.node.op == "linear":
        return x.reshape(-1, x.shape[-1])
    attrs_ = layer.node.attrs
    patches = F.unfold(
        x,
        kernel_size=kernel,
        dilation=attrs_.get("dilation", 1),
        padding=attrs_.get("padding", 0),
        stride=attrs_.get("stride", 1),
    )
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def hessians(
    graph: Graph, context: QuantContext, layers: list[Layer], batches: int
) -> list[tuple[Tensor, int]]:
    """``X^T X / n`` of each layer over its quantized-model inputs, and ``n`` (rows seen).

    One pass over the calibration data serves all ``layers``.
    """
    totals: list[Tensor | None] = [None] * len(layers)
    rows = [0] * len(layers)
    values = [layer.input_value for layer in layers]
    kernels = [tuple(layer.weight(graph).shape[2:]) for layer in layers]
    for seen in stream(graph, context, values, quantize=True, batches=batches):
        for i, layer in enumerate(layers):
            x = input_rows(layer, seen[layer.input_value.name], kernels[i]).double()
            total = totals[i]
            totals[i] = x.T @ x if total is None else total + x.T @ x
            rows[i] += x.shape[0]
    return [
        (total / max(n, 1), n) for total, n in zip(totals, rows, strict=True) if total is not None
    ]


def _quantize_column(w: Tensor, scale: Tensor, zero: Tensor, spec: QuantSpec) -> Tensor:
    return (torch.clamp(torch.round(w / scale) + zero, spec.qmin, spec.qmax) - zero) * scale


def _group_params(values: Tensor, spec: QuantSpec) -> tuple[Tensor, Tensor]:
    """Per-row scale and zero point of a group of columns, from their current values.

    Below 8 bits the range of smallest rounding error (clipped, as ``calibrate``'s
    ``weights=auto`` does per channel); at 8 bits the min/max range.
    """
    if spec.bits < 8:
        scale, zero = qmath.clipped_row_qparams(
            values, bits=spec.bits, signed=spec.signed, symmetric=spec.symmetric
        )
    else:
        scale, zero = qmath.qparams_from_range(
            values.amin(1),
            values.amax(1),
            bits=spec.bits,
            signed=spec.signed,
            symmetric=spec.symmetric,
        )
    return scale.to(values), zero.to(values)


def gptq_round(
    weight: Tensor,
    h: Tensor,
    spec: QuantSpec,
    *,
    damping: float,
    block: int,
    act_order: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``weight`` (rows x columns) rounded column by column with error feedback.

    With group-wise scales (``spec.block_size``), each group's scales are set from the
    weights as error feedback left them when GPTQ reaches the group (Frantar et al.
    2022, "GPTQ with groups"); they come back as the second value (``rows x groups``),
    else ``None``. ``act_order`` rounds the columns in order of decreasing Hessian
    diagonal (the inputs with the most energy first, while the most columns are left
    to take their error); groups stay contiguous input ranges, so their scales are
    then set from the weights before any rounding ("static groups").
    """
    w = weight.detach().to(h.device).double()
    h = h.clone()
    scale, zero = spec_tensors(spec, w)
    group = spec.block_size
    rows, columns = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    if group is not None:
        scale_ = torch.zeros(rows, -(-columns // group), dtype=w.dtype, device=w.device)
        zero_ = torch.zeros_like(scale_)
        if act_order:
            for index in range(scale_.shape[1]):
                chunk = w[:, index * group : (index + 1) * group]
                scale_[:, index], zero_[:, index] = _group_params(chunk, spec)
    else:
        scale_ = scale.double().reshape(-1) if spec.axis is not None else scale.double().reshape(1)
        zero_ = zero.double().reshape(scale_.shape)
    order = (
        torch.argsort(torch.diag(h), descending=True, stable=True)
        if act_order
        else torch.arange(columns, device=w.device)
    )
    w, h = w[:, order], h[order][:, order]
    h += damping * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for start in range(0, columns, block):
        end = min(start + block, columns)
        w1 = w[:, start:end].clone()
        errors = torch.zeros_like(w1)
        inv1 = inverse[start:end, start:end]
        for i in range(end - start):
            column = w1[:, i]
            if group is None:
                step, zp = scale_, zero_
            elif act_order:
                index = int(order[start + i]) // group
                step, zp = scale_[:, index], zero_[:, index]
            else:
                index = (start + i) // group
                if (start + i) % group == 0:
                    # The group's columns as they stand now: this block's updated ones,
                    # then the later ones (updated at the end of this block).
                    ahead = torch.cat([w1[:, i:], w[:, end:]], 1)[:, :group]
                    scale_[:, index], zero_[:, index] = _group_params(ahead, spec)
                step, zp = scale_[:, index], zero_[:, index]
            rounded = _quantize_column(column, step, zp, spec)
            q[:, start + i] = rounded
            error = (column - rounded) / inv1[i, i]
            w1[:, i:] -= error.unsqueeze(1) @ inv1[i, i:].unsqueeze(0)
            errors[:, i] = error
        w[:, end:] -= errors @ inverse[start:end, end:]
    q = q[:, torch.argsort(order)]
    result = q.to(device=weight.device, dtype=weight.dtype)
    return result, (scale_.float().to(weight.device) if group is not None else None)


def output_error(delta: Tensor, h: Tensor) -> float:
    """``mean_rows(delta H delta^T)``: the layer's mean squared output change."""
    d = delta.double()
    return float(((d @ h) * d).sum(1).mean())


@attrs.frozen
class Gptq(CalibrationReader, Pass):
    """Round weights column by column, feeding each error forward through ``H^-1``."""

    name: ClassVar[str] = "gptq"
    summary: ClassVar[str] = "Hessian-based weight rounding with error feedback (after ptq)"
    stage: ClassVar[str] = "after-calibration"

    #: Calibration batches whose inputs build each layer's Hessian (default: stats_steps).
    batches: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    #: Added to the Hessian's diagonal, as a fraction of its mean (numerical stability).
    damping: float = attrs.field(
        default=0.01, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )
    #: ``true``: each layer's Hessian from the inputs the layers before it, already
    #: rounded, produce (one pass over the data per layer, as the paper does);
    #: ``false`` (default): all Hessians in one pass with the calibrated model's inputs.
    sequential: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: Columns processed together (lazy batch updates).
    block: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    #: ``true``: round the input columns in order of decreasing Hessian diagonal (the
    #: paper's "act-order"; group-wise scales are then set before rounding).
    act_order: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def run(self, graph: Graph) -> PassResult:
        """Round every supported quantized layer in order; stats: layers, errors."""
        context = current_context(self.name)
        reason = no_data_reason(context)
        candidates = quantized_layers(graph)
        targets = [layer for layer in candidates if _supported(layer)]
        if reason is None and not targets:
            reason = "no linear or ungrouped conv2d layer has calibrated quantized weights"
        if reason is not None:
            log.info(f"GPTQ: did nothing: {reason}")
            return PassResult(graph, False, {"layers": 0})
        for layer in candidates:
            if not _supported(layer):
                log.info(f"GPTQ: keeping nearest rounding for '{layer.node.name}' (grouped conv)")
        batches = calibration_batches(context, self.batches)
        before: list[float] = []
        after: list[float] = []
        short = 0
        # One pass for every layer's Hessian unless each layer must see the rounding of
        # the layers before it.
        shared = None if self.sequential else hessians(graph, context, targets, batches)
        for index, layer in enumerate(progress(targets, "GPTQ", total=len(targets))):
            h, rows = (
                shared[index]
                if shared is not None
                else hessians(graph, context, [layer], batches)[0]
            )
            if rows < h.shape[0]:
                per_batch = max(rows // max(batches, 1), 1)
                log.info(
                    f"GPTQ: keeping nearest rounding for '{layer.node.name}': its Hessian "
                    f"needs at least {h.shape[0]} input vectors, the calibration data gave "
                    f"{rows} (use at least {-(-h.shape[0] // per_batch)} batches)"
                )
                short += 1
                continue
            errors = self._round(graph, context, layer, h)
            before.append(errors[0])
            after.append(errors[1])
        done = len(before)
        mean_before = sum(before) / done if done else 0.0
        mean_after = sum(after) / done if done else 0.0
        log.info(
            f"GPTQ: {done} layers, output MSE {mean_before:.3g} (nearest) -> {mean_after:.3g}"
            + (f"; {short} lacked calibration data" if short else ""),
            pass_name=self.name,
        )
        return PassResult(
            graph,
            done > 0,
            {"layers": done, "error_nearest": mean_before, "error_after": mean_after},
        )

    def _round(
        self, graph: Graph, context: QuantContext, layer: Layer, h: Tensor
    ) -> tuple[float, float]:
        spec = layer.spec
        assert spec is not None
        weight = layer.float_weight(context, graph)
        rows = weight.reshape(weight.shape[0], -1)
        nearest = fake_quantized(rows, spec)
        rounded, group_scales = gptq_round(
            rows, h, spec, damping=self.damping, block=self.block, act_order=self.act_order
        )
        error_nearest = output_error((nearest - rows).to(h.device), h)
        error_gptq = output_error((rounded - rows).to(h.device), h)
        layer.remember_weight(context, graph)
        if error_gptq <= error_nearest:
            layer.set_weight(graph, rounded.reshape(weight.shape))
            if group_scales is not None:  # the groups' scales GPTQ chose
                layer.weight_value.quant = attrs.evolve(
                    spec, scale=tuple(group_scales.reshape(-1).tolist())
                )
        else:
            layer.set_weight(graph, nearest.reshape(weight.shape))
        return error_nearest, min(error_gptq, error_nearest)


def _supported(layer: Layer) -> bool:
    return layer.node.op == "linear" or (layer.node.op == "conv2d" and layer.groups == 1)
