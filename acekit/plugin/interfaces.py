"""What the kernel expects of the objects plugins register.

These are structural types (:class:`typing.Protocol`): a plugin's class needs no base
class, only the attributes and methods listed. The registry checks the attributes when
an object is registered, so a mistake is reported when the plugin loads rather than
halfway through a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from acekit.ir.graph import Graph
    from acekit.quant.options import Scalar, TargetOption
    from acekit.quant.rules import QuantRules


@runtime_checkable
class Parser(Protocol):
    """Turns a model into a :class:`~acekit.ir.Graph` (e.g. through torch.fx)."""

    @property
    def name(self) -> str:
        """The name users pick the parser by (``"fx"``)."""

    @property
    def summary(self) -> str:
        """One line for ``acekit plugins``."""

    def parse(self, model: Any, example_inputs: tuple[Any, ...]) -> Graph:
        """Parse ``model`` called with ``example_inputs`` into a new graph."""


@runtime_checkable
class Quantizer(Protocol):
    """A quantization algorithm (post-training calibration, quantization-aware training)."""

    @property
    def name(self) -> str:
        """The name settings and spec strings use (``"ptq"``)."""

    @property
    def summary(self) -> str:
        """One line for ``acekit plugins``."""


@runtime_checkable
class Target(Protocol):
    """A deployment runtime: its quantization rules, its options, how to write and run it.

    Everything the kernel asks of a target is here; :mod:`acekit.target` is the public
    surface for writing one (the shared QDQ ONNX lowering, example inputs, the option
    schema) and :mod:`acekit.testing` checks a target against this contract.
    """

    @property
    def name(self) -> str:
        """The name ``DeploymentSettings.target_framework`` accepts (``"onnxruntime"``)."""

    @property
    def title(self) -> str:
        """The name shown to people (``"ONNX Runtime (CPU)"``)."""

    @property
    def summary(self) -> str:
        """One line for ``acekit plugins``."""

    @property
    def options(self) -> Mapping[str, TargetOption]:
        """The options the target reads from ``deployment.target_options``, by name."""

    def validate_options(self, options: Mapping[str, Any]) -> Mapping[str, Scalar]:
        """``options`` checked (defaults filled in); raise ``TargetOptionError`` if wrong.

        Settings call it when they are built or loaded, so a bad option fails there.
        :func:`acekit.target.check_options` does it from :attr:`options`; a target adds
        checks that involve several options (a mode an opset cannot express).
        """

    def quantization_rules(self, options: Mapping[str, Any]) -> QuantRules:
        """How to quantize for this runtime (see :class:`acekit.quant.rules.QuantRules`)."""

    def export(
        self, graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> Path:
        """Write ``graph`` as a deployable model at ``path`` and return the file written.

        ``options`` are the target options of the deployment settings; the target
        defines which it reads. The file is written atomically and checked.
        """

    def load(self, path: str | os.PathLike[str]) -> Any:
        """A callable running the file :meth:`export` wrote: tensors in, list of tensors out.

        Used to measure latency and to compare the deployed model with ``qm(x)``.
        """
