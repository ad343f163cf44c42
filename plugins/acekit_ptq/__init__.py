"""Built-in quantization plugin: post-training quantization passes.

Registers the passes ``decompose-attention``, ``quantize`` (annotate with the target's
rules), ``calibrate`` (streaming observers), ``auto-skip`` (sensitivity-based skipping)
and ``qat-bn`` (conv + BatchNorm that keep training), the ``ptq`` preset that chains the
first three, and the ``ptq`` quantizer.
"""

from __future__ import annotations

from typing import ClassVar

from acekit.plugin import Registrar, hookimpl

__all__ = ["PostTrainingQuantizer"]


class PostTrainingQuantizer:
    """Calibrates scales on sample data; the result can be fine-tuned (QAT) afterwards."""

    name: ClassVar[str] = "ptq"
    summary: ClassVar[str] = (
        "post-training quantization: target rules, streaming calibration, skipping"
    )


@hookimpl
def acekit_register_passes(registry: Registrar) -> None:
    """Register the quantization passes."""
    from acekit_ptq.annotate import Quantize
    from acekit_ptq.attention import DecomposeAttention
    from acekit_ptq.calibrate import Calibrate
    from acekit_ptq.qat_bn import QatBatchNorm
    from acekit_ptq.sensitivity import AutoSkip

    for pass_cls in (DecomposeAttention, Quantize, Calibrate, AutoSkip, QatBatchNorm):
        registry.add_pass(pass_cls)


@hookimpl
def acekit_register_quantizers(registry: Registrar) -> None:
    """Register the post-training quantizer."""
    registry.add_quantizer(PostTrainingQuantizer())


@hookimpl
def acekit_register_pipeline_presets(registry: Registrar) -> None:
    """Register ``ptq``: decompose attention, annotate, calibrate."""
    registry.add_preset(
        "ptq",
        "decompose-attention,quantize,calibrate",
        "post-training quantization: decompose attention, annotate, calibrate",
    )
