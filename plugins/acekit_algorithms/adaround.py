"""``adaround``: learn whether each weight rounds up or down (Nagel et al. 2020).

Rounding every weight to its nearest grid point is not what keeps a layer's *output*
closest to float. AdaRound learns, per weight, a soft choice ``h(V)`` in ``[0, 1]``
between the grid point below (``floor(w / s)``) and the one above, minimising the
layer's output error on calibration data plus a regulariser that pushes every ``h``
to 0 or 1 as its sharpness ``beta`` anneals from 20 to 2. The layer reads its input as
the quantized model produces it (the layers before it already rounded); the target is
the float layer on the float input. The result is the weight moved onto the chosen grid
point, so the usual observers, simulation and exports carry it with no special case.
A layer keeps round-to-nearest where the learned rounding reconstructs worse.

Runs after ``calibrate`` (the weight scales are the target's, from its rules).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor
from torch.nn import functional as F

from acekit.ir.graph import Graph
from acekit.logging import get_logger, progress
from acekit.passes import Pass, PassResult
from acekit.quant.context import QuantContext, current_context
from acekit_algorithms.layers import (
    CalibrationReader,
    Frontier,
    Layer,
    after_ptq_reason,
    broadcast,
    calibration_batches,
    quantized_layers,
    spec_tensors,
)
from acekit_algorithms.originals import float_reference

log = get_logger(__name__)

# The rectified sigmoid's stretch (Nagel et al. 2020, eq. 23).
_ZETA, _GAMMA = 1.1, -0.1
_BETA_START, _BETA_END = 20.0, 2.0
#: Default cap on the calibration samples AdaRound keeps.
SAMPLES: int | None = 512


def _soft(v: Tensor) -> Tensor:
    return torch.clamp(torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0, 1)


def _soft_slope(v: Tensor) -> tuple[Tensor, Tensor]:
    """``h(V)`` and ``dh/dV`` (zero where the clamp holds ``h`` at 0 or 1)."""
    sigmoid = torch.sigmoid(v.detach())
    h = sigmoid * (_ZETA - _GAMMA) + _GAMMA
    slope = (1 - sigmoid).mul_(sigmoid).mul_(_ZETA - _GAMMA)
    slope.masked_fill_((h <= 0) | (h >= 1), 0.0)
    return h.clamp_(0, 1), slope


def _regularizer_slope(h: Tensor, beta: float) -> Tensor:
    """``d/dh`` of the regulariser ``sum(1 - |2h - 1| ** beta)`` (``beta >= 2``)."""
    r = h * 2 - 1
    return r.abs().pow_(beta - 2).mul_(r).mul_(-2 * beta)


def _initial_v(rest: Tensor) -> Tensor:
    """``V`` with ``h(V) = rest``: training starts at the unrounded weight."""
    p = ((rest - _GAMMA) / (_ZETA - _GAMMA)).clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


@attrs.frozen
class LayerData:
    """A layer's calibration inputs (as the quantized model feeds it) and float targets."""

    inputs: Tensor
    targets: Tensor
    #: Calibration batches the inputs came from (for the "use at least N batches" hint).
    batches: int = 1

    def vectors(self, layer: Layer) -> int:
        """How many input vectors (output positions) the data holds for ``layer``."""
        channels = self.targets.shape[-1 if layer.node.op == "linear" else 1]
        return self.targets.numel() // max(channels, 1)


def layer_data(
    graph: Graph, context: QuantContext, layer: Layer, quantized: Frontier, floating: Frontier
) -> LayerData:
    """``layer``'s inputs as the quantized model feeds it and its float outputs.

    ``quantized`` runs the quantized model (the layers before ``layer`` as rounded so far),
    ``floating`` the float reference; each gets only as far as ``layer``'s input.
    """
    inputs = quantized.value(layer.input_value.name)
    weight = layer.float_weight(context, graph)
    bias = layer.float_bias(context, graph)
    targets = []
    for x in floating.value(layer.input_value.name):
        b = None if bias is None else bias.detach().to(x.device)
        targets.append(layer.forward(x, weight.to(x.device), b))
    return LayerData(torch.cat(inputs), torch.cat(targets), len(inputs))


def reconstruction_error(
    layer: Layer, data: LayerData, weight: Tensor, bias: Tensor | None, chunk: int = 16
) -> float:
    """Mean squared error of the layer's output with ``weight`` against the float target.

    ``chunk`` samples at a time: a whole output (and its error) of a large early layer
    would take as much memory as its targets again, twice.
    """
    total = 0.0
    weight = weight.to(data.inputs.device)
    with torch.no_grad():
        for start in range(0, data.inputs.shape[0], chunk):
            out = layer.forward(data.inputs[start : start + chunk], weight, bias)
            total += float(out.sub_(data.targets[start : start + chunk]).pow_(2).sum())
    return total / max(data.targets.numel(), 1)


