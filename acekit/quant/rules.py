"""What a deployment target tells the quantizer: which ops run quantized, and how.

A target plugin returns a :class:`QuantRules` from ``quantization_rules(options)``.
Quantization algorithms read the rules and never test which target they serve: the
integer types, symmetry, per-channel axes and the places where quantize/dequantize
pairs must sit for the runtime to fuse them into integer kernels are all here.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from acekit.ir.quant import Granularity, QuantSpec


@attrs.frozen
class OpRule:
    """How the target runs one IR op with quantized tensors.

    Attributes:
        activations: Indices of the inputs quantized as activations (per tensor).
        weight: Index of the input quantized as a weight (per channel), when that input
            is a parameter; a weight computed at run time is quantized as an activation.
        weight_axis: The weight's output-channel axis (the per-channel axis).
        output: Whether the op's output is quantized too. Runtimes that fuse
            ``DQ -> op -> Q`` into one integer kernel need it.
        bias: Index of the bias input added to the accumulator of input x weight, when
            the rules' ``bias_bits`` quantize it (conv and linear: 2).
        epilogue_of: Ops into whose epilogue the runtime fuses this op (TensorRT fuses a
            residual Add into the conv that computes one of its inputs). Of the inputs in
            ``activations``, the one such an op produces (directly or through
            ``absorbed`` ops; the deepest, when several do) stays float so the fusion
            happens, and the others are quantized. An op none of whose inputs comes
            from such an op is not a residual and stays float.
        activation: The spec of this op's activation inputs instead of the rules'
            ``activation`` template (bits still come from the settings). OpenVINO
            quantizes both inputs of a MatMul of two activations (attention's) signed
            symmetric: its int8 MatMul takes no activation zero point.
        nonnegative: The spec of an activation input that is never negative (its
            producer's op definition says ``nonnegative``: softmax, ReLU), instead of
            ``activation``: an unsigned range from 0 keeps the zero point at 0 without
            spending a bit on the sign.
    """

    activations: tuple[int, ...] = (0,)
    weight: int | None = None
    weight_axis: int = 0
    output: bool = False
    bias: int | None = None
    epilogue_of: frozenset[str] = frozenset()
    activation: QuantSpec | None = None
    nonnegative: QuantSpec | None = None

    @property
    def weighted(self) -> bool:
        """Whether the op has a weight input (a "layer": conv, linear, ...)."""
        return self.weight is not None


@attrs.frozen
class QuantRules:
    """A target's quantization scheme.

    Attributes:
        activation: Template spec of activations (bits, signedness, symmetry), per tensor.
        weight: Template spec of weights (per channel; the axis comes from the op rule).
            Its bit width is the widest the target runs: wider requests are narrowed.
        ops: The ops that run quantized, by IR op name.
        activation_bits: Activation bit widths the target can run.
        weight_bits: Weight bit widths the target can run (narrower ones are stored in
            8-bit containers by targets without sub-byte kernels).
        absorbed: Activation ops the runtime folds into the preceding op's output
            quantization: an op whose only reader is one of these quantizes the
            activation's output instead of its own (``Conv -> ReLU -> Q``).
        passthrough: Ops that commute with quantization and across which the runtime
            moves Q/DQ pairs (max pooling, reshape, transpose): an activation they
            produce is quantized at their input instead, so one scale serves both
            sides and the op runs on integers.
        bias_bits: Width of the integer bias the runtime adds to the accumulator of a
            layer whose input and weight are both quantized (32 for ONNX Runtime's
            ``QLinearConv``): the bias is rounded to the grid of ``s_input * s_weight``
            in the simulation and stored so in the export. ``None`` keeps biases float.
        bias_scale_through: Ops (IR names) through which the runtime finds a layer's
            input scale for its bias: value-moving ops between the quantized tensor and
            the layer (reshape, transpose, max pooling).
        storage_bits: Integer container widths the deployed file stores: a narrower
            quantized tensor (4-bit weights) is stored in the smallest one that holds it.
        weight_block_size: Group-wise weight scales: each output channel of a weight
            gets one scale per block of this many input values (TensorRT's INT4
            weight-only kernels: 128 along K). A weight whose values per channel are not
            a multiple of it, or no more than one block, keeps one scale per channel.
            ``None`` (most targets): per-channel scales.
        weight_block_symmetric: Whether group-wise weights are symmetric (zero point 0);
            ``None``: as the :attr:`weight` template. A runtime that dequantizes the
            blocks before a float product pays nothing for a zero point per block, and
            at 4 bits an affine grid fits each block's range with one more level.
        mac_costs: The target's latency cost model: the time of one multiply-accumulate
            of a layer whose weights are ``bits`` wide, relative to float32 (1.0), by
            width. A width not listed costs what the narrowest listed width holding it
            costs (4-bit weights run in 8-bit kernels on most targets). The default
            says what CPU and GPU integer kernels roughly give: 8-bit MACs at four
            times, 16-bit at twice float32's rate. Mixed precision's latency budget
            reads it; it is an estimate for ranking choices, not a measurement.
        reason: One line saying why this scheme, printed in the run log.
    """

    activation: QuantSpec
    weight: QuantSpec
    ops: Mapping[str, OpRule]
    activation_bits: tuple[int, ...] = (8,)
    weight_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    absorbed: frozenset[str] = frozenset()
    passthrough: frozenset[str] = frozenset()
    bias_bits: int | None = None
    bias_scale_through: frozenset[str] = frozenset()
    storage_bits: tuple[int, ...] = (8,)
    weight_block_size: int | None = None
    weight_block_symmetric: bool | None = None
    mac_costs: Mapping[int, float] = attrs.field(factory=lambda: {8: 0.25, 16: 0.5})
    reason: str = ""

    def activation_spec(self, bits: int | None = None) -> QuantSpec:
        """The activation template, with ``bits`` when given."""
        spec = self.activation
        return spec if bits is None else attrs.evolve(spec, bits=bits)

    def input_spec(
        self, rule: OpRule, bits: int | None = None, *, nonnegative: bool = False
    ) -> QuantSpec:
        """The spec of an activation input of an op that ``rule`` runs, with ``bits``.

        The rule's own spec when it has one (``rule.nonnegative`` for a tensor that is
        never negative, else ``rule.activation``), otherwise the activation template.
        """
        spec = (rule.nonnegative if nonnegative else None) or rule.activation
        if spec is None:
            return self.activation_spec(bits)
        return spec if bits is None else attrs.evolve(spec, bits=bits)

    def storage_range(self, bits: int, signed: bool) -> tuple[int, int]:
        """The integer range of the container a ``bits``-wide tensor is stored in.

        Raises ``ValueError`` when no container of :attr:`storage_bits` holds it.
        """
        from acekit.quant.qmath import integer_range

        fitting = [width for width in sorted(self.storage_bits) if width >= bits]
        if not fitting:
            raise ValueError(
                f"a {bits}-bit tensor fits no storage width of this target "
                f"({', '.join(map(str, self.storage_bits))})"
            )
        return integer_range(fitting[0], signed=signed)

    def mac_cost(self, bits: int | None) -> float:
        """Relative cost of one MAC with ``bits``-wide weights (``None``: float, 1.0)."""
        if bits is None:
            return 1.0
        holding = [width for width in sorted(self.mac_costs) if width >= bits]
        return float(self.mac_costs[holding[0]]) if holding else 1.0

    def weight_spec(
        self, axis: int | None, bits: int | None = None, *, per_channel: int | None = None
    ) -> QuantSpec:
        """The weight template per channel along ``axis`` (per tensor for ``None``).

        ``per_channel`` is how many values each channel of the weight holds; with
        :attr:`weight_block_size` set and a multiple of it above one block, the spec is
        group-wise (``block_size``).
        """
        block = self.weight_block_size
        blocked = (
            axis is not None
            and block is not None
            and per_channel is not None
            and per_channel > block
            and per_channel % block == 0
        )
        symmetric = self.weight.symmetric
        if blocked and self.weight_block_symmetric is not None:
            symmetric = self.weight_block_symmetric
        return attrs.evolve(
            self.weight,
            granularity=Granularity.PER_TENSOR if axis is None else Granularity.PER_CHANNEL,
            axis=axis,
            bits=self.weight.bits if bits is None else min(bits, self.weight.bits),
            block_size=block if blocked else None,
            symmetric=symmetric,
        )
