"""Running a deployed model in OpenVINO on the CPU, for checks and timings."""

from __future__ import annotations

import collections
import os
from typing import Any

import numpy as np
import torch

from acekit_openvino.runtime import import_openvino

#: Op types of OpenVINO's executed graph that do a linear layer's multiply-accumulates.
LINEAR_OPS = frozenset(
    {"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"}
)
#: Other executed ops that compute (not only move) values: pooling and reductions.
COMPUTE_OPS = LINEAR_OPS | {"Pooling", "Reduce", "Eltwise"}


class OpenVINORunner:
    """An OpenVINO CPU model called like a module: torch tensors in, torch tensors out.

    ``threads`` sets ``INFERENCE_NUM_THREADS``, the hint is ``PERFORMANCE_HINT=LATENCY``;
    ``precision`` (``"f32"``, ``"bf16"``) sets ``INFERENCE_PRECISION_HINT`` when given:
    OpenVINO runs float models in bf16 by default on CPUs that have it.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int = 2, precision: str | None = None
    ) -> None:
        ov = import_openvino("run a model")
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = ov.Core().compile_model(os.fspath(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, *inputs: Any) -> list[torch.Tensor]:
        """Run the model on ``inputs`` (tensors or arrays); every output as a tensor."""
        feed = [
            value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            for value in inputs
        ]
        results = self.request.infer(feed)
        return [torch.from_numpy(np.array(results[output])) for output in self.compiled.outputs]

    def integer_op_count(self) -> int:
        """How many executed compute ops (linear, pooling, reductions) run on u8/i8."""
        return sum(
            1
            for layer_type, precision in self._executed()
            if layer_type in COMPUTE_OPS and precision in ("u8", "i8")
        )

    def _executed(self) -> list[tuple[str, str]]:
        """``(layer type, runtime precision)`` of every op OpenVINO executes, in order."""
        found = []
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            found.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str)))
        return found

    def executed_precisions(self) -> collections.Counter[tuple[str, str]]:
        """``(layer type, runtime precision)`` counts over every op OpenVINO executes."""
        return collections.Counter(self._executed())

    def linear_precisions(self) -> collections.Counter[tuple[str, str]]:
        """``(op type, runtime precision)`` of every linear op OpenVINO executes.

        An INT8 layer runs as ``("Convolution", "u8")`` (or ``i8``); one left in float
        as ``("Convolution", "f32")`` (or ``bf16``).
        """
        return collections.Counter(
            (layer_type, precision)
            for layer_type, precision in self._executed()
            if layer_type in LINEAR_OPS
        )
