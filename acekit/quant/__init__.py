"""Quantization in the kernel: target rules, calibration data and the compile context."""

from acekit.quant.rules import OpRule, QuantRules

__all__ = ["OpRule", "QuantRules"]