@attrs.frozen
class AdaRound(CalibrationReader, Pass):
    """Learn each weight's rounding direction to reconstruct layer outputs."""

    name: ClassVar[str] = "adaround"
    summary: ClassVar[str] = "learned up/down weight rounding on calibration data (after ptq)"
    stage: ClassVar[str] = "after-calibration"

    #: Optimisation steps per layer.
    iterations: int = attrs.field(
        default=150, validator=[attrs.validators.ge(1), attrs.validators.le(100_000)]
    )
    #: Calibration batches whose inputs each layer reconstructs (default: ``stats_steps``).
    batches: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    #: At most this many calibration samples are kept (``None``: all of ``batches``). Why:
    #: every layer's inputs and float outputs are held for them, and the two models' runs
    #: cost what they do.
    samples: int | None = attrs.field(
        default=SAMPLES, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    #: Samples per optimisation step, drawn from the calibration inputs.
    batch_size: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    #: Weight of the regulariser that drives every choice to up or down.
    regularization: float = attrs.field(default=0.01, validator=attrs.validators.gt(0))
    learning_rate: float = attrs.field(default=0.01, validator=attrs.validators.gt(0))
    #: Fraction of the steps spent on reconstruction alone before regularising.
    warmup: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0), attrs.validators.lt(1)]
    )
    seed: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Output rows/columns of a conv2d map each step reconstructs (a random window; 0: the
    #: whole map). Why: a step on a window costs what the window does, so a 56x56 map
    #: trains ~49x faster per step at window 8, and the windows cover the map over steps.
    window: int = attrs.field(default=8, validator=attrs.validators.ge(0))

    def run(self, graph: Graph) -> PassResult:
        """Round every quantized layer in order; stats: layers, mean errors before/after."""
        context = current_context(self.name)
        targets = quantized_layers(graph)
        reason = after_ptq_reason(context, targets)
        if reason is not None:
            log.info(f"AdaRound: did nothing: {reason}")
            return PassResult(graph, False, {"layers": 0})
        batches = calibration_batches(context, self.batches)
        generator = torch.Generator().manual_seed(self.seed)
        before: list[float] = []
        after: list[float] = []
        kept = short = 0
        # One run of each model over the samples used, paused at every layer's input: the
        # quantized one sees each layer rounded before it runs (refresh below).
        values = [layer.input_value for layer in targets]
        quantized = Frontier(
            graph, context, values, quantize=True, batches=batches, samples=self.samples
        )
        with float_reference(graph, context):
            floating = Frontier(
                graph, context, values, quantize=False, batches=batches, samples=self.samples
            )
        data: LayerData | None = None
        for layer in progress(targets, "AdaRound", total=len(targets)):
            data = None  # the previous layer's data is freed before this layer's is made
            data = layer_data(graph, context, layer, quantized, floating)
            shortage = _shortage(graph, layer, data)
            if shortage is not None:
                log.info(f"AdaRound: keeping nearest rounding for '{layer.node.name}': {shortage}")
                short += 1
                continue
            nearest, learned = self._round(graph, context, layer, data, generator)
            bias = layer.bias(graph)
            b = None if bias is None else bias.detach().to(data.inputs.device)
            error_nearest = reconstruction_error(layer, data, nearest, b)
            error_learned = reconstruction_error(layer, data, learned, b)
            layer.remember_weight(context, graph)
            if error_learned <= error_nearest:
                layer.set_weight(graph, learned)
            else:
                layer.set_weight(graph, nearest)
                kept += 1
            quantized.refresh(graph, [layer.weight_ref])
            before.append(error_nearest)
            after.append(min(error_learned, error_nearest))
        done = len(before)
        mean_before = sum(before) / done if done else 0.0
        mean_after = sum(after) / done if done else 0.0
        log.info(
            f"AdaRound: {done} layers, output MSE vs float {mean_before:.3g} "
            f"(nearest) -> {mean_after:.3g}; {kept} kept nearest rounding"
            + (f"; {short} lacked calibration data" if short else ""),
            pass_name=self.name,
        )
        return PassResult(
            graph,
            done > 0,
            {"layers": done, "error_nearest": mean_before, "error_after": mean_after},
        )

    def _round(
        self,
        graph: Graph,
        context: QuantContext,
        layer: Layer,
        data: LayerData,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        """The nearest-rounded and the learned-rounded weight of ``layer``."""
        spec = layer.spec
        assert spec is not None
        weight = layer.float_weight(context, graph).to(data.inputs.device)
        scale, zero = spec_tensors(spec, weight)
        scale, zero = broadcast(scale, spec, weight), broadcast(zero.float(), spec, weight)
        floor = torch.floor(weight / scale)
        nearest = (
            torch.clamp(torch.round(weight / scale) + zero, spec.qmin, spec.qmax) - zero
        ) * scale
        # The step's weight ``(clamp(floor + h + zero) - zero) * scale`` as ``base + h * up``:
        # ``h`` moves a weight by one step where ``floor`` is inside the grid, not at all
        # where the clamp pins it. Precomputed, a step costs two elementwise ops less.
        grid = floor + zero
        base = (torch.clamp(grid, spec.qmin, spec.qmax) - zero) * scale
        up_step = torch.where((grid >= spec.qmin) & (grid < spec.qmax), scale, 0.0)
        v = _initial_v(weight / scale - floor).requires_grad_(True)
        fused = True if v.device.type in ("cpu", "cuda") else None
        optimizer = torch.optim.Adam([v], lr=self.learning_rate, fused=fused)
        bias = layer.bias(graph)
        b = None if bias is None else bias.detach().to(weight.device)
        warm = int(self.warmup * self.iterations)
        count = data.inputs.shape[0]
        # The gradient reaches V through the weight only: autograd runs the layer, the
        # rest (h's slope, the regulariser's) is elementwise and written out, which on
        # ResNet-sized layers halves a step's elementwise work against autograd's graph.
        for step in range(self.iterations):
            pick = torch.randint(count, (min(self.batch_size, count),), generator=generator)
            pick = pick.to(data.inputs.device)
            h, slope = _soft_slope(v)
            stepped = torch.addcmul(base, h, up_step).requires_grad_(True)
            with torch.enable_grad():
                out, target = window_step(layer, data, pick, stepped, b, self.window, generator)
                (grad,) = torch.autograd.grad(_reconstruction(layer, out, target), stepped)
            grad.mul_(up_step)
            if step >= warm:
                progress_ = (step - warm) / max(self.iterations - warm, 1)
                beta = _BETA_END + (_BETA_START - _BETA_END) * (1 - progress_)
                grad.add_(_regularizer_slope(h, beta), alpha=self.regularization)
            v.grad = grad.mul_(slope)
            optimizer.step()
        with torch.no_grad():
            up = (_soft(v) >= 0.5).to(weight.dtype)
            learned = (torch.clamp(floor + up + zero, spec.qmin, spec.qmax) - zero) * scale
        return nearest, learned


def _shortage(graph: Graph, layer: Layer, data: LayerData) -> str | None:
    """Why the data cannot pin down ``layer``'s rounding, or ``None`` when it can.

    Each output channel's rounding is fitted to its outputs, which only constrain the
    weight along the input vectors seen: with fewer vectors than the channel has inputs,
    many roundings reconstruct equally well and the choice overfits.
    """
    weight = layer.weight(graph)
    needed = weight[0].numel()
    vectors = data.vectors(layer)
    if vectors >= needed:
        return None
    per_batch = max(vectors // max(data.batches, 1), 1)
    return (
        f"reconstructing it needs at least {needed} input vectors (its inputs per output), "
        f"the calibration data gave {vectors} (use at least {-(-needed // per_batch)} "
        "batches: adaround{batches=...} or more calibration data)"
    )


def window_step(
    layer: Layer,
    data: LayerData,
    pick: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    size: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """The layer's output on the samples ``pick`` and its float target, both cut to one
    random ``size`` x ``size`` window of a conv2d output map (whole tensors otherwise).

    The input patch that produces the window is cut (and zero-padded where the window
    touches the border) before the samples are gathered, so the window's output equals
    the same window of the full convolution.
    """
    attributes = {k: v for k, v in layer.node.attrs.items() if k != "training"}
    targets = data.targets
    padding = attributes.get("padding", 0)
    if (
        layer.node.op != "conv2d"
        or size == 0
        or isinstance(padding, str)
        or max(targets.shape[-2:]) <= size
    ):
        return layer.forward(data.inputs[pick], weight, bias), targets[pick]
    (ph, pw), (sh, sw), (dh, dw) = (
        _pair(padding),
        _pair(attributes.get("stride", 1)),
        _pair(attributes.get("dilation", 1)),
    )
    height, width = targets.shape[-2:]
    rows, cols = min(size, height), min(size, width)
    top = int(torch.randint(height - rows + 1, (1,), generator=generator))
    left = int(torch.randint(width - cols + 1, (1,), generator=generator))
    in_height, in_width = data.inputs.shape[-2:]
    r0 = top * sh - ph
    r1 = (top + rows - 1) * sh - ph + (weight.shape[-2] - 1) * dh + 1
    c0 = left * sw - pw
    c1 = (left + cols - 1) * sw - pw + (weight.shape[-1] - 1) * dw + 1
    patch = data.inputs[:, :, max(r0, 0) : min(r1, in_height), max(c0, 0) : min(c1, in_width)]
    patch = F.pad(
        patch[pick],
        (max(-c0, 0), max(c1 - in_width, 0), max(-r0, 0), max(r1 - in_height, 0)),
    )
    out = F.conv2d(
        patch,
        weight,
        bias,
        stride=(sh, sw),
        padding=0,
        dilation=(dh, dw),
        groups=int(attributes.get("groups", 1)),
    )
    # Cut before gathering: a full target map per sample would cost more than the step.
    return out, targets[:, :, top : top + rows, left : left + cols][pick]


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    return (pair[0], pair[0]) if len(pair) == 1 else (pair[0], pair[1])


def _reconstruction(layer: Layer, out: Tensor, target: Tensor) -> Tensor:
    # Squared error summed over channels, averaged over samples and positions (AIMET's
    # form): it keeps the regulariser's weight comparable across layer widths.
    channel = -1 if layer.node.op == "linear" else 1
    return (out - target).pow(2).sum(channel).mean()
