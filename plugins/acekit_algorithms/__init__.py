"""Built-in plugin: post-training algorithms that win accuracy without training.

Registers, before calibration, ``cle`` (cross-layer equalization with high-bias
absorption) and ``smoothquant`` (activation outliers into weights); after calibration,
``adaround`` and ``gptq`` (learned and Hessian-based weight rounding),
``mixed-precision`` (per-layer widths under a size budget) and ``bias-correction``
(after any rounding). Each changes only weights, biases and weight specs held by the
graph, so every target exports the result with its normal path, and QAT starts from it.
"""

from __future__ import annotations

from acekit.plugin import Registrar, hookimpl


@hookimpl
def acekit_register_passes(registry: Registrar) -> None:
    """Register the algorithms' passes."""
    from acekit_algorithms.adaround import AdaRound
    from acekit_algorithms.bias_correction import BiasCorrection
    from acekit_algorithms.cle import CrossLayerEqualization
    from acekit_algorithms.gptq import Gptq
    from acekit_algorithms.mixed_precision import MixedPrecision
    from acekit_algorithms.smoothquant import SmoothQuant

    for pass_cls in (
        CrossLayerEqualization,
        SmoothQuant,
        AdaRound,
        Gptq,
        MixedPrecision,
        BiasCorrection,
    ):
        registry.add_pass(pass_cls)
