"""Built-in plugin: post-training algorithms that win accuracy without training.

Registers ``cle`` (cross-layer equalization with high-bias absorption) and
``smoothquant`` (activation outliers into weights), both before calibration, ``adaround``
and ``gptq`` (learned and Hessian-based weight rounding,
after calibration) and ``bias-correction`` (after calibration and any rounding). Each
changes only weights and biases held by the graph, so every target exports the result
with its normal path, and QAT starts from it.
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
    from acekit_algorithms.smoothquant import SmoothQuant

    for pass_cls in (CrossLayerEqualization, SmoothQuant, AdaRound, Gptq, BiasCorrection):
        registry.add_pass(pass_cls)
