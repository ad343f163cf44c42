"""The public surface for writing a deployment target: import this, nothing deeper.

A target plugin answers *how to quantize for me* and *how to write and run me*. It is
an object with (see :class:`Target`):

``name``, ``title``, ``summary``
    The name settings use (``target_framework``), the name shown to people, one line.
``options`` and ``validate_options(options)``
    The :class:`TargetOption` schema of ``deployment.target_options``; settings call
    ``validate_options`` when they are built or loaded, so a wrong option fails there
    with the key and a "did you mean". :func:`check_options` implements it from the
    schema; add checks that involve several options around it.
``quantization_rules(options) -> QuantRules``
    The integer types, per-channel axes, which ops run quantized (:class:`OpRule`),
    pass-through and absorbed ops, bias handling (``bias_bits``) and storage widths.
    The kernel has no target-specific behaviour: the simulation ``qm(x)`` follows these
    rules, so it matches what the runtime computes.
``export(graph, path, options) -> Path``
    Write the quantized graph. ONNX-consuming targets call :func:`export_qdq_onnx`
    (the shared lowering: TorchScript-based export of the simulated module, integer
    weight initializers, integer biases per the rules, ``onnx.checker``, atomic write)
    and customise it through their rules and a ``postprocess`` callback working on an
    :class:`OnnxGraphView`. Other formats write through :func:`atomic_write`.
``load(path) -> callable``
    Run the exported file: tensors in, list of tensors out. acekit uses it to time the
    deployment and compare it with ``qm(x)``.

:func:`example_inputs` builds inputs from a graph's input types (for tracing
exporters and checks); :mod:`acekit.quant.qmath` (re-exported as ``qmath``) holds the
quantization math (integer ranges, quantize/dequantize in torch and numpy, bias
rounding) that exports must share with the simulation. :mod:`acekit.testing` checks a
target against this contract.

:class:`TargetBase` holds the part every target repeats: the declaration, option
checking (``validate_options`` from the ``options`` schema, plus an optional
:meth:`TargetBase.check_combinations`) and rules from checked options. Subclass it and
write ``rules``, ``export`` and ``load``; or write any object with the members of
:class:`Target`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from acekit.fileio import OutputPathError, atomic_write, check_output_path
from acekit.ir.graph import Graph, Node, Value
from acekit.ir.quant import Granularity, QuantSpec
from acekit.ir.tensor_type import TensorType
from acekit.logging import get_logger
from acekit.plugin import Registrar, hookimpl
from acekit.plugin.interfaces import Target
from acekit.quant import qmath
from acekit.quant.deploy import deployment_graph
from acekit.quant.examples import example_input, example_inputs
from acekit.quant.options import (
    Scalar,
    TargetOption,
    TargetOptionError,
    check_options,
    describe_options,
)
from acekit.quant.qdq_onnx import (
    DEFAULT_OPSET,
    OPSETS,
    OnnxGraphView,
    QdqExportError,
    drop_unused_initializers,
    export_qdq_onnx,
    fold_weight_quantization,
    lower_to_qdq_onnx,
    onnx_ops,
    quantize_biases,
    write_onnx,
)
from acekit.quant.rules import OpRule, QuantRules
from acekit.runtime.codegen import to_module

__all__ = [
    "DEFAULT_OPSET",
    "OPSETS",
    "Granularity",
    "Graph",
    "Node",
    "OnnxGraphView",
    "OpRule",
    "OutputPathError",
    "QdqExportError",
    "QuantRules",
    "QuantSpec",
    "Registrar",
    "Scalar",
    "Target",
    "TargetBase",
    "TargetOption",
    "TargetOptionError",
    "TensorType",
    "Value",
    "atomic_write",
    "check_options",
    "check_output_path",
    "deployment_graph",
    "describe_options",
    "drop_unused_initializers",
    "example_input",
    "example_inputs",
    "export_qdq_onnx",
    "fold_weight_quantization",
    "get_logger",
    "hookimpl",
    "lower_to_qdq_onnx",
    "onnx_ops",
    "qmath",
    "quantize_biases",
    "to_module",
    "write_onnx",
]


class TargetBase(abc.ABC):
    """The shared part of a target: declaration, option checking, rules from checked options.

    Set the class attributes ``name``, ``title``, ``summary`` and ``options`` (the
    :class:`TargetOption` schema) and implement :meth:`rules`, :meth:`export` and
    :meth:`load`. Import a runtime package inside ``export``/``load`` (not at module
    level), so the target still lists when the package is missing and using it can say
    what to install. Override :meth:`check_combinations` for checks across options.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str] = ""
    options: ClassVar[Mapping[str, TargetOption]] = MappingProxyType({})

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Scalar]:
        """``options`` checked against :attr:`options` and :meth:`check_combinations`."""
        return self.check_combinations(check_options(self.name, self.options, options))

    def check_combinations(self, options: dict[str, Scalar]) -> dict[str, Scalar]:
        """Refuse (``TargetOptionError``) or complete combinations of checked options.

        ``options`` passed the schema and have their defaults; return them (possibly
        with defaults that depend on other options filled in). The default accepts all.
        """
        return options

    def quantization_rules(self, options: Mapping[str, Any]) -> QuantRules:
        """The rules for ``options``, checked first (see :meth:`rules`)."""
        return self.rules(self.validate_options(options))

    @abc.abstractmethod
    def rules(self, options: Mapping[str, Scalar]) -> QuantRules:
        """How to quantize for this runtime, given checked options."""

    @abc.abstractmethod
    def export(
        self, graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> Path:
        """Write ``graph`` as a deployable model at ``path``; return the file written."""

    @abc.abstractmethod
    def load(self, path: str | os.PathLike[str]) -> Any:
        """A callable running the file :meth:`export` wrote: tensors in, list of tensors out."""
